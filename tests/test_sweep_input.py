"""``scripts/sweep.py`` of a generated project: hostile input is refused in one line, before anything runs.

Nothing here trains: the sweeps are dry runs, submissions to a fake ``sbatch``,
or runs that are all finished or cannot launch.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dlscaffold.create import create_project

from conftest import run_python

TASK = "task1"
# should validation let a point through, the run it starts is short
TINY = ["--epochs", "1", "--batch_size", "512", "--hidden_size", "8"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = {"project_name": "sweeps", "framework": "pytorch"}
    return create_project(answers, tmp_path_factory.mktemp("sweep"), use_git=False).root


@pytest.fixture(scope="module")
def sbatch_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake ``sbatch`` first on PATH: it records its arguments and answers with a job id."""
    folder = tmp_path_factory.mktemp("fake-sbatch")
    record = folder / "arguments"
    fake = folder / "sbatch"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {shlex.quote(str(record))}\necho '4242;cluster'\n")
    fake.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:  # the sweeps run_python starts inherit it
        patch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        yield record


def sweep(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_python(["scripts/sweep.py", TASK, *args], cwd=project, timeout=60)


def written(project: Path) -> set[str]:
    """Every path under the task's results/ and slurm/: what a sweep may write."""
    task = project / "experiments" / TASK
    return {
        str(path.relative_to(task)) for folder in ("results", "slurm") for path in (task / folder).rglob("*")
    }


def assert_refused(project: Path, args: list[str], message: str) -> None:
    before = written(project)
    result = sweep(project, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage:"), result.stderr  # argparse's usage, one error
    assert lines[1].startswith("sweep.py: error: ") and message in lines[1], result.stderr
    assert written(project) == before


def write_text(text: str) -> Callable[[Path], object]:
    return lambda path: path.write_text(text, encoding="utf-8")


def write_bytes(data: bytes) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(data)


BAD_SWEEP_FILES = [
    pytest.param(None, "No such file or directory", id="missing"),
    pytest.param(Path.mkdir, "not a regular file", id="directory"),
    pytest.param(os.mkfifo, "not a regular file", id="fifo"),  # reading it would wait forever
    pytest.param(write_bytes(b" " * 1_000_001), "larger than 1000000 bytes", id="huge"),
    pytest.param(write_bytes(b'{"grid": {"seed": ["\xff"]}}'), "not UTF-8", id="not-utf8"),
    pytest.param(write_text('{"grid": {"seed": [0, 1]}'), "invalid JSON", id="truncated"),
    pytest.param(write_text("[" * 100_000 + "]" * 100_000), "nested too deeply", id="deep"),
    pytest.param(write_text('{"grid": {"seed": [0]}, "grid": {}}'), "'grid' appears twice", id="dup-top"),
    pytest.param(write_text('{"grid": {"seed": [0], "seed": [1]}}'), "'seed' appears twice", id="dup-grid"),
    pytest.param(write_text('{"grid": {"seed": [NaN]}}'), "NaN is not a number", id="nan"),
    pytest.param(write_text('{"grid": {"seed": ["\\ud800"]}}'), "is not valid text", id="lone-surrogate"),
    pytest.param(write_text('{"grid": {"seed": [0]}, "args": ["--help"]}'), "--help has no place", id="help"),
    pytest.param(write_text('{"grid": {"dropout": [-Infinity]}}'), "-Infinity is not", id="infinity"),
    pytest.param(write_text('{"grid": {"learning_rate": [1e999]}}'), "not a string or a finite", id="1e999"),
    pytest.param(
        write_text('{"grid": {"seed": [' + "1" * 5000 + "]}}"), "thousands of digits", id="long-int"
    ),
    pytest.param(write_text("[1, 2]"), "expected a JSON object", id="top-list"),
    pytest.param(write_text('{"grid": {}, "gird": {}}'), "unknown key 'gird'", id="unknown-key"),
    pytest.param(write_text('{"grid": [["seed", 0]]}'), "'grid' must be an object", id="grid-list"),
    pytest.param(write_text('{"grid": {"seed": 0}}'), "expected a list of values", id="value-not-list"),
    pytest.param(write_text('{"grid": {"seed": []}}'), "no values", id="no-values"),
    pytest.param(write_text('{"grid": {"seed": [[0, 1]]}}'), "[0, 1] is not a string", id="nested-list"),
    pytest.param(write_text('{"grid": {"seed": [{"a": 1}]}}'), "is not a string or", id="nested-object"),
    pytest.param(write_text('{"grid": {"seed": [null]}}'), "null is not a string", id="null"),
    pytest.param(write_text('{"grid": {"compile": [true]}}'), "true is a JSON boolean", id="bool"),
    pytest.param(write_text('{"grid": {"seed": [""]}}'), "an empty value", id="empty-string"),
    pytest.param(write_text('{"grid": {"seed": [1, "1"]}}'), "'1' is given twice", id="duplicate-value"),
    pytest.param(write_text('{"grid": {"--seed": [1]}}'), "not an option name", id="dashed-name"),
    pytest.param(write_text('{"grid": {"seed;ls": [1]}}'), "not an option name", id="shell-name"),
    pytest.param(write_text('{"args": "--epochs 2"}'), "'args' must be a list of strings", id="args-str"),
    pytest.param(write_text('{"args": ["--epochs", 2]}'), "'args' must be a list of strings", id="args-int"),
    pytest.param(write_text('{"grid": {"seed": ["x"]}}'), "'x' is not a whole number", id="bad-value"),
]


@pytest.mark.parametrize("make, message", BAD_SWEEP_FILES)
def test_a_bad_sweep_file_is_refused_before_anything_is_written(
    project: Path, sbatch_record: Path, tmp_path: Path, make: Callable[[Path], object] | None, message: str
) -> None:
    path = tmp_path / "sweep.json"
    if make is not None:
        make(path)
    # submitted to the fake sbatch: had the sweep accepted the file, a script would be written in slurm/
    assert_refused(project, ["--sweep_file", str(path), "--slurm", "--", *TINY], message)


BAD_OPTIONS = [
    pytest.param(["--grid", "seed"], "expected NAME=V1,V2", id="no-equals"),
    pytest.param(["--grid", "help=1"], "--help has no place", id="help"),
    pytest.param(["--grid", "seed=0", "--", "--run_name", "x\udcff"], "is not valid text", id="undecodable"),
    pytest.param(["--grid", "=1,2"], "not an option name", id="no-name"),
    pytest.param(["--grid", "seed="], "an empty value", id="no-values"),
    pytest.param(["--grid", "seed=0,,1"], "an empty value", id="empty-value"),
    pytest.param(["--grid", "seed=0,1,0"], "'0' is given twice", id="duplicate-value"),
    pytest.param(["--grid", "seed=0", "--grid", "seed=1"], "--grid seed is given twice", id="duplicate-name"),
    pytest.param(["--grid", "lr-max=1"], "not an option name", id="dashed-name"),
    pytest.param(["--grid", "$(id)=1"], "not an option name", id="shell-name"),
    pytest.param(["--grid", "nosuch=1"], "unrecognized arguments: --nosuch 1", id="unknown-option"),
    pytest.param(["--grid", "learning=0.1"], "unrecognized arguments: --learning", id="abbreviation"),
    pytest.param(
        ["--grid", "learning_rate=0.01,abc"], "point --learning_rate abc: train.py refuses", id="last-value"
    ),
    pytest.param(["--grid", "seed=-1"], "a seed is between", id="out-of-range"),
    pytest.param(["--grid", "learning_rate=0.1,0.10"], "are the same run", id="same-run"),
    pytest.param(["--grid", "seed=0,1", "--", "--run_name", "x"], "are the same run, x", id="run-name"),
    pytest.param(["--grid", "seed=0", "--", "--epochs", "zz"], "argument --epochs", id="bad-extra-arg"),
    pytest.param(
        [
            "--grid",
            f"seed={','.join(map(str, range(101)))}",
            "--grid",
            f"depth={','.join(map(str, range(100)))}",
        ],
        "the grid has 10100 points; a sweep runs at most 10000",
        id="too-many-points",
    ),
    pytest.param(["--workers", "0"], "argument --workers", id="workers"),
    pytest.param(["--workers", "two"], "argument --workers", id="workers-text"),
    pytest.param(["--gpus_per_task", "-1"], "argument --gpus_per_task", id="gpus"),
    pytest.param(["--cpus_per_task", "0"], "argument --cpus_per_task", id="cpus"),
    pytest.param(["--nodes", "0"], "argument --nodes", id="nodes"),
    pytest.param(["--nodes", "2", "--gpus_per_task", "1"], "use --gpus_per_node", id="gpus-per-task-ddp"),
    pytest.param(
        ["--gpus_per_node", "2", "--tasks_per_node", "4"], "one process per GPU", id="tasks-not-gpus"
    ),
    pytest.param(["--tasks_per_node", "0"], "argument --tasks_per_node", id="tasks"),
    pytest.param(["--gpus_per_node", "-2"], "argument --gpus_per_node", id="gpus-per-node"),
    pytest.param(
        ["--gpus_per_node", "4", "--gpus_per_task", "1"], "not allowed with argument", id="gpus-twice"
    ),
    pytest.param(["--warning_seconds", "-5"], "argument --warning_seconds", id="warning-negative"),
    pytest.param(["--warning_seconds", "70000"], "at most 65535", id="warning-too-long"),
    pytest.param(["--time", "1:00:00\n#SBATCH --wrap=id"], "'1:00:00\\n#SBATCH", id="time-newline"),
    pytest.param(["--time", "1:00;id"], "not a SLURM time", id="time-command"),
    pytest.param(["--time", "\u0661:\u0660\u0660"], "not a SLURM time", id="time-arabic-digits"),
    pytest.param(["--time", "4h"], "not a SLURM time", id="time-unit"),
    pytest.param(["--partition", "gpu\n#SBATCH --wrap=id"], "not a partition", id="partition-newline"),
    pytest.param(["--partition", "gpu long"], "not a partition", id="partition-space"),
    pytest.param(["--partition", "$(id)"], "not a partition", id="partition-command"),
    pytest.param(["--mem", "16G\n#SBATCH --wrap=id"], "not a SLURM memory", id="mem-newline"),
    pytest.param(["--mem", "16GB"], "not a SLURM memory", id="mem-unit"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_bad_options_are_refused_before_anything_is_written(
    project: Path, sbatch_record: Path, options: list[str], message: str
) -> None:
    grid = [] if "--grid" in options else ["--grid", "seed=0"]
    split = options.index("--") if "--" in options else len(options)
    train_args = options[split + 1 :] or TINY
    assert_refused(project, [*grid, *options[:split], "--slurm", "--", *train_args], message)


def test_a_bad_last_point_stops_a_local_sweep_before_the_first_run(project: Path) -> None:
    assert_refused(project, ["--grid", "seed=0,1,2,x", "--", *TINY], "point --seed x: train.py refuses it")


@pytest.mark.parametrize("task", ["../task1", "task1/../task1", "nosuch"])
def test_an_unknown_task_is_refused(project: Path, task: str) -> None:
    result = run_python(["scripts/sweep.py", task, "--grid", "seed=0", "--dry-run"], cwd=project)
    assert result.returncode == 2 and "no task" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_project_path_an_sbatch_line_cannot_hold_is_refused(
    tmp_path_factory: pytest.TempPathFactory, sbatch_record: Path
) -> None:
    folder = tmp_path_factory.mktemp("with space")
    root = create_project({"project_name": "spaced", "framework": "pytorch"}, folder, use_git=False).root
    assert_refused(root, ["--grid", "seed=0", "--slurm"], "which an #SBATCH line cannot carry")


def dry_run_commands(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert result.returncode == 0, result.stdout + result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def test_sweep_file_values_keep_their_text(project: Path, tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    grid = {"seed": ["01", 2], "learning_rate": [1e-05, 0.5]}
    path.write_text(json.dumps({"grid": grid, "args": ["--epochs", "2"]}))
    commands = dry_run_commands(sweep(project, "--sweep_file", str(path), "--dry-run"))
    assert [command[2:] for command in commands] == [
        ["--epochs", "2", "--seed", seed, "--learning_rate", rate]
        for seed in ("01", "2")
        for rate in ("1e-05", "0.5")
    ]
    # a comma inside a string is part of the one value, which train.py then refuses as a number
    path.write_text(json.dumps({"grid": {"dropout": ["0.1,0.2"]}}))
    assert_refused(project, ["--sweep_file", str(path), "--dry-run"], "argument --dropout: '0.1,0.2' is not")


def test_the_command_line_grid_replaces_the_sweep_files(project: Path, tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"grid": {"seed": [0, 1], "depth": [1, 3]}}))
    commands = dry_run_commands(sweep(project, "--sweep_file", str(path), "--grid", "seed=7", "--dry-run"))
    assert [command[2:] for command in commands] == [
        ["--seed", "7", "--depth", "1"],
        ["--seed", "7", "--depth", "3"],
    ]
    assert "replaces" in sweep(project, "--help").stdout


def test_dry_run_commands_split_back_into_the_arguments(project: Path) -> None:
    value = "a b;$(touch pwned)`id`'\"&|*"
    commands = dry_run_commands(sweep(project, "--grid", f"run_name={value}", "--dry-run"))
    assert commands == [
        [sys.executable, str(project / "experiments" / TASK / "train.py"), "--run_name", value]
    ]
    assert not list(project.rglob("pwned"))


def test_a_hostile_value_is_one_literal_argument_in_the_sbatch_script(
    project: Path, sbatch_record: Path
) -> None:
    name = "a b;$(touch pwned)`touch pwned`'\"&|*"
    results_dir = "r\n$(touch pwned)\n'"
    options = ["--slurm", "--partition", "gpu", "--mem", "16G"]
    result = sweep(project, "--grid", f"run_name={name}", *options, "--", "--results_dir", results_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    arguments = sbatch_record.read_text().splitlines()
    assert arguments[0] == "--parsable"
    script = Path(arguments[1])
    text = script.read_text()
    header = text[: text.index("\ncd ")].splitlines()
    assert header[0] == "#!/bin/bash" and all(line.startswith("#SBATCH --") for line in header[1:])
    assert "#SBATCH --partition=gpu" in header and "#SBATCH --mem=16G" in header

    expected = [
        "srun",  # one process here; with --nodes or --tasks_per_node, one per rank
        "--cpus-per-task=1",
        sys.executable,
        str(project / "experiments" / TASK / "train.py"),
        *["--results_dir", results_dir, "--run_name", name],
    ]
    # as the shell-lexing rules read it: the case body is "0) exec <command> ;;"
    body = shlex.split(text[text.index(" in\n") + 4 : text.rindex("esac")])
    assert body == ["0)", "exec", *expected, ";;"]
    # and as bash reads it: the exec'd program replaced by printf, which shows the arguments it got
    shown = text.replace(" exec ", " exec printf '%s\\0' ")
    run = subprocess.run(
        ["bash", "-c", shown], env={**os.environ, "SLURM_ARRAY_TASK_ID": "0"}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\0")[:-1] == expected
    assert not list(project.rglob("pwned"))
    script.unlink()


def test_malformed_flag_and_progress_files_do_not_break_the_summary(project: Path, tmp_path: Path) -> None:
    huge = "1" * 400
    runs = {  # flag finished.out, progress.json: hand-edited, or from another version of the code
        "0": ("[1, 2]", '"text"'),
        "1": ('{"metrics": "abc", "reason": ["x"]}', '{"main_metric": "val_acc", "metrics": [1]}'),
        "2": ('{"metrics": {"val_acc": ' + huge + "}}", '{"main_metric": "val_acc"}'),
        "3": ('{"metrics": {"val_acc": NaN}}', '{"main_metric": "val_acc"}'),
        "4": ('{"metrics": {"val_acc": 0.5}}', '{"main_metric": ["val_acc"]}'),
        "5": ('{"metrics": {"val_acc": 0.25}, "reason": "one\\ntwo"}', '{"main_metric": "val_acc"}'),
        "6": ("{not json", "\x00\xff"),
    }
    for seed, (flag, progress) in runs.items():
        run_dir = tmp_path / f"seed-{seed}"
        run_dir.mkdir()
        (run_dir / "finished.out").write_text(flag)
        (run_dir / "progress.json").write_text(progress)
    result = sweep(project, "--grid", f"seed={','.join(runs)}", "--", "--results_dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr  # every run is finished: nothing trains
    assert "Traceback" not in result.stderr
    table = result.stdout[result.stdout.index("RUN") :].splitlines()
    assert len(table) == 1 + len(runs)
    rows = {line.split()[0]: line for line in table[1:]}
    assert rows["seed-3"].split()[2] in ("val_acc=nan", "-")  # as read_json sees NaN: a value, or malformed
    assert "val_acc=0.2500" in rows["seed-5"] and "one\\ntwo" in rows["seed-5"]
    assert all(" - " in rows[f"seed-{seed}"] or rows[f"seed-{seed}"].endswith("-") for seed in "01246")


def test_a_run_that_cannot_launch_is_reported_and_the_others_go_on(project: Path, tmp_path: Path) -> None:
    names = [f"batch_size-512_epochs-1_hidden_size-8_seed-{seed}" for seed in (0, 1)]
    for name in names:
        (tmp_path / name).write_text("a file where the run directory goes")
    result = sweep(project, "--grid", "seed=0,1", "--", "--results_dir", str(tmp_path), *TINY)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert all(f"could not launch {name}: " in result.stderr for name in names), result.stderr
    assert result.stdout.count("incomplete") == 2


def test_nodes_without_slurm_are_refused(project: Path) -> None:
    assert_refused(project, ["--nodes", "2", "--", *TINY], "describe SLURM jobs: add --slurm")


@pytest.mark.parametrize("framework", ["pytorch", "lightning"])
def test_a_job_over_nodes_starts_one_process_per_gpu_on_each(
    tmp_path_factory: pytest.TempPathFactory, sbatch_record: Path, framework: str
) -> None:
    folder = tmp_path_factory.mktemp("layout")
    root = create_project({"project_name": "layout", "framework": framework}, folder, use_git=False).root
    layout = ["--slurm", "--nodes", "2", "--gpus_per_node", "4"]
    result = sweep(root, "--grid", "seed=0,1", *layout, "--", *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    text = Path(sbatch_record.read_text().splitlines()[1]).read_text()
    header = [line for line in text.splitlines() if line.startswith("#SBATCH ")]
    for line in ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--array=0-1"]:
        assert f"#SBATCH {line}" in header, header
    assert not any("gpus-per-task" in line for line in header)
    commands = [shlex.split(line)[1:-1] for line in text.splitlines() if line.startswith("  ")]  # 0) ... ;;
    assert all(command[:2] == ["exec", "srun"] for command in commands), commands
    # Lightning learns the layout from its options; plain PyTorch from srun's variables
    told = ["--devices 4 --num_nodes 2" in shlex.join(command) for command in commands]
    assert told == [framework == "lightning"] * 2, commands
    if framework == "lightning":
        clash = ["--grid", "seed=0", *layout, "--", *TINY, "--devices", "2"]
        assert_refused(root, clash, "--devices follow from --tasks_per_node and --nodes")
