"""A task that streams its data from shard files, written as ``trainers/<task>_trainer.py`` would be.

For data too large to index (WebDataset-style tar shards, a database export):
a :class:`ShardStream` reads shard files in order, each worker process its own
share, and saves its position in every checkpoint, so a resumed run continues
with the next sample. The example's shards (``stream_data.py``) are JSON lines
the project writes itself. The model counts the ids it trains on, which lets the
tests check that every sample is seen exactly once an epoch, resumes included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protocol import Run
from protocol.state import TrainState
from tests.stream_data import NUM_SHARDS, PER_SHARD, read_shard, write_shards
from trainers.base_trainer import rank_and_world, select_device, to_device
from utils.dataset import ShardStream, make_loader
from utils.utils import seed_everything


class SpotClassifier(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 8))
        # how often each sample was trained on: saved with the weights, so a resumed run keeps count
        self.register_buffer("seen", torch.zeros(NUM_SHARDS * PER_SHARD, dtype=torch.long))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.net(points)


def train(run: Run) -> dict[str, float]:
    args = run.args
    device = select_device(args.device)
    seed_everything(args.seed)
    model = SpotClassifier(args.hidden_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    stream = ShardStream(write_shards(), read_shard, samples_per_shard=PER_SHARD, seed=args.seed)
    rank, world_size = rank_and_world()  # under DDP each rank reads its own shards
    loader = make_loader(
        stream,
        args.batch_size,
        shuffle=True,
        seed=args.seed,
        num_workers=args.num_workers,
        rank=rank,
        world_size=world_size,
    )

    saved = {"model": model, "optimizer": optimizer, "loader": loader}
    with TrainState(run, saved, main_metric="train_acc", mode="max", checkpoint_interval=0) as state:
        while state.epoch < args.epochs:
            loader.set_epoch(state.epoch)  # a stream, too: the shards' order and the workers' shares
            for batch in loader:
                points, spots, ids = to_device(batch, device)
                logits = model(points)
                loss = F.cross_entropy(logits, spots)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                model.seen[ids] += 1
                state.step(loss=loss, acc=(logits.argmax(dim=-1) == spots).float().mean())
            state.end_epoch({})
        return state.final_metrics()
