"""Evaluate {{ cookiecutter.task_name }} runs on the test split.

    python experiments/{{ cookiecutter.task_name }}/eval.py          # the latest finished run
    python experiments/{{ cookiecutter.task_name }}/eval.py --run_dir RUN_DIRECTORY
    python experiments/{{ cookiecutter.task_name }}/eval.py --all    # every finished run
    python experiments/{{ cookiecutter.task_name }}/eval.py --all --match 'learning_rate-0.01_*'

Loads a run's best checkpoint (or its last, with --checkpoint last), prints
the test metrics and saves them as test_metrics.json in the run directory.
With --all, runs that differ only by their seed are summarised together (mean,
standard deviation, n) in results/test_summary.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TASK_DIR.parents[1]))  # the project root: makes `protocol`, `trainers` importable

from protocol import evaluation


def evaluate(checkpoint: Path, hparams: argparse.Namespace, args: argparse.Namespace) -> dict[str, float]:
    """The test metrics of one checkpoint, for the run's ``hparams`` and eval.py's ``args``."""
    # imported here, not at the top: --help and argument errors answer without loading torch
    from trainers.{{ cookiecutter.task_name }}_trainer import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, hparams, args)


def main(argv: list[str] | None = None) -> int:
    return evaluation.main(TASK_DIR, evaluate, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
