"""{{ cookiecutter.task_name }}: the task's model, loss and training loop, all yours to change.

The example classifies the points of ``{{ cookiecutter.task_name }}_data.py`` with a residual MLP,
trained by the loop in :func:`train`. Replace the model in :func:`build_model`,
the loss in :func:`compute_metrics`, the loop itself (several models,
optimizers or schedulers, a GAN's alternating steps) and :func:`evaluate_checkpoint`.
Keep the calls to ``state``: they give the run its checkpoints, exact resume,
flags and logs (see "Your own loop" in README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from layers import ResidualMLP
from protocol import Run
from protocol.state import TrainState
from trainers import {{ cookiecutter.task_name }}_data as data
from trainers.base_trainer import autocast, evaluate, rank_and_world, select_device, to_device, wrap
from utils.dataset import make_loader
from utils.utils import seed_everything


def build_model(hparams: argparse.Namespace) -> nn.Module:
    return ResidualMLP(
        data.NUM_FEATURES, hparams.hidden_size, data.NUM_CLASSES, hparams.depth, hparams.dropout
    )


def compute_metrics(
    model: nn.Module, batch: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to minimise, and the metrics to report (the loss among them)."""
    features, labels = batch
    logits = model(features)
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss, {"loss": loss, "acc": accuracy}


def train(run: Run) -> dict[str, float]:
    args = run.args
    device = select_device(args.device)
    rank, world_size = rank_and_world()
    seed_everything(args.seed)  # the same initial weights for the same seed
    model = build_model(args).to(device)
    net = wrap(model, device, args.compile)  # what the loop calls; checkpoints hold `model`
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    # float16 needs its gradients scaled against underflow; otherwise the scaler does nothing
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16-mixed")
    loaders = {
        name: make_loader(
            dataset,
            args.batch_size,
            shuffle=name == "train",
            seed=args.seed,
            num_workers=args.num_workers,
            rank=rank,
            world_size=world_size,
        )
        for name, dataset in data.load_splits().items()
    }
    train_loader = loaders["train"]

    # everything that must survive a restart; add a scheduler, an EMA, a second model here
    saved = {"model": model, "optimizer": optimizer, "scaler": scaler, "loader": train_loader}
    with TrainState(
        run,
        saved,
        main_metric="val_acc",  # picks best.pt
        mode="max",
        log_every_n_steps=args.log_every_n_steps,  # also how often the loss is read from the device
        checkpoint_interval=args.checkpoint_interval,
        steps_per_epoch=len(train_loader),  # the progress bar's length (shown on a terminal only)
    ) as state:
        while state.epoch < args.epochs:
            train_loader.set_epoch(state.epoch)  # each epoch its own order, the same on resume
            net.train()
            for batch in train_loader:
                batch = to_device(batch, device)
                with autocast(device, args.precision):
                    loss, metrics = compute_metrics(net, batch)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)  # after the step: no gradient waits between steps
                state.step(**metrics)  # on a signal: checkpoint, then stop; on a NaN loss: fail
            state.end_epoch(evaluate(net, loaders["val"], compute_metrics, device, args.precision))
        return state.final_metrics()


def evaluate_checkpoint(
    checkpoint: Path, hparams: argparse.Namespace, args: argparse.Namespace
) -> dict[str, float]:
    """The test-split metrics of a checkpoint's model, on eval.py's ``args``."""
    device = select_device(args.device)
    model = build_model(hparams).to(device)
    model.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True)["model"])
    loader = make_loader(data.load_splits()["test"], hparams.batch_size, shuffle=False, seed=hparams.seed)
    return evaluate(model, loader, compute_metrics, device, args.precision, prefix="test")
