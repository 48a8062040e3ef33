"""A task that streams its data from shard files, written as ``trainers/<task>_trainer.py`` would be.

For data too large to index (WebDataset-style tar shards, a database export):
a :class:`ShardStream` reads shard files in order, each worker process its own
share, and saves its position in every checkpoint, so a resumed run continues
with the next sample. The example's shards (``stream_data.py``) are JSON lines
the project writes itself. The module counts the ids it trains on, which lets the
tests check that every sample is seen exactly once an epoch, resumes included.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from protocol import Run
from protocol.lightning import epoch_to_train
from tests.stream_data import NUM_SHARDS, PER_SHARD, read_shard, write_shards
from trainers.base_trainer import fit
from utils.dataset import ShardStream, make_loader
from utils.utils import seed_everything


class StreamData(pl.LightningDataModule):
    def __init__(self, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        stream = ShardStream(write_shards(), read_shard, samples_per_shard=PER_SHARD, seed=self.seed)
        return make_loader(
            stream,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_workers=self.num_workers,
            rank=self.trainer.global_rank,  # under DDP each rank reads its own shards
            world_size=self.trainer.world_size,
            epoch=epoch_to_train(self.trainer),  # a resumed run's, too; later epochs: the protocol
        )


class SpotClassifier(pl.LightningModule):
    def __init__(self, hidden_size: int, learning_rate: float) -> None:
        super().__init__()
        self.learning_rate = learning_rate
        self.net = nn.Sequential(nn.Linear(2, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 8))
        # how often each sample was trained on: saved with the weights, so a resumed run keeps count
        self.register_buffer("seen", torch.zeros(NUM_SHARDS * PER_SHARD, dtype=torch.long))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        points, spots, ids = batch
        logits = self.net(points)
        loss = F.cross_entropy(logits, spots)
        self.seen[ids] += 1
        self.log("train_acc", (logits.argmax(dim=-1) == spots).float().mean(), on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


def train(run: Run) -> dict[str, float]:
    args = run.args
    seed_everything(args.seed)
    module = SpotClassifier(hidden_size=args.hidden_size, learning_rate=args.learning_rate)
    data = StreamData(batch_size=args.batch_size, seed=args.seed, num_workers=args.num_workers)
    return fit(
        run,
        module,
        data,
        main_metric="train_acc",
        mode="max",
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        log_every_n_steps=args.log_every_n_steps,
        accumulate_grad_batches=args.accumulate_grad_batches,
    )
