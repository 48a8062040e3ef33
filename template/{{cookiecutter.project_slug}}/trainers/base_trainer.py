{% if cookiecutter.framework == 'lightning' -%}
"""What every Lightning task shares: the module base class and the Trainer set-up.

A task subclasses :class:`BaseModule` and supplies its model, data and loss
(see ``trainers/<task>_trainer.py``). :func:`fit` wires the run protocol into
Lightning: atomic checkpoints, resume from ``last.ckpt``, a clean stop on
SIGINT, SIGTERM or SIGUSR1, and ``failed.out`` when the loss diverges.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from utils.dataset import TensorBatchDataset, make_loader
from utils.run import Run, RunDiverged, RunInterrupted, install_stop_handlers
from utils.tracking import make_logger
from utils.utils import atomic_torch_save, epoch_seed, seed_everything

Batch = Any


def add_trainer_arguments(parser: argparse.ArgumentParser) -> None:
    """Options passed to ``pl.Trainer``: where and how to run, not what to learn."""
    group = parser.add_argument_group("trainer (does not change the run's name)")
    group.add_argument("--accelerator", default="auto", help="cpu, gpu, mps or auto (default: auto)")
    group.add_argument("--devices", default="auto", help="number of devices, a list, or auto")
    group.add_argument("--strategy", default="auto", help="auto, ddp, fsdp, ... (default: auto)")
    group.add_argument("--num_nodes", type=int, default=1, help="machines taking part")
    group.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed, ...")
    group.add_argument("--compile", action="store_true", help="torch.compile the task's model (slow start)")
    group.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    group.add_argument("--log_every_n_steps", type=int, default=50, help="training-metric logging period")


class BaseModule(pl.LightningModule):
    """Training, validation and test steps built on the task's :meth:`step`."""

    #: the validation metric that picks the best checkpoint, and whether higher is better
    main_metric = "val_loss"
    main_mode = "min"

    def build_datasets(self) -> dict[str, TensorBatchDataset]:
        """``train``, ``val`` and ``test`` datasets."""
        raise NotImplementedError

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise, and the metrics to report (without prefix)."""
        raise NotImplementedError

    def loader(self, split: str, shuffle: bool, num_workers: int = 0) -> DataLoader:
        if not hasattr(self, "datasets"):
            self.datasets = self.build_datasets()
        return make_loader(
            self.datasets[split], self.hparams.batch_size, shuffle, self.hparams.seed, num_workers
        )

    def on_train_epoch_start(self) -> None:
        # each epoch's randomness depends on (seed, epoch) alone: resuming at an epoch boundary is exact
        seed_everything(epoch_seed(self.hparams.seed, self.current_epoch))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, metrics = self.step(batch)
        if not torch.isfinite(loss):
            raise RunDiverged(
                f"loss became {loss.item()} at step {self.global_step + 1} (epoch {self.current_epoch + 1})"
            )
        train_metrics = {f"train_{key}": value for key, value in metrics.items()}
        # epoch means over every rank under DDP (one small all-reduce a step), local ones otherwise
        self.log_dict(train_metrics, on_epoch=True, sync_dist=self.trainer.world_size > 1)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        _, metrics = self.step(batch)
        self.log_dict({f"val_{key}": value for key, value in metrics.items()}, sync_dist=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        _, metrics = self.step(batch)
        self.log_dict({f"test_{key}": value for key, value in metrics.items()}, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill never leaves half a file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        atomic_torch_save(checkpoint, Path(path))


class RunProtocol(Callback):
    """Records progress after each epoch and stops at a batch boundary when a signal arrives.

    An interrupted run resumes from ``last.ckpt``, saved at the end of the last
    completed epoch, and replays the partial epoch exactly (see ``on_train_epoch_start``).
    """

    def __init__(self, run: Run) -> None:
        self.run = run

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Lightning puts its own SIGTERM handler in front of ours when fit starts; under DDP
        # it broadcasts from inside the handler and can hang. One mechanism, ours, is enough.
        install_stop_handlers(self.run)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        # No collective here (one could meet a rank already gone): ranks stopping at different
        # steps lose only work that the epoch-boundary resume redoes, and a rank the signal
        # did not reach ends when rank 0 leaves the process group.
        if self.run.stop_requested:
            raise RunInterrupted(
                f"during epoch {trainer.current_epoch + 1}, which restarts from its beginning"
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = epoch_metrics(trainer)
            self.run.record_progress(
                trainer.current_epoch + 1, trainer.global_step, metrics, module.main_metric
            )


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The epoch-level metrics, without the ``*_step``/``*_epoch`` copies Lightning keeps too."""
    return {
        key: float(value)
        for key, value in trainer.callback_metrics.items()
        if not key.endswith(("_step", "_epoch"))
    }


