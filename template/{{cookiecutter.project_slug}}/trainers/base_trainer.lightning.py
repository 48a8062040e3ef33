"""What every Lightning task shares: the Trainer, set up with the run protocol.

A task's ``train(run)`` builds its LightningModule and LightningDataModule and
hands them to :func:`fit` with the Trainer options it wants; :func:`fit` adds
atomic checkpoints (``best.ckpt`` by the task's main metric, ``last.ckpt``
every epoch and on a signal), exact resume, logging and the run's flags.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from protocol import Run
from protocol.cluster import COLLECTIVE_TIMEOUT, in_srun_step, launched_by_torchrun, srun_layout
from protocol.lightning import AtomicCheckpointIO, RunProtocol, check_resumable, epoch_metrics
from protocol.tracking import make_logger

# Lightning's start-up banners and product tips say nothing about the run
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
EXPECTED_WARNINGS = (
    "The number of training batches",  # epoch metrics are logged at every epoch's end anyway
    "The `srun` command is available",  # on any machine that has SLURM's tools
    ".*LeafSpec.* is deprecated",  # Lightning's own use of torch
    "Checkpoint directory .* exists and is not empty",  # a resumed run's, by design
    "Your `IterableDataset` has `__len__` defined",  # a ShardStream deals out shards to workers itself
)


@contextlib.contextmanager
def distributed(accelerator: str = "auto") -> Iterator[None]:
    """Started by torchrun or as the tasks of an ``srun`` step, join the process group now.

    Every rank then follows rank 0's decision to start, resume or skip the run,
    and Lightning uses this process group as it is. Processes Lightning starts
    itself (``--devices 2`` on one machine) join it inside ``fit``, as always.
    """
    srun_layout()  # srun's tasks get RANK, WORLD_SIZE, LOCAL_RANK and a master as torchrun's do
    # Lightning's own children have WORLD_SIZE but no RANK: they join inside fit
    started_outside = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if started_outside and not torch.distributed.is_initialized():
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if gpu else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def cluster_environment() -> list[ClusterEnvironment]:
    """Who started this process, told to Lightning rather than guessed.

    Lightning takes any process inside a SLURM allocation for one SLURM started,
    ranks and all; under torchrun in an allocation that is wrong. Requeueing is
    the protocol's job, so Lightning's own stays off.
    """
    if launched_by_torchrun():
        return [TorchElasticEnvironment()]
    if in_srun_step() or SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence the warnings listed in ``EXPECTED_WARNINGS``, and no others."""
    with warnings.catch_warnings():
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def trainer_problem(args: argparse.Namespace) -> str | None:
    """Why train.py's accelerator, devices, strategy and precision make no pl.Trainer here, if not.

    Said before a run directory exists: a typo in how to run is not a failed run.
    """
    problem = accelerator_problem(args.accelerator)
    if problem:
        return problem
    options = ("accelerator", "devices", "strategy", "num_nodes", "precision")
    try:
        with quiet_lightning():
            pl.Trainer(
                **{name: getattr(args, name) for name in options},
                plugins=cluster_environment(),
                logger=False,
                enable_checkpointing=False,
            )
    except Exception as error:  # Lightning's MisconfigurationException, ValueError, ...
        return f"cannot train with these options: {error}"
    return None


def accelerator_problem(name: str) -> str | None:
    """Why ``--accelerator name`` cannot be used on this machine, if it cannot."""
    import torch

    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        return f"--accelerator {name}: no CUDA GPU is available here (use auto or cpu)"
    if name == "mps" and not torch.backends.mps.is_available():
        return f"--accelerator {name}: MPS is not available here (use auto or cpu)"
    return None


def fit(
    run: Run,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    *,
    main_metric: str,
    mode: str,
    **trainer_options: Any,
) -> dict[str, float]:
    """Train ``module`` on ``datamodule`` under the run protocol; return the final metrics.

    ``trainer_options`` go to ``pl.Trainer`` as they are (``max_epochs``,
    ``devices``, ``gradient_clip_val``, ``accumulate_grad_batches``, more
    ``callbacks``...): the task decides them. This adds only what the protocol
    needs: atomic ``best.ckpt`` (by ``main_metric``) and ``last.ckpt``, exact
    resume, the logger, stop signals and the run's flags.
    """
    best = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="best",
        monitor=main_metric,
        mode=mode,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    # a second callback rather than save_last, which only saves when `best` does
    last = ModelCheckpoint(
        dirpath=run.checkpoints, filename="last", save_on_train_epoch_end=True, enable_version_counter=False
    )
    last_path = run.checkpoints / "last.ckpt"
    resume_from = last_path if run.resuming and last_path.exists() else None
    if resume_from is not None:
        check_resumable(resume_from, module)
    callbacks = [RunProtocol(run, main_metric), best, last, *trainer_options.pop("callbacks", [])]
    with quiet_lightning():
        plugins = [AtomicCheckpointIO(), *cluster_environment()]
        trainer = pl.Trainer(
            logger=make_logger(run.logs, run.name),
            callbacks=callbacks,
            plugins=plugins,
            default_root_dir=run.dir,
            use_distributed_sampler=False,  # make_loader shards by rank itself, resumably
            enable_model_summary=False,
            **trainer_options,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    metrics = epoch_metrics(trainer)
    if best.best_model_score is not None:
        metrics[f"best_{main_metric}"] = float(best.best_model_score)
    return metrics


def test_checkpoint(
    module: pl.LightningModule, datamodule: pl.LightningDataModule, accelerator: str, precision: str
) -> dict[str, float]:
    """``trainer.test`` on one device, quietly: the metrics the module's ``test_step`` logs."""
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=1,
            precision=precision,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return {key: float(value) for key, value in metrics.items()}
