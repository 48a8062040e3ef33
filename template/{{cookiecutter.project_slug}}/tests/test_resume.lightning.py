"""Exact resume of real tasks: a GAN with augmentation in workers, and a sharded stream.

Each test stops a task of ``tests/`` with a real signal at a fixed batch (SIGKILL
in a process of its own), resumes it, and expects what a run that was never
stopped ends with: the same weights, and for the stream every sample trained
on exactly once an epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from protocol import launch
from protocol.lightning import RunProtocol
from tests import gan_task, stream_task

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3  # of 8 batches each, for both tasks
KILLED = """
import os, signal, sys
from pathlib import Path
from protocol.lightning import RunProtocol
from tests import test_resume
task, batch, results = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
batch_end, batches = RunProtocol.on_train_batch_end, []
def die_then_batch_end(self, *args):
    batches.append(len(batches))
    if len(batches) == batch:
        os.killpg(0, signal.SIGKILL)  # the process and its loader workers, as a scheduler kills a job
    batch_end(self, *args)
RunProtocol.on_train_batch_end = die_then_batch_end
test_resume.launch_task(getattr(test_resume, task), results, "stopped")
"""


def launch_task(task: ModuleType, results: Path, name: str, accumulate_grad_batches: int = 1) -> int:
    args = argparse.Namespace(
        run_name=name,
        results_dir=results,
        force=False,
        retry_failed=False,
        learning_rate=2e-3,
        batch_size=64 if task is gan_task else 32,
        epochs=EPOCHS,
        hidden_size=16,
        seed=0,
        num_workers=2,
        accelerator="cpu",
        log_every_n_steps=50,
        accumulate_grad_batches=accumulate_grad_batches,
    )
    return launch(Path(task.__name__), args, hyperparameters(args), task.train)


def hyperparameters(args: argparse.Namespace) -> argparse.ArgumentParser:
    """What names the runs, as train.py's ``hyperparameters()`` would declare it."""
    parser = argparse.ArgumentParser(add_help=False)
    for name in ("learning_rate", "batch_size", "epochs", "hidden_size", "seed"):
        parser.add_argument(f"--{name}", type=type(getattr(args, name)), default=getattr(args, name))
    return parser


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    """The final weights of each task, never stopped."""
    results = tmp_path_factory.mktemp("reference")
    finals = {}
    for task in (gan_task, stream_task):
        assert launch_task(task, results, task.__name__) == 0
        finals[task.__name__] = weights(results / task.__name__)
    return finals


def stop_at(monkeypatch: pytest.MonkeyPatch, batch: int, signum: signal.Signals) -> None:
    batch_end = RunProtocol.on_train_batch_end
    batches = []

    def signal_then_batch_end(self: RunProtocol, *args: object) -> None:
        batches.append(len(batches))
        if len(batches) == batch:
            os.kill(os.getpid(), signum)
        batch_end(self, *args)

    monkeypatch.setattr(RunProtocol, "on_train_batch_end", signal_then_batch_end)


def assert_resumed_exactly(run_dir: Path, expected: dict[str, torch.Tensor]) -> None:
    assert (run_dir / "finished.out").exists()
    resumed = weights(run_dir)
    assert resumed.keys() == expected.keys()
    for key in expected:  # Lightning's loop may reorder float operations: equal to 1e-6
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_a_gan_stopped_mid_epoch_resumes_to_the_same_weights(
    reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: signal.Signals
) -> None:
    stop_at(monkeypatch, 11, signum)  # in the middle of the second epoch
    assert launch_task(gan_task, tmp_path, "stopped") == 128 + signum
    assert (tmp_path / "stopped" / "interrupted.out").exists()
    monkeypatch.undo()
    assert launch_task(gan_task, tmp_path, "stopped") == 0
    assert_resumed_exactly(tmp_path / "stopped", reference["tests.gan_task"])


def test_a_stop_at_an_epochs_last_batch_waits_for_its_validation(
    reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped right then, the checkpoint would resume past the epoch's validation, never run."""
    stop_at(monkeypatch, 8, signal.SIGINT)  # the first epoch's last batch
    assert launch_task(gan_task, tmp_path, "stopped") == 128 + signal.SIGINT
    history = (tmp_path / "stopped" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1]  # validated, then stopped
    monkeypatch.undo()
    assert launch_task(gan_task, tmp_path, "stopped") == 0
    history = (tmp_path / "stopped" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == list(range(1, EPOCHS + 1))
    assert_resumed_exactly(tmp_path / "stopped", reference["tests.gan_task"])


@pytest.mark.parametrize("task", [gan_task, stream_task], ids=["gan", "stream"])
def test_killed_mid_epoch_resumes_from_the_epoch_end_to_the_same_weights(
    reference: dict, tmp_path: Path, task: ModuleType
) -> None:
    """SIGKILL leaves no checkpoint of its own: the run resumes from the last epoch's end."""
    name = task.__name__.split(".")[-1]
    command = [sys.executable, "-c", KILLED, name, "11", str(tmp_path)]
    killed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert launch_task(task, tmp_path, "stopped") == 0
    assert_resumed_exactly(tmp_path / "stopped", reference[task.__name__])


def test_a_stream_stopped_mid_epoch_trains_on_every_sample_once_an_epoch(
    reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop_at(monkeypatch, 13, signal.SIGTERM)
    assert launch_task(stream_task, tmp_path, "stopped") == 128 + signal.SIGTERM
    seen = weights(tmp_path / "stopped")["seen"]
    assert sorted(set(seen.tolist())) == [1, 2]  # stopped in the second epoch
    monkeypatch.undo()
    assert launch_task(stream_task, tmp_path, "stopped") == 0
    assert weights(tmp_path / "stopped")["seen"].tolist() == [EPOCHS] * len(seen)
    assert_resumed_exactly(tmp_path / "stopped", reference["tests.stream_task"])


def test_a_stop_between_accumulated_batches_waits_for_the_optimizer_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert launch_task(stream_task, tmp_path / "reference", "accumulating", accumulate_grad_batches=2) == 0
    stop_at(monkeypatch, 13, signal.SIGTERM)  # batch 13 of 24: the optimizer steps after 14
    assert (
        launch_task(stream_task, tmp_path, "accumulating", accumulate_grad_batches=2) == 128 + signal.SIGTERM
    )
    assert "at step 7 " in (tmp_path / "accumulating" / "interrupted.out").read_text()
    monkeypatch.undo()
    assert launch_task(stream_task, tmp_path, "accumulating", accumulate_grad_batches=2) == 0
    assert weights(tmp_path / "accumulating")["seen"].tolist() == [EPOCHS] * 256
    assert_resumed_exactly(tmp_path / "accumulating", weights(tmp_path / "reference" / "accumulating"))