def fit(module: BaseModule, run: Run) -> dict[str, float]:
    """Train ``module`` under the run protocol; return the final metrics."""
    args = run.args
    best = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="best",
        monitor=module.main_metric,
        mode=module.main_mode,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    # a second callback rather than save_last, which only saves when `best` does
    last = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    trainer = pl.Trainer(
        max_epochs=run.hparams["epochs"],
        accelerator=args.accelerator,
        devices=_parse_devices(args.devices),
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
        logger=make_logger(run.logs, run.name),
        callbacks=[RunProtocol(run), best, last],
        plugins=_plugins(),
        default_root_dir=run.dir,
        log_every_n_steps=args.log_every_n_steps,
        use_distributed_sampler=False,  # EpochBatchSampler shards by rank itself
    )
    if args.compile:
        module.model.compile()  # in place: checkpoints keep their usual parameter names
    last_path = run.checkpoints / "last.ckpt"
    trainer.fit(
        module,
        train_dataloaders=module.loader("train", shuffle=True, num_workers=args.num_workers),
        val_dataloaders=module.loader("val", shuffle=False, num_workers=args.num_workers),
        ckpt_path=last_path if run.resuming and last_path.exists() else None,
    )
    metrics = epoch_metrics(trainer)
    if best.best_model_score is not None:
        metrics[f"best_{module.main_metric}"] = float(best.best_model_score)
    return metrics


def _parse_devices(devices: str) -> int | str:
    return int(devices) if devices.isdigit() else devices


def _plugins() -> list[Any]:
    """Atomic checkpoints; under SLURM, leave signals and requeueing to ``utils.run``."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins
{%- else -%}
"""The training loop every plain-PyTorch task shares.

A task subclasses :class:`BaseTrainer` and supplies what is its own: the
model, the data and the loss (see ``trainers/<task>_trainer.py``). The loop
here owns everything else: device placement, optimisation, validation,
logging, atomic checkpoints, exact resume, and stopping cleanly on a signal.

It also runs under ``torchrun`` (DistributedDataParallel; NCCL on GPUs, gloo
on CPU): every rank trains its shard, rank 0 alone writes checkpoints, logs
and flags.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.dataset import TensorBatchDataset, make_loader
from utils.run import Run, RunDiverged, RunInterrupted, is_rank_zero
from utils.tracking import Tracker
from utils.utils import atomic_torch_save, epoch_seed, get_rng_state, seed_everything, set_rng_state

Batch = Any


def add_trainer_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the loop itself: where and how to run, not what to learn."""
    group = parser.add_argument_group("trainer (does not change the run's name)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    group.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    group.add_argument(
        "--precision",
        choices=sorted(AUTOCAST_DTYPES),
        default="32-true",
        help="mixed precision: bf16-mixed on recent GPUs and CPUs, 16-mixed on older GPUs",
    )
    group.add_argument("--compile", action="store_true", help="torch.compile the model (slow start)")
    group.add_argument("--log_every_n_steps", type=int, default=50, help="training-metric logging period")
    group.add_argument(
        "--checkpoint_interval",
        type=float,
        default=60.0,
        help="seconds between end-of-epoch saves of last.pt (0: every epoch); a signal and "
        "the end of training always save (default: %(default)s)",
    )


AUTOCAST_DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def init_distributed() -> None:
    """Join the process group when started by ``torchrun`` (it sets WORLD_SIZE)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)


