"""What a sample costs on the generated project's data path, as ratios measured in one run.

    python benchmarks/bench_data.py [--repeats 7]

Each figure is the median over the repeats of one epoch of batches (no model)
from ``make_loader``, the variants taking turns after a warm-up:

  * the example's data (points held in memory as tensors), read through the
    dataset's ``__getitems__`` (one indexing operation a batch) and through an
    ordinary per-sample ``__getitem__``: the per-sample path's worst case, since
    a sample costs almost nothing to make;
  * a realistic decode: 32x32 RGB PNG images (CIFAR-sized) decoded with Pillow,
    per sample and through a ``__getitems__`` that decodes the same images in
    one call, so the difference is DataLoader's own cost per sample;
  * the same decode with augmentation (random crop and flip) drawn by an
    ``EpochDataset`` from ``sample_generator(seed, epoch, index)``, which lets
    worker processes know the epoch and a resumed run draw the same;
  * the augmented decode in 2 worker processes against none.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from dlscaffold.create import create_project  # noqa: E402

BATCH_SIZE = 64
IMAGES = 2048


def epoch_seconds(loaders: dict[str, object], repeats: int) -> dict[str, float]:
    """Median seconds per epoch of each loader, the loaders taking turns."""
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(repeats + 1):
        for name, loader in loaders.items():
            loader.set_epoch(epoch)
            start = time.perf_counter()
            for _ in loader:
                pass
            if epoch:  # the first epoch starts workers and warms caches
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def png_images(count: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):  # smooth colour fields plus noise: compressible like photographs
        base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(noisy).save(out, format="PNG")
        images.append(out.getvalue())
    return images


def measure(repeats: int) -> tuple[dict[str, float], float]:
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import Dataset
    from trainers.task1_data import load_splits
    from utils.dataset import Batch, EpochDataset, make_loader, sample_generator

    train = load_splits()["train"]
    features, labels = (tensor[torch.as_tensor(train.indices)] for tensor in train.dataset.tensors)

    class InMemoryPerSample(Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
            return features[index], labels[index]

    images = png_images(IMAGES)

    def decode(index: int) -> torch.Tensor:
        pixels = np.asarray(Image.open(io.BytesIO(images[index])).convert("RGB"))
        return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)

    class Pngs(Dataset):
        def __len__(self) -> int:
            return IMAGES

        def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
            return decode(index), index % 10

    class PngsBatched(Pngs):
        def __getitems__(self, indices: list[int]) -> Batch:
            return Batch((torch.stack([decode(i) for i in indices]), torch.tensor([i % 10 for i in indices])))

    class AugmentedPngs(EpochDataset):
        def __len__(self) -> int:
            return IMAGES

        def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
            epoch, index = key
            generator = sample_generator(0, epoch, index)
            padded = torch.nn.functional.pad(decode(index), (4, 4, 4, 4), mode="reflect")
            top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
            crop = padded[:, top : top + 32, left : left + 32]
            flip = bool(torch.rand((), generator=generator) < 0.5)
            return (crop.flip(-1) if flip else crop), index % 10

    def loader(dataset: Dataset, workers: int = 0) -> object:
        return make_loader(dataset, BATCH_SIZE, shuffle=True, seed=0, num_workers=workers)

    seconds = epoch_seconds(
        {
            "in memory, __getitems__": loader(train),
            "in memory, per sample": loader(InMemoryPerSample()),
            "png, __getitems__": loader(PngsBatched()),
            "png, per sample": loader(Pngs()),
            "png + augmentation, per sample": loader(AugmentedPngs()),
            "png + augmentation, 2 workers": loader(AugmentedPngs(), workers=2),
        },
        repeats,
    )
    calls = 20_000
    start = time.perf_counter()
    for index in range(calls):
        sample_generator(0, 1, index)
    return seconds, (time.perf_counter() - start) / calls


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    project = create_project(
        {"project_name": "bench_data", "framework": "pytorch"},
        Path(tempfile.mkdtemp(prefix="dlscaffold-bench-")),
        use_git=False,
    ).root
    sys.path.insert(0, str(project))
    seconds, generator_cost = measure(options.repeats)

    def line(name: str, baseline: str | None = None) -> None:
        value = seconds[name]
        shown = f"  {name:<32} {value * 1e3:8.2f} ms"
        if baseline:
            shown += f"  {seconds[baseline] / value:.2f}x the speed of {baseline}"
        print(shown)

    print(f"one epoch of batches of {BATCH_SIZE}, median of {options.repeats}:")
    line("in memory, __getitems__")
    line("in memory, per sample", "in memory, __getitems__")
    line("png, __getitems__")
    line("png, per sample", "png, __getitems__")
    line("png + augmentation, per sample", "png, per sample")
    line("png + augmentation, 2 workers", "png + augmentation, per sample")
    per_image = seconds["png, per sample"] / IMAGES
    print(
        f"per sample: a PNG decode {per_image * 1e6:.1f} us, sample_generator {generator_cost * 1e6:.1f} us"
        f" ({generator_cost / per_image:.0%} of the decode)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
