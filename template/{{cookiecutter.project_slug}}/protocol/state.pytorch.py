"""Run protocol, rarely edited: what your training loop saves and restores, and calls.

The loop is yours (``trainers/<task>_trainer.py``); it calls this object at
two points and lets it save and restore everything else::

    saved = {"model": model, "optimizer": optimizer, "loader": train_loader}
    with TrainState(run, saved, main_metric="val_acc", mode="max") as state:  # resumes here
        while state.epoch < epochs:
            train_loader.sampler.set_epoch(state.epoch)
            for batch in train_loader:
                ...  # forward, backward, optimizer step: your code
                state.step(loss=loss)  # a signal: checkpoint and stop; a NaN: fail
            state.end_epoch(validation_metrics)  # progress, logs, best and last checkpoints
        return state.final_metrics()

``saved`` takes anything with ``state_dict``/``load_state_dict``: models,
optimizers, LR schedulers, gradient scalers, EMA weights, the StatefulDataLoader.
``last.pt`` holds all of them with every RNG state and the loop's position, so a
resumed run ends with the same weights as one never stopped. Register the model
itself, not its DistributedDataParallel or compiled wrapper.
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any

import torch
from torch import nn

from protocol.cluster import is_rank_zero
from protocol.launch import CheckpointUnusable, RunDiverged, RunInterrupted
from protocol.rundir import Run
from utils.tracking import Tracker
from utils.utils import atomic_torch_save, get_rng_state, set_rng_state


class TrainState:
    """The loop's position and the run's checkpoints; see the module docstring."""

    def __init__(
        self,
        run: Run,
        saved: dict[str, Any],
        *,
        main_metric: str,
        mode: str = "min",
        log_every_n_steps: int = 50,
        checkpoint_interval: float = 60.0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self.run = run
        self.saved = saved
        self.main_metric = main_metric
        self.mode = mode
        self.log_every_n_steps = log_every_n_steps
        self.checkpoint_interval = checkpoint_interval  # seconds between end-of-epoch saves of last.pt
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best: float | None = None
        self.metrics: dict[str, float] = {}  # of the last completed epoch
        self.sums: dict[str, torch.Tensor] = {}  # this epoch's step values, summed on their device
        self.steps_in_epoch = 0
        self.tracker: Tracker | None = None
        self.last_saved = float("-inf")  # so the first epoch always leaves a last.pt
        self.unsaved_best: dict[str, Any] | None = None
        self.distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        modules = [item for item in saved.values() if isinstance(item, nn.Module)]
        parameters = [parameter for module in modules for parameter in module.parameters()]
        self.device = parameters[0].device if parameters else torch.device("cpu")

    def __enter__(self) -> TrainState:
        if self.run.resuming:
            self.restore()
        if is_rank_zero():
            self.tracker = Tracker(self.run.logs, self.run.name, self.run.hparams, self.global_step)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.save()  # the end of training: last.pt holds the final weights
        if self.tracker is not None:
            self.tracker.close()

    # ------------------------------------------------- calls from the loop -----

    def step(self, **values: torch.Tensor) -> None:
        """Count one optimisation step with its metrics (``loss=...``); stop or fail if asked to.

        Every value is checked to be finite with one read per step (on a GPU, one
        sync): a diverged run fails at the step where it diverged.
        """
        self.global_step += 1
        self.steps_in_epoch += 1
        detached = {key: value.detach().float().to(self.device) for key, value in values.items()}
        for key, value in detached.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        finite = bool(torch.stack(list(detached.values())).isfinite().all()) if detached else True
        stop, diverged = self.agree(self.run.stop_requested, not finite)
        if diverged:
            bad = {key: _shown(value) for key, value in detached.items() if not value.isfinite().all()}
            shown = (
                ", ".join(f"{key} became {value}" for key, value in bad.items()) or "another rank diverged"
            )
            raise RunDiverged(f"{shown} at step {self.global_step} (epoch {self.epoch + 1})")
        if self.tracker is not None and self.global_step % self.log_every_n_steps == 0:
            self.tracker.log(
                {f"train_{key}": value.item() for key, value in detached.items()}, self.global_step
            )
        if stop:
            self.save_and_stop(f"at step {self.global_step} (epoch {self.epoch + 1})")

    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Close the epoch with its validation ``metrics``: progress, logs, checkpoints."""
        count = max(self.steps_in_epoch, 1)
        train = {f"train_{key}": (total / count).item() for key, total in self.sums.items()}
        self.metrics = {**train, **metrics}
        self.epoch += 1
        self.sums, self.steps_in_epoch = {}, 0
        if is_rank_zero():
            self._record_epoch()
        if self.agree(self.run.stop_requested, False)[0]:
            self.save_and_stop(f"after epoch {self.epoch}")

    def final_metrics(self) -> dict[str, float]:
        best = self.best if self.best is not None else math.nan
        return {**self.metrics, f"best_{self.main_metric}": best}

    # ------------------------------------------------------------ protocol -----

    def _record_epoch(self) -> None:
        if self.main_metric not in self.metrics:
            raise KeyError(
                f"main_metric {self.main_metric!r} is not among the epoch's metrics {sorted(self.metrics)}"
            )
        score = self.metrics[self.main_metric]
        if self.best is None or (score > self.best if self.mode == "max" else score < self.best):
            self.best = score
            weights = {
                name: {
                    key: tensor.detach().to("cpu", copy=True) for key, tensor in module.state_dict().items()
                }
                for name, module in self.saved.items()
                if isinstance(module, nn.Module)
            }
            self.unsaved_best = {**weights, "epoch": self.epoch, self.main_metric: score}
        if time.monotonic() - self.last_saved >= self.checkpoint_interval:
            self.save()
        if self.tracker is not None:
            self.tracker.log(self.metrics, self.global_step)
        self.run.record_progress(self.epoch, self.global_step, self.metrics, self.main_metric)
        shown = "  ".join(f"{key} {value:.4f}" for key, value in sorted(self.metrics.items()))
        print(f"epoch {self.epoch}  step {self.global_step}  {shown}")

    def agree(self, stop: bool, diverged: bool) -> tuple[bool, bool]:
        """Whether any rank was asked to stop, or saw a non-finite value: all ranks act together.

        Under torchrun this costs one tiny all-reduce per step; alone, nothing.
        """
        if not self.distributed:
            return stop, diverged
        flags = torch.tensor([float(stop), float(diverged)], device=self.device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, diverged = bool(flags[0]), bool(flags[1])
        if stop and self.run.stop_signal is None:
            self.run.stop_signal = "SIGTERM"  # the signal reached another rank
        return stop, diverged

    def save_and_stop(self, where: str) -> None:
        self.save()
        if self.distributed:
            torch.distributed.barrier()  # no rank leaves (and ends the job) before rank 0 has saved
        raise RunInterrupted(where)

    def save(self) -> None:
        """``last.pt`` (everything needed to continue bit for bit) and any new ``best.pt``; rank 0 only.

        Both are written at the same moment, so they agree about which epoch was
        best whatever kills the run.
        """
        if not is_rank_zero():
            return
        if self.unsaved_best is not None:
            atomic_torch_save(self.unsaved_best, self.run.checkpoints / "best.pt")
            self.unsaved_best = None
        state = {name: item.state_dict() for name, item in self.saved.items()}
        state["protocol"] = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best": self.best,
            "metrics": self.metrics,
            "sums": self.sums,
            "steps_in_epoch": self.steps_in_epoch,
            "rng": get_rng_state(),
        }
        atomic_torch_save(state, self.run.checkpoints / "last.pt")
        self.last_saved = time.monotonic()

    def restore(self) -> None:
        """Load ``last.pt`` into everything registered, then every RNG: the loop continues from there."""
        path = self.run.checkpoints / "last.pt"
        if not path.exists():
            return  # stopped before its first checkpoint: start from scratch
        try:  # truncated or overwritten: say so in one line (and never load it unsafely)
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointUnusable(f"{path} cannot be read ({type(error).__name__})") from error
        try:  # saved by another model or loop
            for name, item in self.saved.items():
                item.load_state_dict(state[name])
            set_rng_state(state["protocol"]["rng"])
            position = state["protocol"]
            self.epoch = int(position["epoch"])
            self.global_step = int(position["global_step"])
            self.best = position["best"]
            self.metrics = dict(position["metrics"])
            self.sums = {key: total.to(self.device) for key, total in position["sums"].items()}
            self.steps_in_epoch = int(position["steps_in_epoch"])
        except Exception as error:
            shown = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            raise CheckpointUnusable(f"{path} does not fit ({type(error).__name__}: {shown})") from error
        print(f"resumed from {path} at step {self.global_step} (epoch {self.epoch + 1})")


def _shown(value: torch.Tensor) -> str:
    return str(value.item()) if value.numel() == 1 else "non-finite"
