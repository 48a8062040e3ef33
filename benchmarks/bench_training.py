"""Training speed of the generated projects against hand-written baselines, as ratios.

    python benchmarks/bench_training.py [--epochs 10] [--repeats 5]

Every figure is the median of the repeats, measured in this one run after a
warm-up (first-use costs such as the optimizer's import are not throughput).
A variant and its baseline run in one process, alternately, so that a machine
whose speed drifts (shared cloud cores do) slows both alike:

  * plain vs bare: the plain-PyTorch project's ``train.py`` (run protocol, flags,
    manifest, TensorBoard, atomic fsynced ``last.pt``/``best.pt`` at its default
    cadence: after the first epoch, then at most every 60 s, and at the end)
    against a bare loop over the same data, model and optimizer that
    ``torch.save``s the same state at the same moments; on the example model and
    on a wide one (``--hidden_size 1024``) whose CPU step takes milliseconds.
    Goals: at least 0.93x (example) and 0.97x (wide).
  * lightning vs pl.Trainer.fit: the Lightning project's ``train.py`` against
    a default ``pl.Trainer(...).fit`` of the same module and DataModule.
    Goal: at least 0.95x.
  * data path: one epoch of batches from ``make_loader`` (a StatefulDataLoader
    over an ordinary per-sample Dataset with ``__getitems__``), against the
    batch-indexed sampler the projects used before and against the same Dataset
    without ``__getitems__``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from dlscaffold.create import create_project  # noqa: E402

BATCH_SIZE = 32


# ------------------------------------------------------------- variants -----
# Each runs in a process of its own with the generated project on sys.path.


def bare_loop(run_dir: Path, epochs: int, hidden_size: int) -> None:
    """The loop a researcher would write by hand, saving what plain's train.py saves, when it does."""
    import torch
    import torch.nn.functional as F
    from trainers.task1_data import load_splits
    from trainers.task1_trainer import build_model, compute_metrics
    from utils.dataset import make_loader

    torch.manual_seed(0)
    hparams = argparse.Namespace(hidden_size=hidden_size, depth=2, dropout=0.1)
    model = build_model(hparams)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    splits = load_splits()
    train = make_loader(splits["train"], BATCH_SIZE, shuffle=True, seed=0)
    val = make_loader(splits["val"], BATCH_SIZE, shuffle=False, seed=0)
    run_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(epochs):
        train.sampler.set_epoch(epoch)
        model.train()
        for features, labels in train:
            loss = F.cross_entropy(model(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for batch in val:
                compute_metrics(model, batch)
        if epoch in (0, epochs - 1):  # plain's default cadence for a run shorter than a minute
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "loader": train.state_dict(),
            }
            torch.save(state, run_dir / "last.pt")
            torch.save({"model": model.state_dict()}, run_dir / "best.pt")


def lightning_baseline(run_dir: Path, epochs: int, hidden_size: int) -> None:
    """A default ``pl.Trainer(...).fit`` of the generated task's module and DataModule."""
    import pytorch_lightning as pl
    from trainers.base_trainer import quiet_lightning
    from trainers.task1_trainer import Task1Data, Task1Module

    pl.seed_everything(0, verbose=False)
    module = Task1Module(hidden_size=hidden_size, depth=2, dropout=0.1, learning_rate=1e-3, weight_decay=0.01)
    with quiet_lightning():
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            default_root_dir=run_dir,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=Task1Data(batch_size=BATCH_SIZE, seed=0))


def generated(run_dir: Path, epochs: int, hidden_size: int, extra: list[str]) -> None:
    from protocol.files import load_experiment_script

    train = load_experiment_script("task1", "train")
    args = ["--epochs", str(epochs), "--batch_size", str(BATCH_SIZE), "--hidden_size", str(hidden_size)]
    args += ["--results_dir", str(run_dir.parent), "--run_name", run_dir.name, *extra]
    assert train.main(args) == 0


