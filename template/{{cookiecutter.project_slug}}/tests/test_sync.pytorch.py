"""The loop reads its values from the device once a logging period, never once a step, and
still fails at the step, or the epoch, where the values stopped being finite.

On a GPU each read (``.item()``, ``.tolist()``, ``bool()``, ...) waits for
every kernel queued before it. This counts the reads the project's own code
makes in a real run of the task on the CPU, where they cost little but happen
in the same places. (torch's own reads of CPU tensors, such as AdamW's step
counters, are no sync on a GPU either, and are not counted.)
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
from pathlib import Path

import pytest
import torch

import trainers.{{ cookiecutter.task_name }}_trainer as task
from protocol import Run, RunDiverged
from protocol.state import TrainState
from protocol.steps import StepValues

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


def test_step_values_of_other_names_come_back_in_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = StepValues()
    values.add(1, {"loss_d": torch.tensor(0.5), "lr": 0.1})
    values.add(2, {})  # a step that reports nothing
    values.add(3, {"loss_g": torch.tensor(float("nan"))})  # a GAN's generator step
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(1) or tolist(self))
    rows = values.read()
    assert reads == [1]
    assert [step for step, _ in rows] == [1, 3]
    assert rows[0][1] == pytest.approx({"loss_d": 0.5, "lr": 0.1})
    assert math.isnan(rows[1][1]["loss_g"])
    assert values.read() == []
    with pytest.raises(TypeError, match="shape"):
        values.add(4, {"loss": torch.ones(2)})


def test_weights_gone_bad_in_an_epochs_last_steps_are_never_saved(tmp_path: Path) -> None:
    run = Run(task="t", name="nan", dir=tmp_path, args=argparse.Namespace(), hparams={})
    model = torch.nn.Linear(2, 1)
    with pytest.raises(RunDiverged, match="val_loss became nan"):
        with TrainState(run, {"model": model}, main_metric="val_acc", mode="max") as state:
            state.step(loss=torch.tensor(1.0))  # finite: the last update is what went bad
            state.end_epoch({"val_loss": math.nan, "val_acc": 0.5})
    assert not list(tmp_path.glob("checkpoints/*"))
