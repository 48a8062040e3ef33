"""Run protocol, rarely edited: Lightning callbacks for signals, divergence, exact resume.

Lightning owns the loop; :class:`RunProtocol` watches it. On SIGINT, SIGTERM or
SIGUSR1 it saves ``last.ckpt`` at the next batch boundary and stops: under DDP
at the end of the logging period or of the epoch, so that every rank stops at
the same step; with ``accumulate_grad_batches``, at an optimizer step, since a
checkpoint holds no gradients. A checkpoint holds what Lightning saves
(weights, optimizers, schedulers, loops, the StatefulDataLoader's position)
plus every RNG state, so a resumed run continues mid-epoch exactly where it
stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO

from protocol.checkpoint import atomic_torch_save, check_world_size, get_rng_state, set_rng_state
from protocol.cluster import install_stop_handlers
from protocol.errors import CheckpointUnusable, RunDiverged, RunInterrupted, RunPruned
from protocol.pruning import Trial
from protocol.rundir import Run
from protocol.steps import StepValues, gone_bad, non_finite


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
        self.restored_world_size: Any = None
        self.world_size = 1
        self.pending = StepValues()  # each step's outputs, on the device until a logging period ends
        self.batches = 0  # trained by this process, counting from its start: the same on every rank
        self.trial = Trial.from_environment()  # a trial of scripts/search.py: its pruner may stop it
        self.stop_after_epoch = False  # a stop agreed on at the epoch's last batch

    def state_dict(self) -> dict[str, Any]:
        # taken when a checkpoint is written; each rank's share of the data follows from the world size
        return {"rng": get_rng_state(), "world_size": self.world_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored_rng = state_dict.get("rng")
        self.restored_world_size = state_dict.get("world_size")

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        self.world_size = trainer.world_size

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Lightning puts its own SIGTERM handler in front of ours when fit starts; under DDP
        # it broadcasts from inside the handler and can hang. One mechanism, ours, is enough.
        install_stop_handlers(self.run.request_stop)
        check_world_size(trainer.ckpt_path, self.restored_world_size, trainer.world_size)
        if self.restored_rng is not None:
            set_rng_state(self.restored_rng)  # the RNGs as they were when the checkpoint was taken
            self.restored_rng = None
            where = f"step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
            print(f"resumed from {trainer.ckpt_path} at {where}")

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Lightning gives the epoch to a loader's sampler only, and a ShardStream has none:
        # tell each train loader itself, before this epoch's iterator starts its workers
        for loader in flatten(trainer.train_dataloader):
            set_epoch = getattr(loader, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(trainer.current_epoch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        named = {"loss": outputs} if isinstance(outputs, torch.Tensor) else dict(outputs or {})
        # the step's scalars (its losses); None (a skipped batch) and predictions are not checked
        values = {key: value for key, value in named.items() if torch.is_tensor(value) and value.numel() == 1}
        self.pending.add(trainer.global_step, values)
        # no sync per step: read the values once a logging period and at the epoch's last batch;
        # under DDP, where every rank must stop at the same step, agree on stopping only then too
        self.batches += 1
        last_batch = batch_idx + 1 == trainer.num_training_batches
        period_ends = self.batches % trainer.log_every_n_steps == 0 or last_batch
        # between two optimizer steps, a checkpoint would lose the gradients accumulated so far
        optimizer_stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or last_batch
        stop = self.run.stop_requested and optimizer_stepped
        if not period_ends and (trainer.world_size > 1 or not stop):
            return
        stop = self.check(trainer, module, stop)
        if stop:
            if self.run.stop_signal is None:
                self.run.stop_signal = "SIGTERM"  # the signal reached another rank
            if last_batch:  # a checkpoint now would resume past the epoch's validation: after it
                self.stop_after_epoch = True
                return
            where = f"step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
            trainer.save_checkpoint(self.run.checkpoints / "last.ckpt", weights_only=False)  # all ranks
            raise RunInterrupted(f"at {where}")

    def check(
        self, trainer: pl.Trainer, module: pl.LightningModule, stop: bool, validation: str | None = None
    ) -> bool:
        """Read the pending steps' values (one sync): fail if one is not finite, on every rank.

        ``validation`` says what went bad in the epoch's validation, if anything did.
        Returns whether any rank was asked to stop.
        """
        diverged = None
        for step, values in self.pending.read():
            bad = non_finite(values)
            if bad and diverged is None:
                diverged = f"{', '.join(bad)} at step {step} (epoch {trainer.current_epoch + 1})"
        diverged = diverged or validation
        if trainer.world_size > 1:  # every rank acts at the same step, or none does
            flags = torch.tensor([float(stop), float(diverged is not None)], device=module.device)
            stop, any_diverged = (
                bool(flag) for flag in trainer.strategy.reduce(flags, reduce_op="max").tolist()
            )
            if any_diverged and diverged is None:
                diverged = f"another rank diverged by step {trainer.global_step}"
        if diverged:
            raise RunDiverged(diverged)
        return stop

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # before this epoch's checkpoints are written: they would keep weights gone bad
        metrics = epoch_metrics(trainer)
        bad = gone_bad(metrics, self.main_metric)
        where = f"after epoch {trainer.current_epoch + 1}"
        self.check(trainer, module, False, f"{', '.join(bad)} {where}" if bad else None)
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero:
            self.run.record_progress(epoch, trainer.global_step, metrics, self.main_metric)
        if self.trial is not None:  # rank 0 asks the search's pruner; every rank hears the answer
            pruned = trainer.is_global_zero and self.trial.should_prune(epoch, metrics)
            if trainer.strategy.broadcast(pruned, src=0):
                trainer.save_checkpoint(self.run.checkpoints / "last.ckpt", weights_only=False)
                raise RunPruned(f"after epoch {epoch}")
        if self.stop_after_epoch:
            trainer.save_checkpoint(self.run.checkpoints / "last.ckpt", weights_only=False)  # all ranks
            raise RunInterrupted(f"after epoch {epoch}")


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


def flatten(loaders: Any) -> list[Any]:
    """The loaders in what ``train_dataloader()`` returned: one, or a list or dict of them."""
    if isinstance(loaders, Mapping):
        return [loader for value in loaders.values() for loader in flatten(value)]
    if isinstance(loaders, (list, tuple)):
        return [loader for value in loaders for loader in flatten(value)]
    return [loaders]


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The epoch-level metrics, without the ``*_step``/``*_epoch`` copies Lightning keeps too."""
    return {
        key: float(value)
        for key, value in trainer.callback_metrics.items()
        if not key.endswith(("_step", "_epoch"))
    }
