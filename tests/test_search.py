"""Hyperparameter searches of a generated project: Optuna studies whose trials are runs.

Real Optuna and real training on the example task: a search killed at random
instants and relaunched completes exactly its trials, none trained twice; the
median pruner stops a bad trial in both flavours; a changed space, a value
train.py refuses and malformed spaces stop the search before anything runs;
``dlscaffold status`` and ``report`` show the study.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import FRAMEWORKS, run_cli, run_python

optuna = pytest.importorskip("optuna")

FAST = ["--batch_size", "128"]
SPACE = {
    "learning_rate": {"type": "float", "low": 1e-3, "high": 0.05, "log": True},
    "hidden_size": {"type": "int", "low": 16, "high": 48, "step": 16},
}


@pytest.fixture(scope="module", params=FRAMEWORKS)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dlscaffold.create import create_project

    answers = {"project_name": "tune", "framework": request.param}
    return create_project(answers, tmp_path_factory.mktemp(request.param), use_git=False).root


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dlscaffold.create import create_project

    answers = {"project_name": "tune", "framework": "pytorch"}
    return create_project(answers, tmp_path_factory.mktemp("plain"), use_git=False).root


def write_space(root: Path, name: str, space: Any) -> Path:
    path = root / f"{name}.json"
    path.write_text(json.dumps(space))
    return path


def search_command(space: Path, *options: str) -> list[str]:
    return ["scripts/search.py", "task1", "--space", str(space), *options]


def load_trials(root: Path, study: str) -> list[Any]:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = root / "experiments" / "task1" / "searches" / study / "journal.log"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def events(run_dir: Path) -> list[str]:
    return [entry["event"] for entry in json.loads((run_dir / "manifest.json").read_text())["history"]]


def results(root: Path) -> Path:
    return root / "experiments" / "task1" / "results"


def wait_for_training(root: Path, study: str, timeout: float = 60) -> None:
    """Until some trial's train.py has started its loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in results(root).glob(f"{study}-trial*/stdout.log"):
            if "training in" in log.read_text(errors="replace"):
                return
        time.sleep(0.2)
    raise AssertionError("no trial started training")


