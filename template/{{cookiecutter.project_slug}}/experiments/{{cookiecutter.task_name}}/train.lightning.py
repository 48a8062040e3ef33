r"""Train {{ cookiecutter.task_name }}.

From the project root:

    python experiments/{{ cookiecutter.task_name }}/train.py \
        --learning_rate 0.001 --batch_size 32 --epochs 20 --hidden_size 128
    python experiments/{{ cookiecutter.task_name }}/train.py \
        --accelerator gpu --devices 2 --strategy ddp --precision bf16-mixed

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
sys.path.insert(0, str(TASK_DIR.parents[1]))  # the project root: makes `protocol`, `trainers` importable

from protocol import add_run_arguments, launch
from protocol.options import (
    HelpFormatter,
    devices,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    seed,
)


def hyperparameters() -> argparse.ArgumentParser:
    """The options that define a run, and only those: add yours here.

    Each names the run's directory (when it differs from its default), is saved
    in hparams.json, must match when the run is relaunched, and is what eval.py
    rebuilds the model from. Every other option (devices, workers) never renames a run.
    """
    parser = argparse.ArgumentParser(add_help=False)
    hparams = parser.add_argument_group("hyperparameters (they name the run)")
    hparams.add_argument("--learning_rate", type=positive_float, default=1e-3, help="AdamW step size")
    hparams.add_argument("--batch_size", type=positive_int, default=32, help="examples per step")
    hparams.add_argument("--epochs", type=positive_int, default=20, help="passes over the training set")
    hparams.add_argument("--hidden_size", type=positive_int, default=128, help="width of the residual MLP")
    hparams.add_argument("--depth", type=non_negative_int, default=2, help="number of residual blocks")
    hparams.add_argument("--dropout", type=probability, default=0.1, help="dropout inside each block")
    hparams.add_argument("--weight_decay", type=non_negative_float, default=0.01, help="AdamW weight decay")
    hparams.add_argument("--seed", type=seed, default=0, help="seeds every RNG")
    return parser


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: --device must not quietly mean --devices, nor --lr --learning_rate
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormatter, allow_abbrev=False, parents=[hyperparameters()]
    )
    how = parser.add_argument_group("how to run: pl.Trainer options (they do not change the run's name)")
    how.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda", "mps", "tpu"], default="auto")
    how.add_argument("--devices", type=devices, default="auto", help="number of devices, a list, or auto")
    how.add_argument("--strategy", default="auto", help="auto, ddp, fsdp, ... (default: auto)")
    how.add_argument("--num_nodes", type=positive_int, default=1, help="machines taking part")
    how.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"],
        default="32-true",
        help="mixed precision: bf16-mixed on recent GPUs and CPUs, 16-mixed on older GPUs",
    )
    how.add_argument(
        "--compile", action="store_true", help="torch.compile the module (slow start, fast steps)"
    )
    how.add_argument("--num_workers", type=non_negative_int, default=0, help="DataLoader worker processes")
    how.add_argument(
        "--log_every_n_steps",
        type=positive_int,
        default=50,
        help="steps between reads of the training metrics from the device: logged, checked for NaN "
        "and, under DDP, when a stop signal takes effect",
    )
    add_run_arguments(parser, TASK_DIR)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # imported here, not at the top: scripts/sweep.py reads build_parser() without loading torch
    from trainers import base_trainer
    from trainers.{{ cookiecutter.task_name }}_trainer import train

    problem = base_trainer.trainer_problem(args)
    if problem:  # said now, before a run directory exists, not as a failed run
        parser.error(problem)
    with base_trainer.distributed(args.accelerator):  # joins the process group under srun or torchrun
        return launch(TASK_DIR, args, hyperparameters(), train)


if __name__ == "__main__":
    sys.exit(main())
