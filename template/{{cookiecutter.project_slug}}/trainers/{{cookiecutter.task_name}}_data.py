"""{{ cookiecutter.task_name }}'s data: yours to replace.

The example is made by the project itself: points on three interleaved spiral
arms, written to ``data/raw/`` as CSV and cached as tensors in
``data/processed/`` on first use. Replace :func:`load_splits` with your own
data: any map-style ``Dataset`` (one sample per index) works, with any
``collate_fn`` and DataLoader worker processes.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.dataset import PROCESSED_DIR, RAW_DIR, TensorSamples, cached, split, write_text

NUM_FEATURES = 2
NUM_CLASSES = 3
RAW_FILE = RAW_DIR / "spirals.csv"
PROCESSED_FILE = PROCESSED_DIR / "spirals.pt"


def make_spirals(points_per_class: int = 500, noise: float = 0.12) -> str:
    """The raw example data as CSV text: ``NUM_CLASSES`` interleaved spiral arms."""
    rng = np.random.default_rng(0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["x", "y", "label"])
    for label in range(NUM_CLASSES):
        radius = rng.uniform(0.05, 1.0, points_per_class)
        angle = 2.5 * math.pi * radius + 2 * math.pi * label / NUM_CLASSES
        x = radius * np.cos(angle) + noise * radius * rng.standard_normal(points_per_class)
        y = radius * np.sin(angle) + noise * radius * rng.standard_normal(points_per_class)
        writer.writerows((f"{a:.6f}", f"{b:.6f}", label) for a, b in zip(x, y))
    return out.getvalue()


def process() -> dict[str, torch.Tensor]:
    """Raw CSV to standardised feature and label tensors (cached in data/processed/)."""
    if not RAW_FILE.exists():
        write_text(RAW_FILE, make_spirals())
    with RAW_FILE.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = torch.tensor([[float(row["x"]), float(row["y"])] for row in rows])
    labels = torch.tensor([int(row["label"]) for row in rows])
    return {"features": (features - features.mean(0)) / features.std(0), "labels": labels}


def load_splits() -> dict[str, Dataset]:
    """Train, validation and test sets, split the same way for every run."""
    data = cached(PROCESSED_FILE, process)
    dataset = TensorSamples(data["features"], data["labels"])
    return split(dataset, {"train": 0.7, "val": 0.15, "test": 0.15})