@pytest.mark.slow
def test_a_search_killed_at_random_instants_completes_exactly_its_trials(plain: Path) -> None:
    """SIGINT to everything (trials checkpoint), SIGKILL of the search alone (its trials go on)
    and SIGKILL of everything (no flag at all), then relaunches: 12 complete trials, no more."""
    space = write_space(plain, "killed", SPACE)
    options = ["--trials", "12", "--workers", "2", "--pruner", "none"]
    train = [*FAST, "--epochs", "1", "--checkpoint_interval", "0"]
    command = search_command(space, *options, "--", *train)
    seed = int(os.environ.get("SEARCH_KILL_SEED", random.randrange(1_000_000)))
    chance = random.Random(seed)
    print(f"kill instants drawn with seed {seed} (SEARCH_KILL_SEED)")
    for how in ("interrupt", "kill search", "kill all", "kill search"):
        search = subprocess.Popen(
            [sys.executable, *command],
            cwd=plain,
            start_new_session=True,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if how == "interrupt":
            wait_for_training(plain, "killed")  # mid-epoch: the trial checkpoints and resumes later
        else:
            time.sleep(chance.uniform(0.5, 5.0))
        if how == "interrupt":
            os.killpg(search.pid, signal.SIGINT)
        elif how == "kill search":
            search.kill()
        else:
            os.killpg(search.pid, signal.SIGKILL)
        output, _ = search.communicate(timeout=120)
        print(f"--- {how}\n{output}")
        assert "Traceback" not in output
    final = run_python(command, cwd=plain, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "12 of 12 trials done" in final.stdout

    trials = load_trials(plain, "killed")
    assert len(trials) == 12  # an interrupted trial went on as itself, never as a new one
    assert {trial.state.name for trial in trials} == {"COMPLETE"}
    runs = sorted(path for path in results(plain).iterdir() if path.name.startswith("killed-trial"))
    assert [run.name for run in runs] == [f"killed-trial{number:03d}" for number in range(12)]
    resumed = 0
    for trial, run in zip(trials, runs):
        assert (run / "finished.out").is_file()
        hparams = json.loads((run / "hparams.json").read_text())
        assert {name: hparams[name] for name in trial.params} == trial.params  # never re-sampled
        history = events(run)
        assert history.count("finished") == 1  # trained to the end once
        if "interrupted" in history:  # a checkpoint existed from then on: resumed, never restarted
            after = history[history.index("interrupted") :]
            assert "start" not in after and "resume" in after
            resumed += 1
    assert resumed >= 1, "the SIGINT round interrupts a trial mid-epoch"

    # what dlscaffold status and report say of it, reading files only
    status = run_cli("status", str(plain))
    assert status.exit_code == 0, status.output
    line = next(line for line in status.output.splitlines() if line.split()[:2] == ["task1", "killed"])
    assert line.split()[2:6] == ["12/12", "12", "0", "0"]
    best = max(trials, key=lambda trial: trial.value)
    assert f"(trial {best.number}, killed-trial{best.number:03d})" in line
    report = run_cli("report", str(plain))
    assert report.exit_code == 0, report.output
    markdown = (plain / "reports" / "report.md").read_text()
    assert "### task1: killed" in markdown and f"`killed-trial{best.number:03d}`" in markdown
    assert (plain / "reports" / "search_task1_killed.png").stat().st_size > 1000

    # a last journal line a full disk cut short is cut off; the options' order and spelling,
    # and how to run (--device), are not the search's identity; nothing trains again
    journal = plain / "experiments" / "task1" / "searches" / "killed" / "journal.log"
    with journal.open("ab") as handle:
        handle.write(b'{"op_code": 4, "work')
    reordered = ["--epochs=1", "--checkpoint_interval", "0", "--batch_size", "128", "--device", "cpu"]
    for _ in range(2):  # the second launch would read the first one's append glued to the cut line
        again = run_python(search_command(space, *options, "--", *reordered), cwd=plain)
        assert again.returncode == 0 and "start" not in again.stdout, again.stdout + again.stderr
    assert journal.read_bytes().endswith(b"\n")

    # the same study with other settings is another search: refused, nothing touched
    before = journal.read_bytes()
    changed = {**SPACE, "dropout": {"type": "float", "low": 0.0, "high": 0.3}}
    (plain / "killed.json").write_text(json.dumps(changed))
    refused = run_python(search_command(space, *options, "--seed", "1", "--", *train), cwd=plain)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "space:" in refused.stderr and "seed: 0 when started, 1 now" in refused.stderr
    assert "Traceback" not in refused.stderr and journal.read_bytes() == before


@pytest.mark.slow
def test_the_median_pruner_stops_a_bad_trial(project: Path) -> None:
    """Trials alternate a good and a hopeless learning rate (the random sampler's draws for seed
    2): once a good trial is complete, a hopeless one stops after its first epoch, pruned."""
    space = write_space(
        project, "pruning", {"learning_rate": {"type": "categorical", "choices": [0.02, 1e-7]}}
    )
    command = search_command(space, "--trials", "3", "--sampler", "random", "--seed", "2")
    command += ["--pruner", "median", "--startup_trials", "1", "--", *FAST, "--epochs", "3"]
    result = run_python(command, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = load_trials(project, "pruning")
    pruned = 0
    for trial in trials:
        run = results(project) / f"pruning-trial{trial.number:03d}"
        epochs = [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()]
        good_before = any(
            earlier.params["learning_rate"] == 0.02 and earlier.number < trial.number for earlier in trials
        )
        if trial.params["learning_rate"] == 1e-7 and good_before:
            assert trial.state.name == "PRUNED" and (run / "pruned.out").is_file()
            assert epochs == [1] and "pruned" in events(run)
            pruned += 1
        else:
            assert trial.state.name == "COMPLETE" and epochs == [1, 2, 3]
    assert pruned >= 1
    status = run_cli("status", str(project))
    assert any(
        line.split()[1:3] == [f"pruning-trial{n:03d}", "pruned"]
        for n in range(3)
        for line in status.output.splitlines()
    )
    line = next(line for line in status.output.splitlines() if line.split()[:2] == ["task1", "pruning"])
    assert line.split()[2:6] == ["3/3", str(3 - pruned), str(pruned), "0"]  # pruned, never failed
    again = run_python(command, cwd=project)  # done: nothing trains again
    assert again.returncode == 0 and "start" not in again.stdout and "3 of 3 trials done" in again.stdout


BAD_SPACES = {
    "a value train.py refuses": ({"hidden_size": {"type": "int", "low": 0, "high": 8}}, "train.py refuses"),
    "no such hyperparameter": ({"learning_rat": {"type": "float", "low": 0.1, "high": 1}}, "not one of"),
    "log scale from 0": ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, "low > 0"),
    "log and step": (
        {"hidden_size": {"type": "int", "low": 1, "high": 8, "log": True, "step": 2}},
        "exclude",
    ),
    "low above high": ({"dropout": {"type": "float", "low": 0.5, "high": 0.1}}, "below high"),
    "a fraction as an int": ({"depth": {"type": "int", "low": 1, "high": 2.5}}, "whole numbers"),
    "no choices": ({"depth": {"type": "categorical", "choices": []}}, "non-empty"),
    "a boolean choice": ({"depth": {"type": "categorical", "choices": [True]}}, "a string or a number"),
    "a repeated choice": ({"depth": {"type": "categorical", "choices": [1, "1"]}}, "given twice"),
    "an unknown key": ({"depth": {"type": "int", "low": 1, "high": 3, "lo": 1}}, "not lo"),
    "no type": ({"depth": {"low": 1, "high": 3}}, '"type" must be'),
    "not an object": ([1, 2], "expected a JSON object"),
}


def test_bad_input_stops_the_search_before_anything_runs(plain: Path) -> None:
    searches = plain / "experiments" / "task1" / "searches"
    for name, (space, message) in BAD_SPACES.items():
        path = write_space(plain, "bad", space)
        result = run_python(search_command(path, "--trials", "2"), cwd=plain)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
    good = write_space(plain, "bad", SPACE)
    for options, message in [
        (["--", "--run_name", "x"], "--run_name has no place"),
        (["--", "--hidden_size", "8"], "both in the space and after --"),
        (["--", "--epochs", "zero"], "train.py refuses"),
        (["--slurm"], "--slurm and --parallel go together"),
        (["--study", "../up"], "not a study name"),
    ]:
        result = run_python(search_command(good, "--trials", "2", *options), cwd=plain)
        assert result.returncode == 2 and message in result.stderr, (options, result.stderr)
    (plain / "bad.json").write_text('{"depth": {"type": "int", "low": 1, "high": NaN}}')
    result = run_python(search_command(plain / "bad.json", "--trials", "2"), cwd=plain)
    assert result.returncode == 2 and "NaN" in result.stderr
    good = write_space(plain, "good", SPACE)
    dry = run_python(search_command(good, "--trials", "2", "--dry-run", "--", "--epochs", "1"), cwd=plain)
    assert dry.returncode == 0 and "--learning_rate '<learning_rate>'" in dry.stdout, dry.stdout
    assert not (searches / "bad").exists() and not (searches / "good").exists()  # nothing written
    assert not list(results(plain).glob("bad-trial*")) and not list(results(plain).glob("good-trial*"))


@pytest.mark.slow
def test_failed_trials_are_retried_once_and_never_wedge_the_search(plain: Path) -> None:
    """Every trial diverges (a learning rate of 1e30): the search stops at --max_failed; resuming
    them is refused by train.py and recorded, not retried forever; two --retry_failed launches at
    once retry each failed trial once between them."""
    space = write_space(plain, "diverges", {"learning_rate": {"type": "categorical", "choices": [1e30]}})
    command = search_command(space, "--trials", "2", "--max_failed", "2")
    train = ["--", *FAST, "--epochs", "2"]
    first = run_python([*command, *train], cwd=plain)
    assert first.returncode == 1 and "2 trials failed: no more are added" in first.stdout, first.stdout
    resumed = run_python([*command, "--resume_failed", *train], cwd=plain)
    assert resumed.returncode == 1 and resumed.stdout.count("resume   trial") == 2, resumed.stdout
    trials = load_trials(plain, "diverges")
    assert [trial.state.name for trial in trials] == ["FAIL"] * 4  # refused to resume: failed, not running
    assert "cannot resume" in (results(plain) / "diverges-trial000" / "stdout.log").read_text()
    plain_relaunch = run_python([*command, *train], cwd=plain)
    assert plain_relaunch.returncode == 1  # nothing trains: no failed trial resumes, no new one
    assert not [line for line in plain_relaunch.stdout.splitlines() if line.startswith(("start", "resume"))]
    launches = [
        subprocess.Popen(
            [sys.executable, *command, "--retry_failed", *train],
            cwd=plain,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    for launch in launches:
        output, _ = launch.communicate(timeout=300)
        assert launch.returncode == 1 and "Traceback" not in output, output
    retried = [
        trial.user_attrs["retry_of"]
        for trial in load_trials(plain, "diverges")
        if "retry_of" in trial.user_attrs
    ]
    assert sorted(retried) == sorted(set(retried)), retried  # never twice
    assert {0, 1} <= set(retried)  # --resume_failed retried trials 0 and 1 as trials 2 and 3
