"""Exact resume of real loops: a GAN with augmentation in workers, a sharded stream, accumulation.

Each test stops a task of ``tests/`` with a real signal at a fixed step (SIGKILL
in a process of its own), resumes it, and expects what a run that was never
stopped ends with: the same weights, bit for bit, and for the stream every
sample trained on exactly once an epoch.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from protocol import Run, launch
from protocol.state import TrainState
from tests import gan_task, stream_task
from utils.dataset import TensorSamples, make_loader
from utils.utils import seed_everything

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3  # of 8 steps each, for both tasks
KILLED = """
import os, signal, sys
from pathlib import Path
from protocol.state import TrainState
from tests import test_resume
task, step, results = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
train_step = TrainState.step
def step_then_die(self, **values):
    if self.global_step == step:
        os.killpg(0, signal.SIGKILL)  # the process and its loader workers, as a scheduler kills a job
    train_step(self, **values)
TrainState.step = step_then_die
test_resume.launch_task(getattr(test_resume, task), results, "stopped")
"""


def launch_task(task: ModuleType, results: Path, name: str) -> int:
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
        device="cpu",
    )
    return launch(Path(task.__name__), args, hyperparameters(args), task.train)


def hyperparameters(args: argparse.Namespace) -> argparse.ArgumentParser:
    """What names the runs, as train.py's ``hyperparameters()`` would declare it."""
    parser = argparse.ArgumentParser(add_help=False)
    for name in ("learning_rate", "batch_size", "epochs", "hidden_size", "seed"):
        parser.add_argument(f"--{name}", type=type(getattr(args, name)), default=getattr(args, name))
    return parser


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return {
        f"{name}.{key}": value
        for name, item in state.items()
        if name in ("generator", "critic", "model")
        for key, value in item.items()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    """The final weights of each task, never stopped."""
    results = tmp_path_factory.mktemp("reference")
    finals = {}
    for task in (gan_task, stream_task):
        assert launch_task(task, results, task.__name__) == 0
        finals[task.__name__] = weights(results / task.__name__)
    return finals


def stop_at(monkeypatch: pytest.MonkeyPatch, global_step: int, signum: signal.Signals) -> None:
    step = TrainState.step

    def step_then_signal(self: TrainState, **values: torch.Tensor) -> None:
        if self.global_step == global_step:
            os.kill(os.getpid(), signum)
        step(self, **values)

    monkeypatch.setattr(TrainState, "step", step_then_signal)


def assert_resumed_exactly(run_dir: Path, expected: dict[str, torch.Tensor]) -> None:
    assert (run_dir / "finished.out").exists()
    resumed = weights(run_dir)
    assert resumed.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(resumed[key], expected[key])] == []


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
    # the loader's workers ended with training: none is left to outlive (or hang) the process
    assert multiprocessing.active_children() == []


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
    seen = weights(tmp_path / "stopped")["model.seen"]
    assert sorted(set(seen.tolist())) == [1, 2]  # stopped in the second epoch
    monkeypatch.undo()
    assert launch_task(stream_task, tmp_path, "stopped") == 0
    assert weights(tmp_path / "stopped")["model.seen"].tolist() == [EPOCHS] * len(seen)
    assert_resumed_exactly(tmp_path / "stopped", reference["tests.stream_task"])


def accumulating_task(run: Run) -> dict[str, float]:
    """Gradient accumulation with ``state.step()`` per micro-batch: an optimizer step every 4."""
    seed_everything(run.args.seed)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=run.args.learning_rate)
    points = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    loader = make_loader(TensorSamples(points, points.sum(1, keepdim=True)), 8, shuffle=True, seed=0)
    saved = {"model": model, "optimizer": optimizer, "loader": loader}
    with TrainState(run, saved, main_metric="train_loss", checkpoint_interval=0) as state:
        while state.epoch < run.args.epochs:
            loader.set_epoch(state.epoch)
            for micro_batch, (x, y) in enumerate(loader, 1):
                loss = torch.nn.functional.mse_loss(model(x), y)
                (loss / 4).backward()
                if micro_batch % 4 == 0:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state.step(loss=loss)
            state.end_epoch({})
        return state.final_metrics()


def test_a_stop_between_accumulated_micro_batches_waits_for_the_optimizer_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(results: Path) -> int:
        args = argparse.Namespace(
            run_name="accumulating",
            results_dir=results,
            force=False,
            retry_failed=False,
            learning_rate=0.1,
            batch_size=8,
            epochs=2,
            hidden_size=1,
            seed=0,
        )
        return launch(Path("accumulating"), args, hyperparameters(args), accumulating_task)

    assert run(tmp_path / "reference") == 0
    stop_at(monkeypatch, 5, signal.SIGTERM)  # at micro-batch 6; the optimizer steps after 4 and 8
    assert run(tmp_path) == 128 + signal.SIGTERM
    assert "at step 8 " in (tmp_path / "accumulating" / "interrupted.out").read_text()
    monkeypatch.undo()
    assert run(tmp_path) == 0
    assert_resumed_exactly(tmp_path / "accumulating", weights(tmp_path / "reference" / "accumulating"))
