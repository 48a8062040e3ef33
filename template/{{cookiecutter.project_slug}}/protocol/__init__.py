"""The run protocol (infrastructure, rarely edited): every run knows how it ended.

Infrastructure: a researcher rarely needs to edit this package. It never
imports torch at module level, so ``scripts/sweep.py`` and ``dlscaffold status``
read runs without it.

    files.py     atomic writes and tolerant reads
    naming.py    which directory a run lives in
    rundir.py    the run directory and its flag files
    lock.py      one live process per run
    cluster.py   ranks, stop signals, SLURM
    manifest.py  how to reproduce a run
    options.py   the run-control options of train.py, and argparse checks
    grid.py      the input of scripts/sweep.py: --grid options and sweep files, checked
    launch.py    skip, resume or start a run, and record how it ended
{%- if cookiecutter.framework == 'pytorch' %}
    state.py     what a training loop saves and restores (torch)
{%- else %}
    lightning.py the protocol as Lightning callbacks (torch, Lightning)
{%- endif %}
"""

from protocol.launch import CheckpointUnusable, RunDiverged, RunInterrupted, launch
from protocol.options import add_run_arguments
from protocol.rundir import Run

__all__ = ["CheckpointUnusable", "Run", "RunDiverged", "RunInterrupted", "add_run_arguments", "launch"]
