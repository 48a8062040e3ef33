"""Training throughput of the generated trainers against a minimal hand-written loop.

    python benchmarks/bench_training.py [--epochs 20] [--repeats 3]

All three train the example task (same data, model, optimiser, batch size and
per-epoch validation) in this one process, interleaved, and the median of the
repeats is reported as training steps per second:

  * baseline: a bare loop, no checkpoints, no logging, no protocol;
  * plain:    the generated plain-PyTorch project's train.py (main()), with its
              atomic checkpoints, TensorBoard logging, flags and manifest;
  * lightning: the generated Lightning project's train.py, likewise.

Goal for plain: at least 0.95x the baseline.
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
HIDDEN_SIZE = 128
STEPS_PER_EPOCH = 33  # 1050 training examples of the example data, in batches of 32


def baseline_loop(epochs: int) -> int:
    """The loop a researcher would write by hand; returns the number of training steps."""
    import torch
    import torch.nn.functional as F
    from layers import ResidualMLP
    from utils.dataset import NUM_CLASSES, NUM_FEATURES, load_splits, make_loader

    torch.manual_seed(0)
    splits = load_splits()
    model = ResidualMLP(NUM_FEATURES, HIDDEN_SIZE, NUM_CLASSES, depth=2, dropout=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    train = make_loader(splits["train"], BATCH_SIZE, shuffle=True, seed=0)
    val = make_loader(splits["val"], BATCH_SIZE, shuffle=False, seed=0)
    steps = 0
    for epoch in range(epochs):
        train.sampler.set_epoch(epoch)
        model.train()
        for features, labels in train:
            loss = F.cross_entropy(model(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            for features, labels in val:
                F.cross_entropy(model(features), labels)
    return steps


def measure(variant: str, project: Path, epochs: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per run of ``variant`` for ``epochs`` and twice as many, after a warm-up run.

    The difference between the two isolates steady-state throughput from the fixed
    cost of a run (start-up, run directory, manifest), which long runs amortise.
    """
    sys.path.insert(0, str(project))
    results = project / "bench-results"
    if variant == "baseline":

        def run(epochs_: int, name: str) -> None:
            baseline_loop(epochs_)

    else:
        from utils.utils import load_experiment_script

        train = load_experiment_script("task1", "train")
        fixed = [
            "--batch_size",
            str(BATCH_SIZE),
            "--hidden_size",
            str(HIDDEN_SIZE),
            "--results_dir",
            str(results),
        ]

        def run(epochs_: int, name: str) -> None:
            assert train.main([*fixed, "--epochs", str(epochs_), "--run_name", name]) == 0

    run(1, "warm-up")  # first-use costs (optimiser import, data cache) are not throughput
    times: dict[str, list[float]] = {"short": [], "long": []}
    for repeat in range(repeats):
        for label, count in (("short", epochs), ("long", 2 * epochs)):
            start = time.perf_counter()
            run(count, f"{label}-{repeat}")
            times[label].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "PROJECT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        variant, project = options.worker
        print(json.dumps(measure(variant, Path(project), options.epochs, options.repeats)))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="dlscaffold-bench-"))
    projects = {
        framework: create_project(
            {"project_name": f"bench_{framework}", "framework": framework}, workdir, use_git=False
        ).root
        for framework in ("pytorch", "lightning")
    }
    variants = {
        "baseline": projects["pytorch"],
        "plain": projects["pytorch"],
        "lightning": projects["lightning"],
    }
    times = {}
    for variant, project in variants.items():  # one process each: the projects share module names
        command = [
            sys.executable,
            __file__,
            "--epochs",
            str(options.epochs),
            "--repeats",
            str(options.repeats),
        ]
        output = subprocess.run(
            [*command, "--worker", variant, str(project)], capture_output=True, text=True, check=True
        ).stdout
        times[variant] = json.loads(output.strip().splitlines()[-1])

    steps = STEPS_PER_EPOCH * options.epochs
    whole = {variant: 2 * steps / statistics.median(t["long"]) for variant, t in times.items()}
    steady = {
        variant: steps / (statistics.median(t["long"]) - statistics.median(t["short"]))
        for variant, t in times.items()
    }
    print(f"steps/s training the example (batch {BATCH_SIZE}, validation and checkpoint every epoch),")
    print(f"median of {options.repeats}; whole run: {2 * options.epochs} epochs, start-up included;")
    print(f"steady state: the extra time of {2 * options.epochs} epochs over {options.epochs}.")
    print(f"{'variant':<10} {'whole run':>10} {'ratio':>7} {'steady':>9} {'ratio':>7}")
    for variant in times:
        print(
            f"{variant:<10} {whole[variant]:>10.0f} {whole[variant] / whole['baseline']:>6.2f}x"
            f" {steady[variant]:>9.0f} {steady[variant] / steady['baseline']:>6.2f}x"
        )
    print("goal: plain >= 0.95x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