def data_paths(repeats: int) -> dict[str, float]:
    """Seconds per epoch of batches (no model) through three data paths over the example's data."""
    import torch
    from torch.utils.data import DataLoader, Dataset, Sampler
    from trainers.task1_data import load_splits
    from utils.dataset import make_loader

    train = load_splits()["train"]
    features, labels = train.dataset.tensors
    index = torch.as_tensor(train.indices)
    features, labels = features[index], labels[index]

    class PerSampleOnly(Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return features[i], labels[i]

    class BatchIndexed(Dataset):  # the earlier projects' path: the dataset indexed by a list
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            return features[batch], labels[batch]

    class EpochBatches(Sampler[list[int]]):
        def __init__(self) -> None:
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):  # noqa: ANN204
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.epoch)).tolist()
            return iter([order[i : i + BATCH_SIZE] for i in range(0, len(order), BATCH_SIZE)])

        def __len__(self) -> int:
            return -(-len(labels) // BATCH_SIZE)

    loaders = {
        "batch-indexed (before)": DataLoader(BatchIndexed(), sampler=EpochBatches(), batch_size=None),
        "make_loader, __getitems__": make_loader(train, BATCH_SIZE, shuffle=True, seed=0),
        "make_loader, per sample": make_loader(PerSampleOnly(), BATCH_SIZE, shuffle=True, seed=0),
    }
    seconds = {}
    for name, loader in loaders.items():
        times = []
        for epoch in range(repeats * 20 + 1):
            loader.sampler.set_epoch(epoch)
            start = time.perf_counter()
            for _ in loader:
                pass
            times.append(time.perf_counter() - start)
        seconds[name] = statistics.median(times[1:])
    return seconds


def worker(variants: list[str], project: Path, epochs: int, repeats: int, hidden_size: int) -> dict:
    """Seconds per whole run of each variant, the variants taking turns."""
    sys.path.insert(0, str(project))
    results = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    runs = {
        "bare": lambda name: bare_loop(results / name, epochs, hidden_size),
        "plain": lambda name: generated(results / name, epochs, hidden_size, []),
        "pl.Trainer.fit": lambda name: lightning_baseline(results / name, epochs, hidden_size),
        "lightning": lambda name: generated(results / name, epochs, hidden_size, []),
    }
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for variant in variants:
        runs[variant](f"{variant}-warm-up")
    for repeat in range(repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            start = time.perf_counter()
            runs[variant](f"{variant}-{repeat}")
            times[variant].append(time.perf_counter() - start)
    return times


# ----------------------------------------------------------------- main -----


def in_subprocess(*args: str) -> object:
    output = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--worker", nargs=4, metavar=("BASE", "OURS", "PROJECT", "HIDDEN"), help=argparse.SUPPRESS
    )
    parser.add_argument("--data-worker", metavar="PROJECT", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        base, ours, project, hidden = options.worker
        print(json.dumps(worker([base, ours], Path(project), options.epochs, options.repeats, int(hidden))))
        return 0
    if options.data_worker:
        sys.path.insert(0, options.data_worker)
        print(json.dumps(data_paths(options.repeats)))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="dlscaffold-bench-"))
    projects = {
        framework: create_project(
            {"project_name": f"bench_{framework}", "framework": framework}, workdir, use_git=False
        ).root
        for framework in ("pytorch", "lightning")
    }
    common = ["--epochs", str(options.epochs), "--repeats", str(options.repeats)]
    print(
        f"whole runs of {options.epochs} epochs (batch {BATCH_SIZE}), median of {options.repeats}, seconds:"
    )
    comparisons = [
        ("example model", "pytorch", 128, "bare", "plain", 0.93),
        ("wide model", "pytorch", 1024, "bare", "plain", 0.97),
        ("example model", "lightning", 128, "pl.Trainer.fit", "lightning", 0.95),
    ]
    for label, framework, hidden, baseline, ours, goal in comparisons:
        project = str(projects[framework])
        times = in_subprocess(*common, "--worker", baseline, ours, project, str(hidden))
        base, mine = statistics.median(times[baseline]), statistics.median(times[ours])
        print(
            f"  {ours:<10} {mine:6.2f}  vs {baseline:<15} {base:6.2f}  ({label}, hidden {hidden}):"
            f" {base / mine:.3f}x the baseline's speed (goal >= {goal})"
        )
    seconds = in_subprocess("--repeats", str(options.repeats), "--data-worker", str(projects["pytorch"]))
    reference = seconds["batch-indexed (before)"]
    print("one epoch of the example's training batches (no model), median, milliseconds:")
    for name, value in seconds.items():
        print(f"  {name:<27} {value * 1e3:7.2f}  {reference / value:.2f}x the batch-indexed speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
