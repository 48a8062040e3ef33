"""The stream example's data, as ``trainers/<task>_data.py`` would hold it: shard files it writes itself.

Points near eight spots on the unit circle, each labelled with its spot and
carrying an id, written as JSON lines in ``NUM_SHARDS`` files: a stand-in for
WebDataset-style tar shards or a database export, read by a ``ShardStream``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from utils.dataset import PROCESSED_DIR, write_text

SHARDS_DIR = PROCESSED_DIR / "ring-shards"
NUM_SHARDS = 8  # a multiple of every rank count you train with: ranks must read as many
PER_SHARD = 32


def write_shards(directory: Path = SHARDS_DIR) -> list[Path]:
    """The example's shard files (written once): ``NUM_SHARDS`` files of ``PER_SHARD`` samples."""
    generator = torch.Generator().manual_seed(0)
    paths = []
    for shard in range(NUM_SHARDS):
        path = directory / f"shard-{shard:05d}.jsonl"
        paths.append(path)
        if path.exists():
            continue
        lines = []
        for sample in range(shard * PER_SHARD, (shard + 1) * PER_SHARD):
            spot = sample % 8
            angle = 2 * math.pi * spot / 8
            noise = 0.1 * torch.randn(2, generator=generator)
            x, y = (torch.tensor([math.cos(angle), math.sin(angle)]) + noise).tolist()
            lines.append(json.dumps({"id": sample, "point": [x, y], "spot": spot}))
        write_text(path, "\n".join(lines) + "\n")
    return paths


def read_shard(path: Path) -> list[tuple[torch.Tensor, int, int]]:
    """One shard's samples, in file order: (point, spot, id)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(torch.tensor(row["point"]), row["spot"], row["id"]) for row in rows]
