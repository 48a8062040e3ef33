r"""Train {{ cookiecutter.task_name }}.

From the project root:

    python experiments/{{ cookiecutter.task_name }}/train.py \
        --learning_rate 0.001 --batch_size 32 --epochs 20 --hidden_size 128
{%- if cookiecutter.framework == 'lightning' %}
    python experiments/{{ cookiecutter.task_name }}/train.py \
        --accelerator gpu --devices 2 --strategy ddp --precision bf16-mixed
{%- else %}
    torchrun --nproc_per_node 2 experiments/{{ cookiecutter.task_name }}/train.py   # DDP
{%- endif %}

Each run gets its own directory, results/<run>/ beside this file, named after
the hyperparameters that differ from their defaults plus the seed (or --run_name).
Running the same command again skips the run if it finished, resumes it if it
was interrupted, and skips it if it failed (--retry_failed tries again).
Ctrl-C, SIGTERM and SIGUSR1 stop training at a safe point, ready to resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TASK_DIR.parents[1]))  # the project root: makes `utils`, `trainers` importable

{% if cookiecutter.framework == 'lightning' -%}
from trainers import base_trainer
from trainers.{{ cookiecutter.task_name }}_trainer import {{ cookiecutter.__task_class }}Module
from utils.run import Run, add_run_arguments, launch
from utils.utils import seed_everything
{%- else -%}
from trainers import base_trainer
from trainers.{{ cookiecutter.task_name }}_trainer import {{ cookiecutter.__task_class }}Trainer
from utils.run import Run, add_run_arguments, launch
{%- endif %}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    hparams = parser.add_argument_group("hyperparameters")
    hparams.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW step size")
    hparams.add_argument("--batch_size", type=int, default=32, help="examples per step")
    hparams.add_argument("--epochs", type=int, default=20, help="passes over the training set")
    hparams.add_argument("--hidden_size", type=int, default=128, help="width of the residual MLP")
    hparams.add_argument("--depth", type=int, default=2, help="number of residual blocks")
    hparams.add_argument("--dropout", type=float, default=0.1, help="dropout inside each block")
    hparams.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    hparams.add_argument("--seed", type=int, default=0, help="seeds every RNG; part of the run name")
    base_trainer.add_trainer_arguments(parser)
    add_run_arguments(parser, TASK_DIR)
    return parser


def train(run: Run) -> dict[str, float]:
{%- if cookiecutter.framework == 'lightning' %}
    seed_everything(run.seed)  # the same initial weights for the same seed
    module = {{ cookiecutter.__task_class }}Module(**run.hparams)
    return base_trainer.fit(module, run)
{%- else %}
    return {{ cookiecutter.__task_class }}Trainer(run).fit()
{%- endif %}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
{%- if cookiecutter.framework == 'pytorch' %}
    base_trainer.init_distributed()
    try:
        return launch(TASK_DIR, args, parser, train)
    finally:
        base_trainer.close_distributed()
{%- else %}
    return launch(TASK_DIR, args, parser, train)
{%- endif %}


if __name__ == "__main__":
    sys.exit(main())
