"""A pre-norm residual MLP: the example model's building block."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + MLP(LayerNorm(x))``: the identity path keeps deep stacks trainable."""

    def __init__(self, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class ResidualMLP(nn.Module):
    """Input projection, ``depth`` residual blocks, then a linear head."""

    def __init__(
        self, in_features: int, hidden_size: int, out_features: int, depth: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.project = nn.Linear(in_features, hidden_size)
        self.blocks = nn.Sequential(*(ResidualBlock(hidden_size, dropout) for _ in range(depth)))
        self.head = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.project(x)))
