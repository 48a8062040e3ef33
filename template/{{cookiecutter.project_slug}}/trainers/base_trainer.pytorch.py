"""What every plain-PyTorch task shares: devices, mixed precision, DDP, evaluation.

Each task's own loop (``trainers/<task>_trainer.py``) calls these; none of
them owns the loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from protocol.cluster import COLLECTIVE_TIMEOUT, srun_layout

MetricsFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]
AUTOCAST_DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@contextlib.contextmanager
def distributed(device_name: str = "auto") -> Iterator[None]:
    """Started by torchrun or as the tasks of an ``srun`` step, join the process group; else nothing.

    NCCL when the processes train on GPUs (each on its own: LOCAL_RANK), gloo on
    CPUs. Leaving the group before exit matters: gloo's threads abort a process
    that exits without.
    """
    srun_layout()  # srun's tasks get RANK, WORLD_SIZE, LOCAL_RANK and a master as torchrun's do
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        device = select_device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # collectives and pinned memory on this rank's GPU, not GPU 0
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside torchrun)."""
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def device_problem(name: str) -> str | None:
    """Why ``--device name`` cannot be used on this machine, if it cannot."""
    kind, _, index = name.partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        return f"--device {name}: no CUDA GPU is available here (use auto or cpu)"
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        return f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPUs"
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"--device {name}: MPS is not available here (use auto or cpu)"
    return None


def select_device(name: str) -> torch.device:
    """``auto``: this process's GPU under torchrun, else the first GPU, else MPS, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def wrap(model: nn.Module, device: torch.device, compile: bool = False) -> nn.Module:
    """The module to call in the loop: compiled if asked, in DistributedDataParallel under torchrun.

    Checkpoints keep holding ``model`` itself (compiled in place, its parameter
    names unchanged).
    """
    if compile:
        model.compile()
    if torch.distributed.is_initialized():
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for ``bf16-mixed``/``16-mixed``; nothing (and no cost) for ``32-true``."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensors, or tuples, lists and dicts of them) to ``device``."""
    if device.type == "cpu":
        return batch  # DataLoader batches already live there
    non_blocking = device.type == "cuda"  # overlaps the copy with compute, from pinned memory
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    metrics_fn: MetricsFn,
    device: torch.device,
    precision: str = "32-true",
    prefix: str = "val",
) -> dict[str, float]:
    """Sample-weighted means of ``metrics_fn(model, batch)[1]`` over ``loader``, over all ranks."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, precision):
            _, metrics = metrics_fn(model, batch)
        size = len(batch[0])
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float() * size
        count += size
    keys = sorted(sums)
    totals = torch.stack([sums[key] for key in keys] + [count])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    model.train(was_training)
    return {f"{prefix}_{key}": (totals[i] / totals[-1]).item() for i, key in enumerate(keys)}
