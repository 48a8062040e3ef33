"""``dlscaffold report`` turns run directories into tables (Markdown, CSV, LaTeX) and learning curves."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_python

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIGS = {  # run group -> final val_acc and val_loss of each seed
    "learning_rate-0.01": {0: (0.90, 0.30), 1: (0.92, 0.25), 2: (0.95, 0.21)},
    "learning_rate-0.1": {0: (0.61, 0.90), 1: (0.66, 0.80)},
}
EPOCHS = 4


def write(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def history_lines(final_acc: float, final_loss: float) -> list[str]:
    """Per-epoch entries as record_progress appends them, converging to the final values."""
    lines = []
    for epoch in range(1, EPOCHS + 1):
        metrics = {"val_acc": final_acc * epoch / EPOCHS, "val_loss": final_loss * EPOCHS / epoch}
        entry = {"epoch": epoch, "step": epoch * 10, "time": "2026-01-01T00:00:00+0000", "metrics": metrics}
        lines.append(json.dumps(entry))
    return lines


def add_run(results: Path, name: str, acc: float, loss: float, state: str = "finished") -> Path:
    run = results / name
    metrics = {"val_acc": acc, "val_loss": loss}
    progress = {"epoch": EPOCHS, "step": EPOCHS * 10, "metrics": metrics, "main_metric": "val_acc"}
    write(run / "hparams.json", {})
    write(run / "progress.json", progress)
    write(run / f"{state}.out", {"state": state, **progress, "reason": "RuntimeError: boom"})
    write(run / "history.jsonl", "\n".join(history_lines(acc, loss)) + "\n")
    return run


@pytest.fixture
def project(new_project) -> Path:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    for group, seeds in CONFIGS.items():
        for seed, (acc, loss) in seeds.items():
            add_run(results, f"{group}_seed-{seed}", acc, loss)
    failed = add_run(results, "learning_rate-0.01_seed-9", 0.1, 5.0, state="failed")
    with (failed / "history.jsonl").open("a") as history:  # a killed writer's partial line, then garbage
        history.write('{"epoch": 5, "step": 50, "metr\nnot json\n{"epoch": 6, "metrics": {"val_acc": NaN}}\n')
    return root


def expected_cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"


def test_report_writes_tables_and_plots(cli, project: Path) -> None:
    result = cli("report", str(project))
    assert result.exit_code == 0, result.output
    reports = project / "reports"
    assert str(reports / "report.md") in result.output

    markdown = (reports / "report.md").read_text()
    assert "| group | seeds | `val_acc` (main) | `val_loss` |" in markdown
    for group, seeds in CONFIGS.items():
        accs = [acc for acc, _ in seeds.values()]
        losses = [loss for _, loss in seeds.values()]
        row = f"| `{group}` | {len(seeds)} | {expected_cell(accs)} | {expected_cell(losses)} |"
        assert row in markdown
    assert "Left out of the table, not finished: 1 failed." in markdown
    for metric in ("val_acc", "val_loss"):
        assert f"(curves_task1_{metric}.png)" in markdown

    with (reports / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(CONFIGS)
    for group, seeds in CONFIGS.items():
        for index, metric in enumerate(("val_acc", "val_loss")):
            values = [pair[index] for pair in seeds.values()]
            row = next(row for row in rows if row["group"] == group and row["metric"] == metric)
            assert row["task"] == "task1" and int(row["seeds"]) == int(row["n"]) == len(seeds)
            assert float(row["mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row["std"]) == pytest.approx(statistics.stdev(values))
            assert row["main"] == ("yes" if metric == "val_acc" else "")

    latex = (reports / "results.tex").read_text()
    assert "\\begin{tabular}" in latex and "\\toprule" in latex and "\\bottomrule" in latex
    accs = [acc for acc, _ in CONFIGS["learning_rate-0.01"].values()]
    cell = f"${statistics.fmean(accs):.4f} \\pm {statistics.stdev(accs):.4f}$"
    assert f"learning\\_rate-0.01 & 3 & {cell}" in latex
    assert "val\\_acc" in latex and "val_acc" not in latex

    image = pytest.importorskip("matplotlib.image")
    for metric in ("val_acc", "val_loss"):
        png = reports / f"curves_task1_{metric}.png"
        assert png.read_bytes().startswith(PNG_SIGNATURE)
        pixels = image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_history_reading_keeps_the_last_entry_per_epoch_and_skips_bad_lines(tmp_path: Path) -> None:
    from dlscaffold.report import read_history

    lines = [
        {"epoch": 1, "metrics": {"acc": 0.1, "loss": 2.0}},
        {"epoch": 2, "metrics": {"acc": 0.2, "note": "text", "flag": True}},
        {"epoch": 1, "metrics": {"acc": 0.15}},  # replayed after a resume: wins
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    text += '\n[1, 2]\n{"epoch": "3", "metrics": {}}\n{"epoch": 4, "metrics": {"acc": Infinity}}\n{"epo'
    (tmp_path / "history.jsonl").write_text(text)
    assert read_history(tmp_path) == {1: {"acc": 0.15}, 2: {"acc": 0.2}}
    assert read_history(tmp_path / "missing") == {}


def test_unreadable_histories_are_left_out_with_a_note(
    cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = project / "experiments" / "task1" / "results"
    fifo = results / "learning_rate-0.1_seed-0" / "history.jsonl"
    fifo.unlink()
    os.mkfifo(fifo)
    big = results / "learning_rate-0.1_seed-1" / "history.jsonl"
    big.write_text("\n".join(history_lines(0.66, 0.8) * 20) + "\n")
    monkeypatch.setattr("dlscaffold.report.MAX_HISTORY_BYTES", big.stat().st_size - 1)

    result = cli("report", str(project))
    assert result.exit_code == 0, result.output
    markdown = (project / "reports" / "report.md").read_text()
    assert markdown.count("Note: the curves leave out") == 2
    assert "is not a regular file" in markdown and "is larger than" in markdown
    assert (project / "reports" / "curves_task1_val_acc.png").read_bytes().startswith(PNG_SIGNATURE)


def test_task_option_and_out_dir(cli, project: Path, tmp_path: Path) -> None:
    unknown = cli("report", str(project), "--task", "nosuch")
    assert unknown.exit_code == 2
    assert "no task 'nosuch' (its tasks: task1)" in unknown.output

    out = tmp_path / "elsewhere"
    result = cli("report", "--task", "task1", "--out", str(out), cwd=project / "experiments")
    assert result.exit_code == 0, result.output
    assert {"report.md", "results.csv", "results.tex"} <= {path.name for path in out.iterdir()}
    assert not (project / "reports").exists()


def test_no_runs_yet(cli, new_project) -> None:
    root = new_project().root
    result = cli("report", str(root))
    assert result.exit_code == 0, result.output
    assert "No runs yet" in result.output
    assert "No runs yet" in (root / "reports" / "report.md").read_text()


def test_names_are_escaped_for_latex_and_markdown(cli, new_project) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    add_run(results, "a%b&c#d$e{f}g~h^i\\j|k`l_seed-0", 0.5, 1.0)
    assert cli("report", str(root)).exit_code == 0
    latex = (root / "reports" / "results.tex").read_text()
    escaped = (
        "a\\%b\\&c\\#d\\$e\\{f\\}g\\textasciitilde{}h\\textasciicircum{}i\\textbackslash{}j"
        "\\textbar{}k\\textasciigrave{}l"
    )
    assert escaped in latex
    markdown = (root / "reports" / "report.md").read_text()
    assert "| ``a%b&c#d$e{f}g~h^i\\j\\|k`l`` | 1 | 0.5000 | 1.0000 |" in markdown


def test_report_never_imports_torch(project: Path) -> None:
    code = (
        "import sys; from dlscaffold.cli import main\n"
        "try:\n    main(['report', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code, str(project)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (project / "reports" / "report.md").exists()


def test_tables_without_matplotlib(project: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None  # import matplotlib raises ImportError\n"
        "from dlscaffold.cli import main\n"
        "main(['report', sys.argv[1]])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(project)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'pip install "dlscaffold[report]"' in result.stdout
    assert (project / "reports" / "results.csv").exists()
    assert "No curves" in (project / "reports" / "report.md").read_text()
    assert not list((project / "reports").glob("*.png"))


@pytest.mark.slow
def test_trained_runs_have_a_history_that_report_plots(cli, new_project) -> None:
    root = new_project(framework="pytorch").root
    for seed in (0, 1):
        args = ["experiments/task1/train.py", "--epochs", "3", "--hidden_size", "16", "--seed", str(seed)]
        trained = run_python(args, cwd=root)
        assert trained.returncode == 0, trained.stdout + trained.stderr
    runs = sorted(path for path in (root / "experiments" / "task1" / "results").iterdir() if path.is_dir())
    assert [run.name for run in runs] == ["epochs-3_hidden_size-16_seed-0", "epochs-3_hidden_size-16_seed-1"]
    for run in runs:
        entries = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        assert [entry["epoch"] for entry in entries] == [1, 2, 3]
        progress = json.loads((run / "progress.json").read_text())
        assert entries[-1]["metrics"] == progress["metrics"] and entries[-1]["step"] == progress["step"]

    result = cli("report", str(root))
    assert result.exit_code == 0, result.output
    markdown = (root / "reports" / "report.md").read_text()
    assert "| `epochs-3_hidden_size-16` | 2 |" in markdown
    pngs = sorted((root / "reports").glob("curves_task1_*.png"))
    assert {png.name for png in pngs} >= {"curves_task1_val_acc.png", "curves_task1_train_loss.png"}
    assert all(png.read_bytes().startswith(PNG_SIGNATURE) for png in pngs)


def test_a_history_starting_with_a_byte_order_mark_keeps_its_first_epoch(tmp_path: Path) -> None:
    from dlscaffold.report import read_history

    lines = history_lines(0.9, 0.3)
    (tmp_path / "history.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    assert sorted(read_history(tmp_path)) == list(range(1, EPOCHS + 1))


def test_runs_whose_names_need_escaping_keep_their_metrics_and_curves(cli, new_project) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    add_run(results, "odd\x1b[31m\u2028name_seed-0", 0.75, 0.5)
    result = cli("report", str(root))
    assert result.exit_code == 0, result.output
    markdown = (root / "reports" / "report.md").read_text()
    assert "\x1b" not in markdown and "\u2028" not in markdown
    assert "| 1 | 0.7500 | 0.5000 |" in markdown  # its final metrics, read from its real directory
    rows = list(csv.DictReader((root / "reports" / "results.csv").open()))
    assert [(row["metric"], row["mean"]) for row in rows] == [("val_acc", "0.75"), ("val_loss", "0.5")]
    assert (root / "reports" / "curves_task1_val_acc.png").read_bytes().startswith(PNG_SIGNATURE)
