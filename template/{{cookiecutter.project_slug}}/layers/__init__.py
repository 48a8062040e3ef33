"""Reusable building blocks for models."""

from layers.residual import ResidualBlock, ResidualMLP

__all__ = ["ResidualBlock", "ResidualMLP"]
