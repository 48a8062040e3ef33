"""Shared test helpers: the project root on sys.path, experiment scripts as modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))


def _load_script(task: str, name: str) -> ModuleType:
    """Import ``experiments/<task>/<name>.py``; scripts are not a package, so load them by path."""
    path = PROJECT_ROOT / "experiments" / task / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{task}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script() -> Callable[[str, str], ModuleType]:
    return _load_script
