"""Shared test helpers: the project root on sys.path, experiment scripts as modules."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from protocol.files import load_experiment_script  # noqa: E402  (needs the root on sys.path)


@pytest.fixture(scope="session")
def load_script() -> Callable[[str, str], ModuleType]:
    return load_experiment_script
