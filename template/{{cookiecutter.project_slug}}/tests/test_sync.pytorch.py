"""The loop reads its values from the device once a logging period, never once a step.

On a GPU each read (``.item()``, ``.tolist()``, ``bool()``, ...) waits for
every kernel queued before it. This counts the reads the project's own code
makes in a real run of the task on the CPU, where they cost little but happen
in the same places. (torch's own reads of CPU tensors, such as AdamW's step
counters, are no sync on a GPU either, and are not counted.)
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import pytest
import torch

import trainers.{{ cookiecutter.task_name }}_trainer as task
from protocol.state import TrainState

PROJECT_ROOT = Path(__file__).resolve().parents[1]
READS = ("item", "tolist", "__bool__", "__float__", "__int__")
LOG_EVERY = 10


def test_a_run_reads_once_a_logging_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_script
) -> None:
    phase = ["train"]
    reads: collections.Counter[str] = collections.Counter()
    for name in READS:
        read = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _read=read, **kwargs: object) -> object:
            caller = Path(sys._getframe(1).f_code.co_filename)
            if caller.is_relative_to(PROJECT_ROOT) and "tests" not in caller.parts:
                reads[phase[0]] += 1
            return _read(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def outside_the_steps(function):  # validation and the epoch's books read what they need
        def wrapped(*args: object, **kwargs: object) -> object:
            phase[0] = "epoch end"
            try:
                return function(*args, **kwargs)
            finally:
                phase[0] = "train"

        return wrapped

    monkeypatch.setattr(task, "evaluate", outside_the_steps(task.evaluate))
    monkeypatch.setattr(TrainState, "end_epoch", outside_the_steps(TrainState.end_epoch))

    train = load_script("{{ cookiecutter.task_name }}", "train")
    args = ["--epochs", "2", "--log_every_n_steps", str(LOG_EVERY), "--results_dir", str(tmp_path)]
    assert train.main([*args, "--run_name", "counted"]) == 0
    steps = json.loads((tmp_path / "counted" / "progress.json").read_text())["step"]
    assert steps >= 4 * LOG_EVERY  # long enough for a read per step to show
    assert 1 <= reads["train"] <= steps // LOG_EVERY, reads
