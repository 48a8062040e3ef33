"""The run protocol, end to end: real training processes, real signals, real files.

Each framework gets one generated project and one uninterrupted reference run;
every other run is compared with it. Waits are on files and processes, never on
fixed sleeps alone, so a loaded machine makes the tests slower, not flaky.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FRAMEWORKS, run_cli, run_python

pytestmark = pytest.mark.slow

TRAIN = ["experiments/task1/train.py", "--epochs", "10", "--batch_size", "16", "--hidden_size", "16"]
SUFFIX = {"lightning": "ckpt", "pytorch": "pt"}
# the weights in a last checkpoint: Lightning's state_dict, or the models a plain task registered
MODELS = {"task1": ("model",), "flaky": ("model",), "gan": ("generator", "critic")}


class Project:
    """A generated project, with helpers to train its first task and read its runs."""

    def __init__(self, root: Path, framework: str) -> None:
        self.root = root
        self.framework = framework
        self.results = root / "experiments" / "task1" / "results"

    def train(self, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_python([*TRAIN, "--run_name", name, *extra], cwd=self.root)

    def start(self, name: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, *TRAIN, "--run_name", name, *extra],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_dir(self, name: str) -> Path:
        return self.results / name

    def last_checkpoint(self, name: str) -> Path:
        return self.run_dir(name) / "checkpoints" / f"last.{SUFFIX[self.framework]}"

    def weights(self, name: str, task: str = "task1") -> dict:
        import torch

        run_dir = self.root / "experiments" / task / "results" / name
        state = torch.load(
            run_dir / "checkpoints" / f"last.{SUFFIX[self.framework]}", map_location="cpu", weights_only=True
        )
        if self.framework == "lightning":
            return state["state_dict"]
        return {f"{model}.{key}": value for model in MODELS[task] for key, value in state[model].items()}

    def flags(self, name: str) -> list[str]:
        return sorted(path.name for path in self.run_dir(name).iterdir() if path.suffix in (".out", ".lock"))

    def status(self) -> dict[str, dict]:
        result = run_cli("status", str(self.root), "--json")
        assert result.exit_code == 0, result.output
        return {run["run"]: run for run in json.loads(result.output)}


def wait_for(
    condition: Callable[[], bool], process: subprocess.Popen[str] | None = None, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended before the condition held:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.02)


def assert_same_weights(project: Project, run: str, reference: str, task: str = "task1") -> None:
    import torch

    ours, theirs = project.weights(run, task), project.weights(reference, task)
    assert ours.keys() == theirs.keys()
    for key in ours:
        if project.framework == "pytorch":  # plain PyTorch resumes bit for bit
            assert torch.equal(ours[key], theirs[key]), key
        else:
            torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=0)


@pytest.fixture(scope="module", params=FRAMEWORKS)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    from dlscaffold.create import create_project

    framework = request.param
    root = create_project(
        {"project_name": "proto", "framework": framework}, tmp_path_factory.mktemp(framework), use_git=False
    ).root
    project = Project(root, framework)
    reference = project.train("reference")
    assert reference.returncode == 0, reference.stdout + reference.stderr
    return project


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGKILL])
def test_interrupted_run_resumes_to_the_same_weights(project: Project, signum: signal.Signals) -> None:
    name = f"stopped-by-{signum.name}"
    process = project.start(name)
    wait_for(lambda: project.last_checkpoint(name).exists(), process)
    process.send_signal(signum)
    output = process.communicate(timeout=180)[0]

    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        assert project.flags(name) == ["run.lock"]  # no chance to write a flag
        assert project.status()[name]["state"] == "interrupted"
        # as if it had run on a node that died: the lock names another host and has gone silent
        lock = project.run_dir(name) / "run.lock"
        lock.write_text(json.dumps({**json.loads(lock.read_text()), "host": "node-lost"}))
        os.utime(lock, (time.time() - 900, time.time() - 900))
        assert "no heartbeat" in project.status()[name]["reason"]
    else:
        assert process.returncode == 128 + signum, output
        assert project.flags(name) == ["interrupted.out"]
        interrupted = json.loads((project.run_dir(name) / "interrupted.out").read_text())
        assert interrupted["reason"].startswith(signum.name)
        assert project.status()[name]["state"] == "interrupted"

    resumed = project.train(name)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    assert project.flags(name) == ["finished.out"]
    assert_same_weights(project, name, "reference")
    history = [
        event["event"]
        for event in json.loads((project.run_dir(name) / "manifest.json").read_text())["history"]
    ]
    expected = (
        ["start", "resume", "finished"]
        if signum == signal.SIGKILL
        else ["start", "interrupted", "resume", "finished"]
    )
    assert history == expected


def test_same_seed_gives_the_same_weights_under_another_name(project: Project) -> None:
    assert project.train("twin").returncode == 0
    assert_same_weights(project, "twin", "reference")


def test_a_second_launch_of_a_live_run_is_refused(project: Project) -> None:
    name = "live"
    first = project.start(name, "--epochs", "400")
    wait_for(lambda: project.last_checkpoint(name).exists(), first)
    second = project.train(name, "--epochs", "400")
    assert second.returncode == 3
    assert "refusing to start a second copy" in second.stdout
    assert first.poll() is None  # undisturbed
    assert project.status()[name]["state"] == "running"
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=180)
    assert project.flags(name) == ["interrupted.out"]


def test_diverging_run_fails_and_is_skipped_until_retried(project: Project) -> None:
    name = "diverging"
    failed = project.train(name, "--learning_rate", "1e30")
    assert failed.returncode == 1
    assert project.flags(name) == ["failed.out"]
    record = json.loads((project.run_dir(name) / "failed.out").read_text())
    assert "RunDiverged" in record["reason"] and "at step" in record["reason"]
    assert any("Traceback" in line for line in record["traceback"])
    assert project.status()[name]["state"] == "failed"
    assert "loss became" in project.status()[name]["reason"]

    skipped = project.train(name, "--learning_rate", "1e30")
    assert skipped.returncode == 0 and "failed before" in skipped.stdout

    retried = project.train(name, "--learning_rate", "1e30", "--retry_failed")
    assert retried.returncode == 1
    archived = [path for path in project.results.iterdir() if path.name.startswith(f"{name}.")]
    assert len(archived) == 1 and (archived[0] / "failed.out").exists()


def test_finished_run_is_skipped_and_force_keeps_the_old_results(project: Project) -> None:
    finished = project.run_dir("reference") / "finished.out"
    before = finished.read_bytes()
    skipped = project.train("reference")
    assert skipped.returncode == 0 and "finished already" in skipped.stdout
    assert finished.read_bytes() == before

    forced = project.train("reference", "--force")
    assert forced.returncode == 0
    archived = [path for path in project.results.iterdir() if path.name.startswith("reference.")]
    assert len(archived) == 1 and (archived[0] / "finished.out").read_bytes() == before
    assert_same_weights(project, "reference", archived[0].name)


def test_leftovers_of_a_kill_mid_write_are_ignored(project: Project) -> None:
    name = "leftovers"
    process = project.start(name)
    wait_for(lambda: project.last_checkpoint(name).exists(), process)
    process.kill()
    process.communicate()
    checkpoints = project.run_dir(name) / "checkpoints"
    (checkpoints / f".last.{SUFFIX[project.framework]}.x1y2.tmp").write_bytes(b"half a checkpo")
    (project.run_dir(name) / "progress.json").write_text('{"epoch": 3, "ste')
    assert project.status()[name]["state"] == "interrupted"
    resumed = project.train(name)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same_weights(project, name, "reference")


def test_a_corrupted_checkpoint_fails_clearly_and_retry_starts_over(project: Project) -> None:
    name = "corrupted"
    process = project.start(name)
    wait_for(lambda: project.last_checkpoint(name).exists(), process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=180)
    project.last_checkpoint(name).write_bytes(b"not a checkpoint")

    failed = project.train(name)
    assert failed.returncode == 1
    assert project.flags(name) == ["failed.out"]
    assert project.status()[name]["reason"]

    retried = project.train(name, "--retry_failed")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert_same_weights(project, name, "reference")


GAN = ["experiments/gan/train.py", "--epochs", "8", "--batch_size", "32", "--hidden_size", "16"]


def test_a_two_optimizer_task_with_loader_workers_resumes_exactly_after_sigkill(project: Project) -> None:
    """The project's example GAN, made a task by editing only its trainer file, killed outright."""
    assert run_cli("add-task", "gan", "--project", str(project.root)).exit_code == 0
    trainer = project.root / "trainers" / "gan_trainer.py"
    trainer.write_text((project.root / "tests" / "gan_task.py").read_text())
    reference = run_python([*GAN, "--run_name", "reference", "--num_workers", "2"], cwd=project.root)
    assert reference.returncode == 0, reference.stdout + reference.stderr

    killed = project.root / "experiments" / "gan" / "results" / "killed"
    process = subprocess.Popen(
        [sys.executable, *GAN, "--run_name", "killed", "--num_workers", "2"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the loader's workers die with it
    )
    wait_for(lambda: (killed / "checkpoints" / f"last.{SUFFIX[project.framework]}").exists(), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (killed / "finished.out").exists()

    resumed = run_python([*GAN, "--run_name", "killed", "--num_workers", "2"], cwd=project.root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_weights(project, "killed", "reference", task="gan")


def test_hostile_files_in_a_run_never_hang_or_traceback(project: Project, tmp_path: Path) -> None:
    fifo_flag = project.run_dir("fifo-flag")
    fifo_flag.mkdir(parents=True)
    os.mkfifo(fifo_flag / "failed.out")
    trained = run_python([*TRAIN, "--run_name", "fifo-flag", "--epochs", "1"], cwd=project.root, timeout=120)
    assert trained.returncode == 0, trained.stdout + trained.stderr  # a FIFO is not a flag: never read
    assert project.flags("fifo-flag") == ["finished.out"]

    fifo_lock = project.run_dir("fifo-lock")
    fifo_lock.mkdir(parents=True)
    os.mkfifo(fifo_lock / "run.lock")  # not a lock anyone holds: taken over
    trained = run_python([*TRAIN, "--run_name", "fifo-lock", "--epochs", "1"], cwd=project.root, timeout=120)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert project.flags("fifo-lock") == ["finished.out"]

    (tmp_path / "a-file").write_text("not a directory")
    refused = run_python([*TRAIN, "--results_dir", str(tmp_path / "a-file")], cwd=project.root, timeout=120)
    assert refused.returncode == 1
    assert "cannot set up" in refused.stderr and "Not a directory" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert (tmp_path / "a-file").read_text() == "not a directory"

    # a device this machine lacks is an argument error, said before any run directory exists
    option = ["--accelerator", "gpu"] if project.framework == "lightning" else ["--device", "cuda"]
    unusable = [option]
    if project.framework == "pytorch":
        unusable.append(["--device", "cuda:\u0661"])  # an Arabic-Indic one: a digit to Python only
    for bad in unusable:
        refused = run_python([*TRAIN, "--run_name", "no-such-device", *bad], cwd=project.root, timeout=120)
        if (
            project.framework == "pytorch"
            and bad == ["--device", "cuda"]
            and "CUDA GPU" not in refused.stderr
        ):
            continue  # this machine has one
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert not project.run_dir("no-such-device").exists()


def test_run_files_follow_the_umask(project: Project) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    files = [path for path in project.run_dir("reference").rglob("*") if path.is_file()]
    assert len(files) >= 5
    modes = {path.relative_to(project.root).as_posix(): oct(path.stat().st_mode & 0o777) for path in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_the_same_run_name_with_other_values_is_refused_with_the_differences(project: Project) -> None:
    before = project.last_checkpoint("reference").read_bytes()
    refused = project.train("reference", "--hidden_size", "32")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "hidden_size: 16 when trained, 32 now" in refused.stdout
    assert project.last_checkpoint("reference").read_bytes() == before  # neither skipped nor resumed
    assert project.flags("reference") == ["finished.out"]


def test_an_added_hyperparameter_names_records_and_guards_the_run(project: Project, tmp_path: Path) -> None:
    if project.framework == "lightning":
        pytest.skip("train.py's hyperparameters() reach the protocol the same way in both flavours")
    root = tmp_path / "copy"
    shutil.copytree(project.root, root, ignore=shutil.ignore_patterns("results"))
    train = root / "experiments" / "task1" / "train.py"
    seed_line = '    hparams.add_argument("--seed", type=seed, default=0, help="seeds every RNG")\n'
    added = '    hparams.add_argument("--warmup_steps", type=int, default=0, help="steps of LR warm-up")\n'
    assert seed_line in train.read_text()
    train.write_text(train.read_text().replace(seed_line, seed_line + added))  # one line, nothing else
    command = [*TRAIN, "--epochs", "1", "--warmup_steps", "5"]

    first = run_python(command, cwd=root)
    assert first.returncode == 0, first.stdout + first.stderr
    (run_dir,) = (path for path in (root / "experiments" / "task1" / "results").iterdir() if path.is_dir())
    assert "warmup_steps-5" in run_dir.name  # it names the run
    assert json.loads((run_dir / "hparams.json").read_text())["warmup_steps"] == 5  # it is recorded
    other = run_python([*command, "--warmup_steps", "7", "--run_name", run_dir.name], cwd=root)
    assert other.returncode == 4, other.stdout + other.stderr  # it guards the run
    assert "warmup_steps: 5 when trained, 7 now" in other.stdout
    again = run_python(command, cwd=root)
    assert again.returncode == 0 and "finished already; skipping" in again.stdout


# the task's loop raises once, at the end of its fourth epoch, when FAIL_ONCE is set: a crash
# (out of memory, a lost file system) rather than a bug, worth continuing from the checkpoint
FAULT = {
    "pytorch": (
        "            state.end_epoch(",
        "            if state.epoch == 3 and os.environ.get('FAIL_ONCE'):\n"
        "                raise RuntimeError('a transient fault')\n",
    ),
    "lightning": (
        "    def validation_step(",
        "    def on_train_epoch_end(self) -> None:\n"
        "        if self.current_epoch == 3 and os.environ.get('FAIL_ONCE'):\n"
        "            raise RuntimeError('a transient fault')\n\n",
    ),
}


def test_a_failed_run_resumes_from_its_checkpoint_to_the_same_weights(project: Project) -> None:
    added = run_cli("add-task", "flaky", "--project", str(project.root))
    assert added.exit_code == 0, added.output
    trainer = project.root / "trainers" / "flaky_trainer.py"
    anchor, fault = FAULT[project.framework]
    source = trainer.read_text()
    assert anchor in source
    source = source.replace("import argparse\n", "import argparse\nimport os\n", 1)
    trainer.write_text(source.replace(anchor, fault + anchor, 1))
    flaky = ["experiments/flaky/train.py", *TRAIN[1:], "--epochs", "5"]  # the fault comes in epoch 4
    results = project.root / "experiments" / "flaky" / "results"

    reference = run_python([*flaky, "--run_name", "reference"], cwd=project.root)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    env = {**os.environ, "FAIL_ONCE": "1"}
    failed = subprocess.run(
        [sys.executable, *flaky, "--run_name", "crashed"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and (results / "crashed" / "failed.out").exists()
    assert "transient fault" in json.loads((results / "crashed" / "failed.out").read_text())["reason"]

    skipped = run_python([*flaky, "--run_name", "crashed"], cwd=project.root)
    assert "--resume_failed continues from its checkpoint" in skipped.stdout
    resumed = run_python([*flaky, "--run_name", "crashed", "--resume_failed"], cwd=project.root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming the failed run from its last checkpoint" in resumed.stdout
    assert (results / "crashed" / "finished.out").exists()
    assert not [
        path for path in results.iterdir() if path.name.startswith("crashed.")
    ]  # continued, not redone
    assert_same_weights(project, "crashed", "reference", task="flaky")


def test_a_diverged_run_is_not_resumed(project: Project) -> None:
    diverged = project.train("diverges", "--learning_rate", "1e30")
    assert diverged.returncode == 1
    refused = project.train("diverges", "--learning_rate", "1e30", "--resume_failed")
    assert refused.returncode == 1 and "its loss diverged" in refused.stdout
    assert "failed.out" in project.flags("diverges")


def test_eval_names_what_it_evaluates_and_refuses_what_it_cannot(project: Project) -> None:
    import shutil

    evaluate = ["experiments/task1/eval.py", "--run_dir"]
    suffix = SUFFIX[project.framework]

    unfinished = project.run_dir("copy-unfinished")
    shutil.copytree(project.run_dir("reference"), unfinished)
    (unfinished / "finished.out").rename(unfinished / "interrupted.out")
    warned = run_python([*evaluate, str(unfinished)], cwd=project.root)
    assert (
        warned.returncode == 0 and "warning: copy-unfinished has not finished (interrupted)" in warned.stdout
    )

    (unfinished / "checkpoints" / f"best.{suffix}").write_bytes(b"truncated")
    broken = run_python([*evaluate, str(unfinished)], cwd=project.root)
    assert broken.returncode == 1 and "is not a torch checkpoint" in broken.stderr

    shutil.rmtree(unfinished / "checkpoints")
    empty = run_python([*evaluate, str(unfinished)], cwd=project.root)
    assert empty.returncode == 1 and "it has no checkpoint" in empty.stderr
    for result in (broken, empty):
        assert "Traceback" not in result.stdout + result.stderr

    for seed, rate in ((0, 0.001), (1, 0.001), (2, 0.01)):  # alike names, one other configuration
        copy = project.run_dir(f"cfg_seed-{seed}")
        shutil.copytree(project.run_dir("reference"), copy)
        hparams = json.loads((copy / "hparams.json").read_text())
        (copy / "hparams.json").write_text(json.dumps({**hparams, "learning_rate": rate, "seed": seed}))
    configs = run_python(["experiments/task1/eval.py", "--all", "--match", "cfg_*"], cwd=project.root)
    assert configs.returncode == 0, configs.stdout + configs.stderr
    assert "3 runs in 2 seed groups" in configs.stdout and "cfg (n=2)" in configs.stdout

    assert (
        f"cfg_seed-0: evaluating checkpoints/best.{suffix}" in configs.stdout and "test_acc" in configs.stdout
    )
    summary = (project.results / "test_summary.csv").read_text().splitlines()
    assert summary[0].startswith("group,n,test_acc_mean,test_acc_std")
    assert sorted(line.split(",")[:2] for line in summary[1:]) == [["cfg", "2"], ["cfg'", "1"]]
