"""Exact resume of a loop with two models, two optimizers, a scheduler and loader workers.

Each test stops the small GAN of ``gan_task.py`` with a real signal at a fixed
step, resumes it, and expects the same final weights as a run that was never
stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import pytest
import torch

from protocol import launch
from protocol.lightning import RunProtocol
from tests import gan_task


def launch_gan(results: Path, name: str) -> int:
    args = argparse.Namespace(
        run_name=name,
        results_dir=results,
        force=False,
        retry_failed=False,
        learning_rate=2e-3,
        batch_size=64,
        epochs=3,
        hidden_size=16,
        seed=0,
        num_workers=2,
        accelerator="cpu",
        log_every_n_steps=50,
    )
    return launch(Path("gan"), args, hyperparameters(args), gan_task.train)


def hyperparameters(args: argparse.Namespace) -> argparse.ArgumentParser:
    """What names the GAN's runs, as train.py's ``hyperparameters()`` would declare it."""
    parser = argparse.ArgumentParser(add_help=False)
    for name in ("learning_rate", "batch_size", "epochs", "hidden_size", "seed"):
        parser.add_argument(f"--{name}", type=type(getattr(args, name)), default=getattr(args, name))
    return parser


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    results = tmp_path_factory.mktemp("reference")
    assert launch_gan(results, "reference") == 0
    return weights(results / "reference")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_stopped_mid_epoch_resumes_to_the_same_weights(
    reference: dict[str, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: signal.Signals,
) -> None:
    batch_end = RunProtocol.on_train_batch_end
    batches = []

    def signal_then_batch_end(self: RunProtocol, *args: object) -> None:
        batches.append(len(batches))
        if len(batches) == 11:  # in the middle of the second epoch (8 batches an epoch)
            os.kill(os.getpid(), signum)
        batch_end(self, *args)

    monkeypatch.setattr(RunProtocol, "on_train_batch_end", signal_then_batch_end)
    assert launch_gan(tmp_path, "stopped") == 128 + signum
    assert (tmp_path / "stopped" / "interrupted.out").exists()
    monkeypatch.undo()

    assert launch_gan(tmp_path, "stopped") == 0
    assert (tmp_path / "stopped" / "finished.out").exists()
    resumed = weights(tmp_path / "stopped")
    assert resumed.keys() == reference.keys()
    for key in reference:  # Lightning's loop may reorder float operations: equal to 1e-6
        torch.testing.assert_close(resumed[key], reference[key], atol=1e-6, rtol=0)
