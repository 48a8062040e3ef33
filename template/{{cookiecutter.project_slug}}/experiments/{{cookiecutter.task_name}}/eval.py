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
sys.path.insert(0, str(TASK_DIR.parents[1]))  # the project root: makes `utils`, `trainers` importable

{% if cookiecutter.framework == 'lightning' -%}
import pytorch_lightning as pl

from trainers.{{ cookiecutter.task_name }}_trainer import {{ cookiecutter.__task_class }}Module
from utils.utils import write_json
{%- else -%}
import torch

from trainers import base_trainer
from trainers.{{ cookiecutter.task_name }}_trainer import {{ cookiecutter.__task_class }}Trainer
from utils.run import Run
from utils.utils import read_json, write_json
{%- endif %}

CHECKPOINT_SUFFIX = "{{ '.ckpt' if cookiecutter.framework == 'lightning' else '.pt' }}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run_dir", type=Path, help="the run to evaluate (default: latest finished)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
{%- if cookiecutter.framework == 'lightning' %}
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, mps or auto")
{%- else %}
    base_trainer.add_trainer_arguments(parser)  # --device, --precision, ...
{%- endif %}
    return parser


def latest_finished_run(results_dir: Path) -> Path:
    finished = sorted(results_dir.glob("*/finished.out"), key=lambda flag: flag.stat().st_mtime)
    if not finished:
        raise SystemExit(f"no finished run in {results_dir}: train one first, or pass --run_dir")
    return finished[-1].parent


def find_checkpoint(run_dir: Path, preferred: str) -> Path:
    for name in (preferred, "last", "best"):
        path = run_dir / "checkpoints" / f"{name}{CHECKPOINT_SUFFIX}"
        if path.exists():
            return path
    raise SystemExit(f"no checkpoint in {run_dir / 'checkpoints'}")


def evaluate(checkpoint: Path, args: argparse.Namespace) -> dict[str, float]:
{%- if cookiecutter.framework == 'lightning' %}
    module = {{ cookiecutter.__task_class }}Module.load_from_checkpoint(checkpoint, map_location="cpu")
    trainer = pl.Trainer(accelerator=args.accelerator, devices=1, logger=False, enable_progress_bar=False)
    (metrics,) = trainer.test(module, dataloaders=module.loader("test", shuffle=False), verbose=False)
    return {key: float(value) for key, value in metrics.items()}
{%- else %}
    run_dir = checkpoint.parents[1]
    hparams = read_json(run_dir / "hparams.json")
    run = Run(task=TASK_DIR.name, name=run_dir.name, dir=run_dir, args=args, hparams=hparams)
    trainer = {{ cookiecutter.__task_class }}Trainer(run)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    trainer.raw_model.load_state_dict(state["model"])
    return trainer.evaluate(trainer.loader("test", shuffle=False), "test")
{%- endif %}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_dir = args.run_dir or latest_finished_run(TASK_DIR / "results")
    checkpoint = find_checkpoint(run_dir, args.checkpoint)
    metrics = evaluate(checkpoint, args)
    write_json(run_dir / "test_metrics.json", {"checkpoint": checkpoint.name, "metrics": metrics})
    print(f"{run_dir.name} ({checkpoint.name}):")
    for key, value in sorted(metrics.items()):
        print(f"  {key:<12} {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
