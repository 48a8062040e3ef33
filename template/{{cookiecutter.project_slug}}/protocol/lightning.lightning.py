"""Run protocol, rarely edited: Lightning callbacks for signals, divergence, exact resume.

Lightning owns the loop; :class:`RunProtocol` watches it. On SIGINT, SIGTERM or
SIGUSR1 it saves ``last.ckpt`` at the next batch boundary and stops. A
checkpoint holds what Lightning saves (weights, optimizers, schedulers, loops,
the StatefulDataLoader's position) plus every RNG state, so a resumed run
continues mid-epoch exactly where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO

from protocol.cluster import install_stop_handlers
from protocol.launch import CheckpointUnusable, RunDiverged, RunInterrupted
from protocol.rundir import Run
from utils.utils import atomic_torch_save, get_rng_state, set_rng_state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill never leaves half a file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        atomic_torch_save(checkpoint, Path(path))


class RunProtocol(Callback):
    """Stops at a batch boundary on a signal, fails on a non-finite loss, records each epoch."""

    def __init__(self, run: Run, main_metric: str) -> None:
        self.run = run
        self.main_metric = main_metric
        self.restored_rng: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": get_rng_state()}  # taken when a checkpoint is written

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored_rng = state_dict.get("rng")

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Lightning puts its own SIGTERM handler in front of ours when fit starts; under DDP
        # it broadcasts from inside the handler and can hang. One mechanism, ours, is enough.
        install_stop_handlers(self.run.request_stop)
        if self.restored_rng is not None:
            set_rng_state(self.restored_rng)  # the RNGs as they were when the checkpoint was taken
            self.restored_rng = None
            where = f"step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
            print(f"resumed from {trainer.ckpt_path} at {where}")

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        named = {"loss": outputs} if isinstance(outputs, torch.Tensor) else dict(outputs or {})
        values = {key: value.detach() for key, value in named.items() if isinstance(value, torch.Tensor)}
        # a read per value and step (on a GPU, a sync): a diverged run fails at the step where it did
        finite = all(bool(value.isfinite().all()) for value in values.values())
        stop, diverged = self.run.stop_requested, not finite
        if trainer.world_size > 1:  # every rank stops at the same step, or none does
            flags = torch.tensor([float(stop), float(diverged)], device=module.device)
            flags = trainer.strategy.reduce(flags, reduce_op="max").cpu()
            stop, diverged = bool(flags[0]), bool(flags[1])
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
        if diverged:
            bad = {key: _shown(value) for key, value in values.items() if not value.isfinite().all()}
            shown = (
                ", ".join(f"{key} became {value}" for key, value in bad.items()) or "another rank diverged"
            )
            raise RunDiverged(f"{shown} at {where}")
        if stop:
            if self.run.stop_signal is None:
                self.run.stop_signal = "SIGTERM"  # the signal reached another rank
            trainer.save_checkpoint(self.run.checkpoints / "last.ckpt", weights_only=False)  # all ranks
            raise RunInterrupted(f"at {where}")

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = epoch_metrics(trainer)
            self.run.record_progress(
                trainer.current_epoch + 1, trainer.global_step, metrics, self.main_metric
            )


def check_resumable(path: Path, module: pl.LightningModule) -> None:
    """Raise :class:`CheckpointUnusable` unless ``path`` holds ``module``'s weights, shape for shape.

    Memory-mapped, so nothing is read but the checkpoint's index. Without it a
    truncated or foreign ``last.ckpt`` fails deep inside ``Trainer.fit``.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
        shapes = {key: tuple(tensor.shape) for key, tensor in saved.items()}
    except Exception as error:  # truncated, overwritten: never loaded unsafely instead
        raise CheckpointUnusable(f"{path} cannot be read ({type(error).__name__})") from error
    expected = {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}
    if not expected:
        return  # a model built in configure_model: Lightning checks it when it loads
    differing = sorted(key for key in expected.keys() | shapes.keys() if expected.get(key) != shapes.get(key))
    if differing:
        shown = ", ".join(differing[:3]) + (", ..." if len(differing) > 3 else "")
        raise CheckpointUnusable(f"{path} holds another model: {len(differing)} tensors differ ({shown})")


def epoch_to_train(trainer: pl.Trainer) -> int:
    """The epoch ``fit`` reads next, for ``make_loader(..., epoch=...)`` in ``train_dataloader``.

    Lightning creates a resumed run's train iterator before it calls the
    sampler's ``set_epoch``, and worker processes draw the epoch's order at once;
    this is the number Lightning will pass then, right for a run resumed
    mid-epoch and for one resumed at an epoch's end.
    """
    return trainer.fit_loop.epoch_progress.current.processed


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The epoch-level metrics, without the ``*_step``/``*_epoch`` copies Lightning keeps too."""
    return {
        key: float(value)
        for key, value in trainer.callback_metrics.items()
        if not key.endswith(("_step", "_epoch"))
    }


def _shown(value: torch.Tensor) -> str:
    return str(value.item()) if value.numel() == 1 else "non-finite"
