"""Small helpers every experiment shares: seeding, atomic writes, JSON files.

Nothing here knows about a training framework, so trainers, evaluation and the
scripts that launch runs in bulk can all use it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed an epoch starts from.

    Reseeding at each epoch start makes the randomness of an epoch (dropout,
    augmentation) a function of (seed, epoch) alone, so a run restarted at an
    epoch boundary replays exactly what an uninterrupted run would have done.
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader workers.

    torch seeds each worker differently, but not NumPy or ``random``: without
    this, every worker would draw the same "random" augmentations.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never a mix.

    A kill at any instant (SIGKILL, node crash) leaves the previous version
    readable: the data goes to a temporary file beside the target, is flushed
    to disk, and then replaces the target in one rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; some file systems refuse, which is harmless here."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: Path) -> Any:
    """Read a JSON file, or ``None`` if it is missing or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_experiment_script(task: str, name: str) -> ModuleType:
    """Import ``experiments/<task>/<name>.py`` as a module.

    Experiment scripts are run by path rather than as a package, so sweeps and
    tests that need their parsers and ``main`` load them the same way.
    """
    path = PROJECT_ROOT / "experiments" / task / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"no task {task!r}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"{task}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` with the guarantees of :func:`atomic_write_bytes`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
