"""Evaluate a {{ cookiecutter.task_name }} run on the test split.

    python experiments/{{ cookiecutter.task_name }}/eval.py          # the latest finished run
    python experiments/{{ cookiecutter.task_name }}/eval.py --run_dir RUN_DIRECTORY

Loads the run's best checkpoint (or its last, with --checkpoint last), prints
the test metrics and saves them as test_metrics.json in the run directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TASK_DIR.parents[1]))  # the project root: makes `protocol`, `trainers` importable

from protocol.files import read_json, write_json
from protocol.options import {{ 'HelpFormatter, device_name' if cookiecutter.framework == 'pytorch' else 'HelpFormatter' }}

SUFFIX = "{{ '.ckpt' if cookiecutter.framework == 'lightning' else '.pt' }}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--run_dir", type=Path, help="the run to evaluate; None: the latest finished one")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
{%- if cookiecutter.framework == 'lightning' %}
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda", "mps", "tpu"], default="auto")
{%- else %}
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:1, mps")
{%- endif %}
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed", "16-mixed"], default="32-true")
    return parser


def latest_finished_run(results_dir: Path) -> Path:
    finished = sorted(results_dir.glob("*/finished.out"), key=lambda flag: flag.stat().st_mtime)
    if not finished:
        raise SystemExit(f"no finished run in {results_dir}: train one first, or pass --run_dir")
    return finished[-1].parent


def find_checkpoint(run_dir: Path, preferred: str) -> Path:
    for name in (preferred, "last", "best"):
        path = run_dir / "checkpoints" / f"{name}{SUFFIX}"
        if path.exists():
            return path
    raise SystemExit(f"no checkpoint in {run_dir / 'checkpoints'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_dir = args.run_dir or latest_finished_run(TASK_DIR / "results")
    checkpoint = find_checkpoint(run_dir, args.checkpoint)
    hparams = read_json(run_dir / "hparams.json")
    if not isinstance(hparams, dict):
        raise SystemExit(f"{run_dir / 'hparams.json'} is missing or malformed: not a run directory?")
    # imported here, not at the top: --help and argument errors answer without loading torch
    from trainers.{{ cookiecutter.task_name }}_trainer import evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, argparse.Namespace(**hparams), args)
    write_json(run_dir / "test_metrics.json", {"checkpoint": checkpoint.name, "metrics": metrics})
    print(f"{run_dir.name} ({checkpoint.name}):")
    for key, value in sorted(metrics.items()):
        print(f"  {key:<12} {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
