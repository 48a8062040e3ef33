"""Run protocol, rarely edited: what every task's eval.py does around its ``evaluate_checkpoint``.

It finds the runs to evaluate (the latest finished one, ``--run_dir``, or
``--all``), picks each run's checkpoint, rebuilds the hyperparameters from its
``hparams.json``, calls the task's function, saves ``test_metrics.json`` beside
the run and, with ``--all``, summarises runs that differ only by their seed
(mean, standard deviation, n) in ``results/test_summary.csv``. Torch is loaded
only by the task's function, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from protocol.files import atomic_write_bytes, describe_os_error, read_json, write_json
from protocol.options import HelpFormatter{{ ', device_name' if cookiecutter.framework == 'pytorch' else '' }}
from protocol.rundir import flag_state

# the task's function: (checkpoint, the run's hyperparameters, eval.py's arguments) -> test metrics
Evaluate = Callable[[Path, argparse.Namespace, argparse.Namespace], dict[str, float]]

SUFFIX = "{{ '.ckpt' if cookiecutter.framework == 'lightning' else '.pt' }}"


def build_parser(description: str | None) -> argparse.ArgumentParser:
    # allow_abbrev=False: --device must not quietly mean --devices, nor --lr --learning_rate
    parser = argparse.ArgumentParser(
        description=description, formatter_class=HelpFormatter, allow_abbrev=False
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run_dir", type=Path, help="the run to evaluate (default: the latest finished one)")
    which.add_argument("--all", action="store_true", help="every finished run, summarised by seed group")
    parser.add_argument(
        "--match", type=run_pattern, help="with --all: only runs whose name matches this glob"
    )
    parser.add_argument(
        "--checkpoint", choices=["best", "last"], default="best", help="which of the run's checkpoints"
    )
{%- if cookiecutter.framework == 'lightning' %}
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda", "mps", "tpu"], default="auto")
{%- else %}
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:1, mps")
{%- endif %}
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed", "16-mixed"],
        default="32-true",
        help="of the forward pass",
    )
    return parser


def run_pattern(text: str) -> str:
    """A glob over the names in results/: one name, so it never reaches another directory."""
    if text in ("", ".", "..") or "/" in text or "**" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pattern of run names: no '/', '..' or '**'")
    return text


def finished_runs(results: Path, pattern: str = "*") -> list[Path]:
    """Finished runs, oldest first (archived attempts, named ``<run>.<time>``, included).

    A symlink in results/ to a run elsewhere (another project's) is not one of them:
    evaluating writes into the run.
    """
    inside = results.resolve()
    flags = [
        flag
        for flag in results.glob(f"{pattern}/finished.out")
        if flag.is_file() and not flag.parent.is_symlink() and flag.parent.resolve().parent == inside
    ]
    return [flag.parent for flag in sorted(flags, key=lambda flag: flag.stat().st_mtime)]


def find_checkpoint(run_dir: Path, preferred: str) -> Path:
    for name in (preferred, "last", "best"):
        path = run_dir / "checkpoints" / f"{name}{SUFFIX}"
        if path.is_file() and not zipfile.is_zipfile(path):  # torch.save writes a zip archive
            raise RuntimeError(f"{path} is not a torch checkpoint (truncated or overwritten?)")
        if path.is_file():
            return path
    raise RuntimeError(f"it has no checkpoint in {run_dir / 'checkpoints'}: it never finished an epoch")


def evaluate_run(run_dir: Path, evaluate: Evaluate, args: argparse.Namespace) -> dict[str, float]:
    """Test metrics of one run, saved beside it; RuntimeError says why a run cannot be evaluated."""
    hparams = read_json(run_dir / "hparams.json")
    if not isinstance(hparams, dict):
        raise RuntimeError(f"{run_dir / 'hparams.json'} is missing or malformed: is it a run directory?")
    checkpoint = find_checkpoint(run_dir, args.checkpoint)
    state = flag_state(run_dir)
    if state != "finished":
        print(f"warning: {run_dir.name} has not finished ({state or 'no flag'}): weights from mid-training")
    print(f"{run_dir.name}: evaluating {checkpoint.relative_to(run_dir)}")
    try:
        metrics = evaluate(checkpoint, argparse.Namespace(**hparams), args)
    except Exception as error:  # a foreign checkpoint, hparams.json edited by hand, a model changed since
        raise RuntimeError(f"cannot evaluate {checkpoint.name}: {type(error).__name__}: {error}") from error
    try:
        write_json(run_dir / "test_metrics.json", {"checkpoint": checkpoint.name, "metrics": metrics})
    except OSError as error:
        raise RuntimeError(f"cannot save its test metrics: {describe_os_error(error)}") from error
    for key, value in sorted(metrics.items()):
        print(f"  {key:<12} {value:.4f}")
    return metrics


def seed_group(run_dir: Path) -> tuple[str, str, str]:
    """The run's hyperparameters but the seed (what its group shares), its name without ``seed-N``,
    and its seed."""
    hparams = read_json(run_dir / "hparams.json") or {}
    parts = run_dir.name.split("_")
    name = "_".join(part for part in parts if not re.fullmatch(r"seed-\d+", part))
    config = json.dumps({key: value for key, value in hparams.items() if key != "seed"}, sort_keys=True)
    seed = json.dumps(hparams["seed"]) if "seed" in hparams else run_dir.name
    return (config if hparams else f"name:{name}"), name or "default", seed


def summary_rows(results: dict[Path, dict[str, float]]) -> list[dict[str, object]]:
    """One row per seed group: n, and the mean and sample standard deviation of each metric.

    One run per seed counts, the latest (``results`` is oldest first): an attempt kept by
    --force, or a reproduction, repeats its seed and would shrink the spread.
    """
    groups: dict[str, dict[str, dict[str, float]]] = {}
    labels: dict[str, str] = {}
    for run_dir in sorted(results):  # labels in name order, whatever the times
        config, name, _ = seed_group(run_dir)
        while config not in labels and name in labels.values():  # alike names, other hyperparameters
            name += "'"
        labels.setdefault(config, name)
        groups.setdefault(config, {})
    for run_dir, metrics in results.items():
        config, _, seed = seed_group(run_dir)
        groups[config][seed] = metrics
    rows = []
    for config, by_seed in groups.items():
        members = list(by_seed.values())
        row: dict[str, object] = {"group": labels[config], "n": len(members)}
        for key in sorted({key for metrics in members for key in metrics}):
            values = [metrics[key] for metrics in members if key in metrics]
            row[f"{key}_mean"] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else ""
        rows.append(row)
    return rows


def describe(row: dict[str, object]) -> str:
    """``group (n=3): test_acc=0.9250 ± 0.0041, ...``"""
    parts = []
    for key, mean in row.items():
        if key.endswith("_mean"):
            metric = key.removesuffix("_mean")
            std = row[f"{metric}_std"]
            parts.append(f"{metric}={mean:.4f}" + (f" ± {std:.4f}" if std != "" else ""))
    return f"{row['group']} (n={row['n']}): " + ", ".join(parts)


def write_summary(rows: list[dict[str, object]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def main(task_dir: Path, evaluate: Evaluate, description: str | None, argv: list[str] | None = None) -> int:
    """eval.py's command line: evaluate the runs it names with ``evaluate``; the exit code."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    if args.match is not None and not args.all:
        parser.error("--match picks among the runs of --all: add --all")
    results = task_dir / "results"
    if args.run_dir is not None:
        runs = [args.run_dir]
    else:
        runs = finished_runs(results, args.match or "*") if args.all else finished_runs(results)[-1:]
    if not runs:
        which = f"matching {args.match!r} " if args.match else ""
        print(f"no finished run {which}in {results}: train one first, or pass --run_dir", file=sys.stderr)
        return 1
    scores, failures = {}, 0
    for run_dir in runs:
        try:
            is_run = run_dir.is_dir()
        except OSError as error:  # a name too long for the file system
            print(f"{run_dir}: {describe_os_error(error)}", file=sys.stderr)
            return 1
        if not is_run:
            print(f"{run_dir} is not a run directory", file=sys.stderr)
            return 1
        try:
            scores[run_dir] = evaluate_run(run_dir, evaluate, args)
        except RuntimeError as error:
            print(f"{run_dir.name}: {error}", file=sys.stderr)
            failures += 1
    if args.all and scores:
        rows = summary_rows(scores)
        try:
            write_summary(rows, results / "test_summary.csv")
        except OSError as error:  # results/ read-only, a run named test_summary.csv in the way
            print(f"cannot write the summary: {describe_os_error(error)}", file=sys.stderr)
            return 1
        print(f"\n{len(scores)} runs in {len(rows)} seed groups: {results / 'test_summary.csv'}")
        for row in rows:
            print(f"  {describe(row)}")
    return 1 if failures else 0
