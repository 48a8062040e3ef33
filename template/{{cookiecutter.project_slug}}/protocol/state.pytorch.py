"""Run protocol, rarely edited: what your training loop saves and restores, and calls.

The loop is yours (``trainers/<task>_trainer.py``); it calls this object at
two points and lets it save and restore everything else::

    saved = {"model": model, "optimizer": optimizer, "loader": train_loader}
    with TrainState(run, saved, main_metric="val_acc", mode="max") as state:  # resumes here
        while state.epoch < epochs:
            train_loader.set_epoch(state.epoch)
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

``state.step`` reads nothing from the GPU: the step's values wait on the device
and are read once every ``log_every_n_steps`` steps (and at each epoch's end),
one sync per logging period. A signal stops the loop at the next step; under
DDP, where every rank must stop at the same step, at the next logging period.

With gradient accumulation call ``state.step`` once per optimizer step, after
``optimizer.step()``: a checkpoint holds no gradients, so one taken between
optimizer steps would lose those accumulated so far. Called per micro-batch
instead, ``state.step`` notices (no registered optimizer stepped since its last
call, and gradients are waiting) and holds a stop until the next optimizer step.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from types import TracebackType
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from protocol.checkpoint import atomic_torch_save, check_world_size, get_rng_state, set_rng_state
from protocol.cluster import is_rank_zero
from protocol.errors import CheckpointUnusable, RunDiverged, RunInterrupted, RunPruned
from protocol.pruning import Trial
from protocol.rundir import Run
from protocol.steps import StepValues, gone_bad, non_finite
from protocol.tracking import Tracker


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
        steps_per_epoch: int | None = None,
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
        self.sums: dict[str, float] = {}  # this epoch's step values read so far, summed
        self.counts: dict[str, int] = {}  # and how many steps reported each
        self.steps_in_epoch = 0
        self.diverged: str | None = None  # where a value first stopped being finite
        self.latest: dict[str, float] = {}  # each value's newest reading, for logs and the bar
        self.steps_per_epoch = steps_per_epoch  # the progress bar's length, if known
        self.bar: tqdm | None = None
        self.show_progress = is_rank_zero() and sys.stderr.isatty()  # a terminal, not a log file
        self.tracker: Tracker | None = None
        self.last_saved = float("-inf")  # so the first epoch always leaves a last.pt
        self.unsaved_best: dict[str, Any] | None = None
        self.trial = Trial.from_environment()  # a trial of scripts/search.py: its pruner may stop it
        self.distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.world_size = torch.distributed.get_world_size() if self.distributed else 1
        modules = [item for item in saved.values() if isinstance(item, nn.Module)]
        parameters = [parameter for module in modules for parameter in module.parameters()]
        self.device = parameters[0].device if parameters else torch.device("cpu")
        self.pending = StepValues(self.device)  # the steps' values not read yet, on the device
        self.optimizers = [item for item in saved.values() if isinstance(item, torch.optim.Optimizer)]
        # optimizer steps, counted by a hook: how gradient accumulation is noticed. A counter of
        # its own, not a method of this object: the optimizers would keep the state (and the
        # loader's worker processes) alive after training otherwise
        self.optimizer_steps = StepCounter()
        self.hooks = [
            optimizer.register_step_post_hook(self.optimizer_steps) for optimizer in self.optimizers
        ]
        self.optimizer_steps_seen = 0  # at the previous state.step()
        self.accumulating = False  # gradients waited for an optimizer step at the last state.step()

    def __enter__(self) -> TrainState:
        if self.run.resuming:
            self.restore()
        if is_rank_zero():
            self.tracker = Tracker(self.run.logs, self.run.name, self.run.hparams, self.global_step)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._close_bar()
        for hook in self.hooks:
            hook.remove()
        if kind is None:
            self.save()  # the end of training: last.pt holds the final weights
        if self.tracker is not None:
            self.tracker.close()

    # ------------------------------------------------- calls from the loop -----

    def step(self, **values: torch.Tensor) -> None:
        """Count one optimisation step with its metrics (``loss=...``); stop or fail if asked to.

        No sync: the values are read once a logging period (see the module docstring).
        """
        self.global_step += 1
        self.steps_in_epoch += 1
        self.pending.add(self.global_step, values)
        if self.bar is None and self.show_progress:
            self.bar = tqdm(
                total=self.steps_per_epoch,
                initial=self.steps_in_epoch - 1,
                desc=f"epoch {self.epoch + 1}",
                unit="step",
                leave=False,
                dynamic_ncols=True,
            )
        if self.bar is not None:
            self.bar.update()
        period_ends = self.global_step % self.log_every_n_steps == 0
        # a checkpoint between optimizer steps would drop the gradients accumulated so far
        self.accumulating = self._accumulating()
        stop = self.run.stop_requested and not self.accumulating
        if not period_ends and (self.distributed or not stop):
            return  # under DDP, ranks agree on stopping only at the end of a logging period
        self._read()
        stop, diverged = self.agree(stop, self.diverged is not None)
        if diverged:
            raise RunDiverged(self.diverged or f"another rank diverged by step {self.global_step}")
        if period_ends and self.tracker is not None:
            self.tracker.log({f"train_{key}": value for key, value in self.latest.items()}, self.global_step)
        if stop:
            self.save_and_stop(f"at step {self.global_step} (epoch {self.epoch + 1})")

    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Close the epoch with its validation ``metrics``: progress, logs, checkpoints."""
        if self.accumulating:  # as the epoch's last state.step() found
            warnings.warn(
                "the epoch ended between optimizer steps (gradient accumulation, or a GradScaler "
                "skipping a step): its checkpoint leaves out the gradients accumulated since the "
                "last one (step the optimizer on the epoch's last batch)",
                stacklevel=2,
            )
        self._read()
        bad = gone_bad(metrics, self.main_metric)
        if bad and self.diverged is None:  # the weights went bad in the epoch's last steps
            self.diverged = f"{', '.join(bad)} in the validation after epoch {self.epoch + 1}"
        stop, diverged = self.agree(self.run.stop_requested, self.diverged is not None)
        if diverged:
            raise RunDiverged(self.diverged or f"another rank diverged in epoch {self.epoch + 1}")
        train = {f"train_{key}": total / max(self.counts[key], 1) for key, total in self.sums.items()}
        self.metrics = {**train, **metrics}
        self.epoch += 1
        self.sums, self.counts, self.steps_in_epoch = {}, {}, 0
        self._close_bar()
        pruned = self._pruned(self.metrics)  # the epoch's training and validation metrics
        if is_rank_zero():
            self._record_epoch()
        if pruned:
            self.save()
            raise RunPruned(f"after epoch {self.epoch}")
        if stop:
            self.save_and_stop(f"after epoch {self.epoch}")

    def final_metrics(self) -> dict[str, float]:
        best = self.best if self.best is not None else math.nan
        return {**self.metrics, f"best_{self.main_metric}": best}

    # ------------------------------------------------------------ protocol -----

    def _accumulating(self) -> bool:
        """Whether gradients wait for an optimizer step: no registered optimizer stepped since
        the previous state.step(), and some parameter holds a gradient."""
        stepped = self.optimizer_steps.count != self.optimizer_steps_seen
        self.optimizer_steps_seen = self.optimizer_steps.count
        if stepped or not self.optimizers:
            return False
        return any(
            parameter.grad is not None
            for optimizer in self.optimizers
            for group in optimizer.param_groups
            for parameter in group["params"]
        )

    def _read(self) -> None:
        """Read the pending steps' values (one sync): the epoch's sums, the bar, the first NaN."""
        for step, values in self.pending.read():
            for key, value in values.items():
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
            bad = non_finite(values)
            if bad and self.diverged is None:
                self.diverged = f"{', '.join(bad)} at step {step} (epoch {self.epoch + 1})"
            self.latest.update(values)
        if self.bar is not None and self.latest:
            self.bar.set_postfix({key: f"{value:.4g}" for key, value in self.latest.items()}, refresh=False)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

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

        Under torchrun one tiny all-reduce, once a logging period and at each epoch's end; alone, nothing.
        """
        if not self.distributed:
            return stop, diverged
        flags = torch.tensor([float(stop), float(diverged)], device=self.device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, diverged = bool(flags[0]), bool(flags[1])
        if stop and self.run.stop_signal is None:
            self.run.stop_signal = "SIGTERM"  # the signal reached another rank
        return stop, diverged

    def _pruned(self, metrics: dict[str, float]) -> bool:
        """Whether the search's pruner stops this trial: rank 0 asks, every rank hears the answer."""
        if self.trial is None:
            return False
        pruned = is_rank_zero() and self.trial.should_prune(self.epoch, metrics)
        if self.distributed:
            flag = torch.tensor([float(pruned)], device=self.device)
            torch.distributed.broadcast(flag, src=0)
            pruned = bool(flag[0])
        return pruned

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
            "sums": self.sums,  # every step so far read: the loop saves only right after a read
            "counts": self.counts,
            "steps_in_epoch": self.steps_in_epoch,
            "world_size": self.world_size,  # each rank's share of the data follows from it
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
        check_world_size(path, state.get("protocol", {}).get("world_size"), self.world_size)
        try:  # saved by another model or loop
            for name, item in self.saved.items():
                item.load_state_dict(state[name])
            set_rng_state(state["protocol"]["rng"])
            position = state["protocol"]
            self.epoch = int(position["epoch"])
            self.global_step = int(position["global_step"])
            self.best = position["best"]
            self.metrics = dict(position["metrics"])
            self.steps_in_epoch = int(position["steps_in_epoch"])
            self.sums = {key: float(total) for key, total in position["sums"].items()}
            # checkpoints of template 0.2 count no steps: each step reported every value then
            counts = position.get("counts", dict.fromkeys(self.sums, self.steps_in_epoch))
            self.counts = {key: int(count) for key, count in counts.items()}
        except Exception as error:
            shown = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            raise CheckpointUnusable(f"{path} does not fit ({type(error).__name__}: {shown})") from error
        if is_rank_zero():
            print(f"resumed from {path} at step {self.global_step} (epoch {self.epoch + 1})")


class StepCounter:
    """An optimizer step hook that counts the steps."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.count += 1