def close_distributed() -> None:
    """Leave the process group before exit: gloo's threads abort a process that exits without it."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def select_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class BaseTrainer:
    """Owns the loop; subclasses fill in :meth:`build_model`, :meth:`build_datasets`, :meth:`step`."""

    #: the validation metric that picks the best checkpoint, and whether higher is better
    main_metric = "val_loss"
    main_mode = "min"

    def __init__(self, run: Run) -> None:
        self.run = run
        self.hp = argparse.Namespace(**run.hparams)
        self.device = select_device(run.args.device)
        self.distributed = torch.distributed.is_initialized()
        seed_everything(run.seed)  # the same initial weights for the same seed
        self.model = self.build_model().to(self.device)
        if run.args.compile:
            self.model.compile()  # in place: checkpoints keep their usual parameter names
        self.autocast_dtype = AUTOCAST_DTYPES[run.args.precision]
        # float16 needs its gradients scaled against underflow; otherwise the scaler does nothing
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=run.args.precision == "16-mixed")
        if self.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.datasets = self.build_datasets()
        self.train_loader = self.loader("train", shuffle=True)
        self.val_loader = self.loader("val", shuffle=False)
        self.optimizer = self.configure_optimizer()
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches of the current epoch completed
        self.global_step = 0
        self.best: float | None = None
        self.last_saved = float("-inf")  # time.monotonic() of the last save of last.pt
        self.unsaved_best: dict[str, Any] | None = None  # written together with last.pt
        self.train_sums: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------- task hooks -----

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_datasets(self) -> dict[str, TensorBatchDataset]:
        """``train``, ``val`` and ``test`` datasets."""
        raise NotImplementedError

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise, and the metrics to report (without prefix)."""
        raise NotImplementedError

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.model.parameters(), lr=self.hp.learning_rate, weight_decay=self.hp.weight_decay
        )

    # ------------------------------------------------------------- loop -----

    @property
    def position(self) -> str:
        return f"step {self.global_step} (epoch {self.epoch + 1}, batch {self.batch_in_epoch})"

    @property
    def raw_model(self) -> nn.Module:
        """The model without its DistributedDataParallel wrapper: what checkpoints hold."""
        return self.model.module if self.distributed else self.model

    def loader(self, split: str, shuffle: bool) -> DataLoader:
        return make_loader(
            self.datasets[split], self.hp.batch_size, shuffle, self.run.seed, self.run.args.num_workers
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()  # cheaper than a disabled autocast, once a step
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch  # DataLoader batches already live there
        non_blocking = self.device.type == "cuda"  # overlaps the copy with compute, from pinned memory
        return tuple(tensor.to(self.device, non_blocking=non_blocking) for tensor in batch)

    def fit(self) -> dict[str, float]:
        """Train for ``epochs`` epochs (resuming if the run has a checkpoint); return final metrics."""
        if self.run.resuming:
            self.load_checkpoint()
        tracker = None
        if is_rank_zero():
            tracker = Tracker(self.run.logs, self.run.name, self.run.hparams, self.global_step)
        metrics: dict[str, float] = {}
        try:
            while self.epoch < self.hp.epochs:
                train_metrics = self.train_epoch(tracker)
                metrics = {**train_metrics, **self.evaluate(self.val_loader, "val")}
                self.epoch += 1
                self.batch_in_epoch = 0
                self.end_epoch(metrics, tracker)
                if self.agree(self.run.stop_requested, False)[0]:
                    raise RunInterrupted(f"after epoch {self.epoch}")
        finally:
            if tracker is not None:
                tracker.close()
        return {**metrics, f"best_{self.main_metric}": self.best if self.best is not None else float("nan")}

    def train_epoch(self, tracker: Tracker | None) -> dict[str, float]:
        if self.batch_in_epoch == 0:
            seed_everything(epoch_seed(self.run.seed, self.epoch))
            self.train_sums = {}
        self.train_loader.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        self.model.train()
        for batch in self.train_loader:
            with self.autocast():
                loss, batch_metrics = self.step(self.to_device(batch))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            loss_value = loss.item()  # every step (on a GPU, a sync): the step is exact, no NaN is applied
            stop, diverged = self.agree(self.run.stop_requested, not math.isfinite(loss_value))
            if diverged:
                where = f"step {self.global_step + 1} (epoch {self.epoch + 1})"
                raise RunDiverged(f"loss became {loss_value} at {where}")
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.global_step += 1
            self.batch_in_epoch += 1
            for key, value in batch_metrics.items():  # summed as tensors, read once an epoch
                self.train_sums[key] = self.train_sums.get(key, 0.0) + value.detach()
            if tracker is not None and self.global_step % self.run.args.log_every_n_steps == 0:
                tracker.log({f"train_{k}": v.item() for k, v in batch_metrics.items()}, self.global_step)
            if stop:
                self.save_checkpoint()
                raise RunInterrupted(f"at {self.position}")
        return {f"train_{key}": (sum_ / self.batch_in_epoch).item() for key, sum_ in self.train_sums.items()}

    @torch.no_grad()
    def evaluate(self, loader: DataLoader, prefix: str) -> dict[str, float]:
        """Sample-weighted means of the step metrics over ``loader`` (over all ranks)."""
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=self.device)
        for batch in loader:
            batch = self.to_device(batch)
            with self.autocast():
                _, batch_metrics = self.step(batch)
            size = len(batch[0])
            for key, value in batch_metrics.items():
                sums[key] = sums.get(key, 0.0) + value.detach() * size
            count += size
        keys = sorted(sums)
        totals = torch.stack([sums[key] for key in keys] + [count])
        if self.distributed:
            torch.distributed.all_reduce(totals)
        return {f"{prefix}_{key}": (totals[i] / totals[-1]).item() for i, key in enumerate(keys)}

    def end_epoch(self, metrics: dict[str, float], tracker: Tracker | None) -> None:
        if not is_rank_zero():
            return
        score = metrics[self.main_metric]
        improved = self.best is None or (score > self.best if self.main_mode == "max" else score < self.best)
        if improved:
            self.best = score
            weights = {name: tensor.clone() for name, tensor in self.raw_model.state_dict().items()}
            self.unsaved_best = {"model": weights, "epoch": self.epoch, self.main_metric: score}
        finished = self.epoch == self.hp.epochs
        if finished or time.monotonic() - self.last_saved >= self.run.args.checkpoint_interval:
            self.save_checkpoint()
        if tracker is not None:
            tracker.log(metrics, self.global_step)
        self.run.record_progress(self.epoch, self.global_step, metrics, self.main_metric)
        shown = "  ".join(f"{key} {value:.4f}" for key, value in sorted(metrics.items()))
        print(f"epoch {self.epoch}/{self.hp.epochs}  step {self.global_step}  {shown}")

    def agree(self, stop: bool, diverged: bool) -> tuple[bool, bool]:
        """Whether any rank was asked to stop, or saw its loss diverge: all ranks act together.

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

    # ------------------------------------------------------ checkpoints -----

    def save_checkpoint(self) -> None:
        """``last.pt``: everything needed to continue bit-for-bit, written atomically (rank 0 only).

        The best weights seen so far go to ``best.pt`` at the same moment, so the
        two files always agree about which epoch was best, whatever kills the run.
        """
        if not is_rank_zero():
            return
        if self.unsaved_best is not None:
            atomic_torch_save(self.unsaved_best, self.run.checkpoints / "best.pt")
            self.unsaved_best = None
        state = {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "train_sums": self.train_sums,
            "rng": get_rng_state(),
            "hparams": self.run.hparams,
        }
        atomic_torch_save(state, self.run.checkpoints / "last.pt")
        self.last_saved = time.monotonic()

    def load_checkpoint(self) -> None:
        path = self.run.checkpoints / "last.pt"
        if not path.exists():
            return  # stopped before its first checkpoint: start from scratch
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise RuntimeError(
                f"cannot resume: {path} is unreadable ({error}); --retry_failed starts the run over"
            ) from error
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.global_step = state["global_step"]
        self.best = state["best"]
        self.train_sums = state["train_sums"]
        set_rng_state(state["rng"])
        print(f"resumed from {path} at {self.position}")
{%- endif %}
