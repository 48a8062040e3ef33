"""{{ cookiecutter.task_name }}: the task's LightningDataModule and LightningModule, yours to change.

The example classifies the points of ``{{ cookiecutter.task_name }}_data.py`` with a residual MLP.
Replace the data in the DataModule, the model and the steps in the module;
for several optimizers (a GAN) set ``self.automatic_optimization = False`` and
step them yourself in ``training_step`` (see "Your own loop" in README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from layers import ResidualMLP
from protocol import Run
from protocol.lightning import epoch_to_train
from trainers import {{ cookiecutter.task_name }}_data as data
from trainers.base_trainer import fit, test_checkpoint
from utils.dataset import make_loader
from utils.utils import seed_everything


class {{ cookiecutter.__task_class }}Data(pl.LightningDataModule):
    """Train, validation and test loaders; the train loader resumes mid-epoch from a checkpoint."""

    def __init__(self, batch_size: int, seed: int, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers

    def prepare_data(self) -> None:
        data.load_splits()  # makes and caches the data once, on one process

    def setup(self, stage: str) -> None:
        self.splits = data.load_splits()

    def loader(self, split: str, epoch: int = 0) -> torch.utils.data.DataLoader:
        return make_loader(
            self.splits[split],
            self.batch_size,
            shuffle=split == "train",
            seed=self.seed,
            num_workers=self.num_workers,
            rank=self.trainer.global_rank if self.trainer else 0,
            world_size=self.trainer.world_size if self.trainer else 1,
            epoch=epoch,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader("train", epoch=epoch_to_train(self.trainer))  # a resumed run's, too

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader("test")


class {{ cookiecutter.__task_class }}Module(pl.LightningModule):
    """A residual MLP classifier; its constructor arguments are saved in every checkpoint."""

    def __init__(
        self, hidden_size: int, depth: int, dropout: float, learning_rate: float, weight_decay: float
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # logged with the run; eval.py rebuilds the module from hparams.json
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.model = ResidualMLP(data.NUM_FEATURES, hidden_size, data.NUM_CLASSES, depth, dropout)

    def compute_metrics(
        self, batch: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, labels = batch
        logits = self.model(features)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        return loss, {"loss": loss, "acc": accuracy}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss, metrics = self.compute_metrics(batch)
        # epoch means over every rank under DDP (one small all-reduce a step), local ones otherwise
        sync = self.trainer.world_size > 1
        self.log_dict(
            {f"train_{key}": value for key, value in metrics.items()}, on_epoch=True, sync_dist=sync
        )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        _, metrics = self.compute_metrics(batch)
        self.log_dict({f"val_{key}": value for key, value in metrics.items()}, sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        _, metrics = self.compute_metrics(batch)
        self.log_dict({f"test_{key}": value for key, value in metrics.items()}, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)


def build_module(args: argparse.Namespace) -> {{ cookiecutter.__task_class }}Module:
    """The module for these hyperparameters: train.py's arguments, or a run's hparams.json."""
    return {{ cookiecutter.__task_class }}Module(
        hidden_size=args.hidden_size,
        depth=args.depth,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
    )


def train(run: Run) -> dict[str, float]:
    args = run.args
    seed_everything(args.seed)  # the same initial weights for the same seed
    module = build_module(args)
    if args.compile:
        module.compile()  # in place: checkpoints keep their usual parameter names
    datamodule = {{ cookiecutter.__task_class }}Data(
        batch_size=args.batch_size,
        seed=args.seed,
        num_workers=args.num_workers,
    )
    # pl.Trainer's options are the task's: add gradient_clip_val, accumulate_grad_batches, ... here
    return fit(
        run,
        module,
        datamodule,
        main_metric="val_acc",
        mode="max",
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
        log_every_n_steps=args.log_every_n_steps,
    )


def evaluate_checkpoint(
    checkpoint: Path, hparams: argparse.Namespace, args: argparse.Namespace
) -> dict[str, float]:
    """The test-split metrics of a checkpoint's module, on eval.py's ``args``."""
    # tensors only (weights_only): never load_from_checkpoint, which a crafted checkpoint in a
    # run directory someone shares could make run code (CVE-2026-58659)
    module = build_module(hparams)
    module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    datamodule = {{ cookiecutter.__task_class }}Data(batch_size=hparams.batch_size, seed=hparams.seed)
    return test_checkpoint(module, datamodule, args.accelerator, args.precision)
