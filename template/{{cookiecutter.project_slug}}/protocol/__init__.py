"""The run protocol (infrastructure, rarely edited): every run knows how it ended.

A researcher rarely needs to edit this package. Its modules marked (torch)
import torch; the others never do, so ``scripts/sweep.py``, ``eval.py --help``
and ``dlscaffold status`` read runs without it.

    files.py       atomic writes and tolerant reads
    naming.py      which directory a run lives in
    rundir.py      the run directory and its flag files
    lock.py        one live process per run
    ranks.py       where each process of a distributed run trains, and whether it still does
    cluster.py     ranks, stop signals, SLURM, srun's tasks as DDP ranks
    manifest.py    how to reproduce a run
    options.py     the run-control options of train.py, and argparse checks
    grid.py        the input of scripts/sweep.py: --grid options and sweep files, checked
    space.py       the input of scripts/search.py: a search space, checked
    study.py       a search's study on disk: Optuna's journal, claims, settings (Optuna)
    pruning.py     a search's trial reports each epoch to its pruner (Optuna, if a trial)
    launch.py      skip, resume or start a run, and record how it ended
    evaluation.py  what every eval.py does around the task's evaluate_checkpoint
    errors.py      how a run ends other than by finishing
    checkpoint.py  checkpoint files and RNG states (torch)
    steps.py       each step's values, read once a logging period (torch)
    tracking.py    the experiment tracker (torch or Lightning)
{%- if cookiecutter.framework == 'pytorch' %}
    state.py       what a training loop saves and restores (torch)
{%- else %}
    lightning.py   the protocol as Lightning callbacks (torch, Lightning)
{%- endif %}

Imports point one way: the researcher's files (experiments/, trainers/,
layers/) use the shared research code (utils/) and this package; utils/ uses
this package; nothing here imports either of them.
"""

from protocol.errors import CheckpointUnusable, RunDiverged, RunInterrupted
from protocol.launch import launch
from protocol.options import add_run_arguments
from protocol.rundir import Run

__all__ = ["CheckpointUnusable", "Run", "RunDiverged", "RunInterrupted", "add_run_arguments", "launch"]
