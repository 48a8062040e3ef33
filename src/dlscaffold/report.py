"""``dlscaffold report``: a project's results as tables to paste and curves to look at.

It reads what the runs wrote, through :mod:`dlscaffold.runs` (flags and
``progress.json``) and each run's ``history.jsonl`` (one JSON line per epoch),
as possibly hostile, like ``status``: a malformed line, a NaN, a huge file or a
FIFO is left out, never fatal. It writes into one directory, each file whole or
not at all::

    report.md                     per task: the results table and the curves
    results.csv                   the same numbers, one row per task, group and metric
    results.tex                   a booktabs tabular per task, names escaped for LaTeX
    curves_<task>_<metric>.png    per epoch: each group's mean over its seeds, shaded min..max
    search_<task>_<study>.png     per search (scripts/search.py): each trial's value, and the best so far

A group is the runs that differ only by their seed (:func:`dlscaffold.runs.seed_groups`).
Only finished runs count in the tables; curves come from every run with a
history. matplotlib draws the curves when it is installed (the ``report``
extra); without it the tables are written alone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold import files
from dlscaffold.runs import RunStatus, collect_runs, seed_groups
from dlscaffold.studies import Study, collect_studies

HISTORY = "history.jsonl"
FINISHED = "finished.out"
MAX_HISTORY_BYTES = 16 << 20  # 20 metrics over 10,000 epochs is about 7 MB
MAX_METRICS = 32  # per task: table columns and plots
MAX_CURVES = 10  # groups per plot: more is a legend nobody can read
MAX_NAME = 100
PLOTS_NEED = 'the learning-curve plots need matplotlib: pip install "dlscaffold[report]"'

Curve = dict[int, float]  # epoch -> value


@dataclass
class Summary:
    """A metric over the runs of a group that have it."""

    n: int
    mean: float
    std: float | None  # the sample one (n - 1), as ``status``; none for a single run


@dataclass
class GroupResult:
    """The finished runs of one seed group and their final metrics."""

    name: str
    runs: list[str]
    metrics: dict[str, Summary]


@dataclass
class TaskReport:
    task: str
    main_metric: str | None
    metrics: list[str]  # table columns: the main metric first
    groups: list[GroupResult]
    left_out: Counter[str]  # runs not finished, by state
    curves: dict[str, dict[str, list[Curve]]]  # metric -> group -> one curve per run
    plots: dict[str, str] = field(default_factory=dict)  # metric -> PNG file name
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """What ``dlscaffold report`` wrote, and what it has to say about it."""

    directory: Path
    written: list[Path]
    notes: list[str]
    runs: int


# ------------------------------------------------------------------ reading -----


def collect_tasks(
    project_root: Path, task: str | None = None, runs: list[RunStatus] | None = None
) -> list[TaskReport]:
    """Every task's finished results and curves, from the run directories on disk."""
    runs = collect_runs(project_root, task) if runs is None else runs
    by_task: dict[str, list[RunStatus]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    return [_task_report(project_root, name, task_runs) for name, task_runs in sorted(by_task.items())]


def _task_report(project_root: Path, task: str, runs: list[RunStatus]) -> TaskReport:
    finished = [run for run in runs if run.state == "finished"]
    main = _main_metric(finished)
    groups = _finished_groups(project_root, finished)
    notes: list[str] = []
    curves = _task_curves(project_root, runs, notes)
    present = {name for group in groups for name in group.metrics}
    metrics = ([main] if main in present else []) + sorted(present - {main})
    left_out = Counter(run.state for run in runs if run.state != "finished")
    for what, count in (("table columns", len(metrics)), ("plots", len(curves))):
        if count > MAX_METRICS:
            notes.append(f"{count - MAX_METRICS} more metrics left out of the {what}")
    shown = {name: curves[name] for name in sorted(curves)[:MAX_METRICS]}
    return TaskReport(task, main, metrics[:MAX_METRICS], groups, left_out, shown, notes=notes)


def _finished_groups(project_root: Path, finished: list[RunStatus]) -> list[GroupResult]:
    """The seed groups of finished runs, by name, each metric summarised over the runs that have it."""
    groups = []
    for group in sorted(seed_groups(finished), key=lambda group: group.name):
        finals: dict[str, list[float]] = {}
        for run in group.runs:
            for name, value in _final_metrics(project_root, run).items():
                finals.setdefault(name, []).append(value)
        summaries = {name: summarise(values) for name, values in finals.items()}
        groups.append(GroupResult(group.name, [run.run for run in group.runs], summaries))
    return groups


def _task_curves(
    project_root: Path, runs: list[RunStatus], notes: list[str]
) -> dict[str, dict[str, list[Curve]]]:
    """Metric -> seed group -> the curve of each run with a history, whatever its state."""
    curves: dict[str, dict[str, list[Curve]]] = {}
    for run in runs:
        try:
            history = read_history(_run_dir(project_root, run))
        except files.UnreadableFile as error:
            notes.append(f"the curves leave out {run.run}: {error}")
            continue
        for name, curve in _curves(history).items():
            curves.setdefault(name, {}).setdefault(run.group, []).append(curve)
    return curves


def _main_metric(runs: list[RunStatus]) -> str | None:
    """The metric the task's runs rank by (``main_metric`` in their files); the most common if they differ."""
    names = Counter(run.metric_name for run in runs if run.metric_name is not None)
    return names.most_common(1)[0][0] if names else None


def _run_dir(project_root: Path, run: RunStatus) -> Path:
    """Where ``collect_runs`` found ``run`` (its name as it is on disk, not as printed)."""
    return run.location


def _final_metrics(project_root: Path, run: RunStatus) -> dict[str, float]:
    """The finite final metrics in a finished run's flag, and the main metric as ``status`` read it."""
    try:
        flag = files.read_json(_run_dir(project_root, run) / FINISHED)
    except files.UnreadableFile:
        flag = None
    metrics = flag.get("metrics") if isinstance(flag, dict) else None
    finals = _numbers(metrics) if isinstance(metrics, dict) else {}
    if run.metric_name is not None and run.metric is not None:
        finals.setdefault(run.metric_name, run.metric)
    return finals


def read_history(run_dir: Path) -> dict[int, dict[str, float]]:
    """A run's metrics per epoch from ``history.jsonl``; ``{}`` if it has none.

    Lines that are not a well-formed entry (the partial line of a killed
    process, anything else) are skipped, and so are values that are not finite
    numbers. A resumed run replays epochs: the last line for an epoch wins.
    Raises :class:`files.UnreadableFile` for a history that is there but cannot
    be one: a FIFO, a device, larger than ``MAX_HISTORY_BYTES``, not UTF-8.
    """
    path = run_dir / HISTORY
    if not os.path.lexists(path):
        return {}
    text = files.read_text(path, limit=MAX_HISTORY_BYTES)
    epochs: dict[int, dict[str, float]] = {}
    for line in text.split("\n"):
        entry = _history_entry(line)
        if entry is not None:
            epochs[entry[0]] = entry[1]
    return epochs


def _history_entry(line: str) -> tuple[int, dict[str, float]] | None:
    if not line.strip():
        return None
    try:
        data = _DECODER.decode(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    epoch, metrics = data.get("epoch"), data.get("metrics")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**31:
        return None
    if not isinstance(metrics, dict):
        return None
    return epoch, _numbers(metrics)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # json.loads(line, ...) would build one a line


def _numbers(metrics: dict[Any, Any]) -> dict[str, float]:
    """The entries of ``metrics`` whose value is a finite number, names made printable."""
    numbers = {}
    for name, value in metrics.items():
        number = files.finite_number(value)
        if isinstance(name, str) and number is not None:
            numbers[_printable(name)] = number
    return numbers


def _curves(history: dict[int, dict[str, float]]) -> dict[str, Curve]:
    """Turn epoch -> metrics into metric -> (epoch -> value)."""
    curves: dict[str, Curve] = {}
    for epoch in sorted(history):
        for name, value in history[epoch].items():
            curves.setdefault(name, {})[epoch] = value
    return curves


def _printable(text: str) -> str:
    """One short line: control characters and lone surrogates escaped, long names cut."""
    if len(text) <= MAX_NAME and text.isprintable():  # nearly always: the loop below is slow
        return text
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 1] + "…"


# ------------------------------------------------------------------ numbers -----


def summarise(values: list[float]) -> Summary:
    """Mean and sample standard deviation of one or more values."""
    std = _scaled(statistics.stdev, values) if len(values) > 1 else None
    return Summary(len(values), _scaled(statistics.fmean, values), std)


def _scaled(statistic: Callable[[list[float]], float], values: list[float]) -> float:
    """``statistic(values)``, computed on the values scaled into [-1, 1]: the sums inside cannot
    overflow, whatever finite values a run's files hold (two of 1e308 already would)."""
    scale = max(abs(value) for value in values) or 1.0
    return statistic([value / scale for value in values]) * scale


def format_number(value: float) -> str:
    """Four decimals, or scientific notation where four decimals would hide the value."""
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _cell(group: GroupResult, metric: str) -> tuple[str, str, str] | None:
    """Mean, deviation and a note as text; ``None`` where no run of the group has the metric.

    The deviation is empty for one run; the note is ``(n=k)`` when only ``k``
    of the group's runs have the metric.
    """
    summary = group.metrics.get(metric)
    if summary is None:
        return None
    note = f"(n={summary.n})" if summary.n < len(group.runs) else ""
    std = "" if summary.std is None else format_number(summary.std)
    return format_number(summary.mean), std, note


# ------------------------------------------------------------------ writing -----


def write_report(project_root: Path, out_dir: Path, task: str | None = None) -> Report:
    """Write ``report.md``, ``results.csv``, ``results.tex`` and the curves into ``out_dir``."""
    all_runs = collect_runs(project_root, task)
    tasks = collect_tasks(project_root, task, all_runs)
    studies = collect_studies(project_root, all_runs, task)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes = []
    searched: dict[tuple[str, str], Path] | None = {}
    if any(report.curves for report in tasks) or studies:
        plotted = write_plots(tasks, out_dir)
        searched = write_search_plots(studies, out_dir)
        if plotted is None or searched is None:
            notes.append(PLOTS_NEED)
        else:
            written += plotted + list(searched.values())
    texts = {
        "results.csv": results_csv(tasks),
        "results.tex": results_tex(tasks),
        "report.md": report_markdown(project_root.name, tasks, plots=not notes)
        + search_markdown(studies, searched or {}),
    }
    for name, text in texts.items():  # report.md last: what it links to exists by then
        files.write_text_atomic(out_dir / name, text)
        written.append(out_dir / name)
    runs = sum(
        sum(len(group.runs) for group in report.groups) + sum(report.left_out.values()) for report in tasks
    )
    return Report(out_dir, written, notes, runs)


def report_markdown(title: str, tasks: list[TaskReport], plots: bool = True) -> str:
    lines = [
        f"# Results: {_md_text(title)}",
        "",
        f"Made by `dlscaffold report` on {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
    ]
    if not tasks:
        lines += ["No runs yet. Train one: `python experiments/<task>/train.py`", ""]
        return "\n".join(lines)
    lines += [
        "Each row is a group of finished runs that differ only by their seed: the mean ± the",
        "sample standard deviation over them, `(n=k)` where only k runs have the metric.",
        "The same numbers are in `results.csv` and, for a paper, `results.tex`.",
    ]
    if not plots:
        lines += ["", f"No curves: {_md_text(PLOTS_NEED)}."]
    for report in tasks:
        lines += ["", f"## {_md_text(report.task)}", ""]
        lines += _markdown_table(report)
        if report.left_out:
            lines += ["", f"Left out of the table, not finished: {_states(report.left_out)}."]
        for note in report.notes:
            lines += ["", f"Note: {_md_text(note)}."]
        if report.plots:
            lines += [
                "",
                f"Per epoch, each group's mean over its runs (all states), shaded from the lowest to the"
                f" highest run; at most {MAX_CURVES} groups a plot.",
            ]
        for metric, png in report.plots.items():
            lines += ["", f"![{_md_text(report.task)}: {_md_text(metric)}]({png})"]
    return "\n".join(lines) + "\n"


def _markdown_table(report: TaskReport) -> list[str]:
    if not report.groups:
        return ["No finished runs yet."]
    header = ["group", "seeds"] + [
        _code(metric) + (" (main)" if metric == report.main_metric else "") for metric in report.metrics
    ]
    rows = [header, ["---", "---:"] + ["---:"] * len(report.metrics)]
    for group in report.groups:
        row = [_code(group.name), str(len(group.runs))]
        for metric in report.metrics:
            cell = _cell(group, metric)
            row.append("-" if cell is None else _markdown_cell(*cell))
        rows.append(row)
    return ["| " + " | ".join(row) + " |" for row in rows]


def _markdown_cell(mean: str, std: str, note: str) -> str:
    return " ".join(part for part in (mean, "±" if std else "", std, note) if part)


def _states(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))


def _code(text: str) -> str:
    """``text`` as a Markdown code span that survives a table: nothing inside is formatting."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return fence + padded.replace("|", "\\|") + fence


def _md_text(text: str) -> str:
    """Plain text for Markdown: characters that would format or link are escaped."""
    return re.sub(r"([\\`*_{}\[\]<>#|!])", r"\\\1", text)


def results_csv(tasks: list[TaskReport]) -> str:
    """One row per task, group and metric, numbers at full precision (std empty for one run)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "group", "seeds", "metric", "main", "n", "mean", "std"])
    for report in tasks:
        for group in report.groups:
            for metric in report.metrics:
                summary = group.metrics.get(metric)
                if summary is None:
                    continue
                main = "yes" if metric == report.main_metric else ""
                row = [report.task, group.name, len(group.runs), metric, main, summary.n, repr(summary.mean)]
                writer.writerow(row + ["" if summary.std is None else repr(summary.std)])
    return buffer.getvalue()


LATEX_SPECIAL: dict[str, str | int | None] = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # not special, but the default OT1 font prints other glyphs for these
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "`": r"\textasciigrave{}",
}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX typesets it literally (one pass, so no escape is escaped again)."""
    return text.translate(str.maketrans(LATEX_SPECIAL))


def results_tex(tasks: list[TaskReport]) -> str:
    """A booktabs ``tabular`` per task (``\\usepackage{booktabs}``), mean $\\pm$ std per cell."""
    lines = [
        "% Made by dlscaffold report: mean $\\pm$ sample standard deviation over seeds.",
        "% Needs \\usepackage{booktabs}.",
    ]
    for report in tasks:
        if not report.groups:
            continue
        lines += [
            "",
            f"% {latex_escape(report.task)}",
            "\\begin{tabular}{lr" + "c" * len(report.metrics) + "}",
            "\\toprule",
        ]
        header = ["group", "seeds"] + [latex_escape(metric) for metric in report.metrics]
        lines += [" & ".join(header) + " \\\\", "\\midrule"]
        for group in report.groups:
            row = [latex_escape(group.name), str(len(group.runs))]
            for metric in report.metrics:
                cell = _cell(group, metric)
                row.append("--" if cell is None else _latex_cell(*cell))
            lines.append(" & ".join(row) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_cell(mean: str, std: str, note: str) -> str:
    number = f"${mean} \\pm {std}$" if std else f"${mean}$"
    return f"{number} {note}" if note else number


# ------------------------------------------------------------------ plotting -----


def write_plots(tasks: list[TaskReport], out_dir: Path) -> list[Path] | None:
    """One PNG per task and metric with a history; ``None`` if matplotlib is not installed.

    matplotlib is imported here only, and drawn through its Agg canvas without
    pyplot: no window, no global state, and the CLI starts without it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    written = []
    taken: set[str] = set()
    for report in tasks:
        for metric, groups in report.curves.items():
            figure = Figure(figsize=(8, 4), layout="constrained")
            FigureCanvasAgg(figure)
            axes = figure.add_subplot()
            for name in sorted(groups)[:MAX_CURVES]:
                _plot_group(axes, name, groups[name])
            shown = f"{report.task}: {metric}"
            if len(groups) > MAX_CURVES:
                shown += f" (first {MAX_CURVES} of {len(groups)} groups)"
            axes.set(title=_mpl_text(shown), xlabel="epoch", ylabel=_mpl_text(metric))
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # never over a curve
            buffer = io.BytesIO()
            try:
                with warnings.catch_warnings():  # a glyph the font lacks: drawn as a box, not worth a warning
                    warnings.simplefilter("ignore")
                    figure.savefig(buffer, format="png", dpi=110)
            except (ValueError, OverflowError, ArithmeticError) as error:  # values near 1e308: no axis fits
                report.notes.append(f"the {metric} curves cannot be drawn ({error})")
                continue
            path = out_dir / _png_name(report.task, metric, taken)
            files.write_bytes_atomic(path, buffer.getvalue())
            report.plots[metric] = path.name
            written.append(path)
    return written


def _plot_group(axes: Any, name: str, curves: list[Curve]) -> None:
    """The mean over the group's runs at each epoch, shaded from the lowest run to the highest."""
    epochs = sorted({epoch for curve in curves for epoch in curve})
    values = [[curve[epoch] for curve in curves if epoch in curve] for epoch in epochs]
    means = [_scaled(statistics.fmean, at) for at in values]
    label = _mpl_text(f"{name} (n={len(curves)})")
    (line,) = axes.plot(
        epochs,
        means,
        label=f" {label}" if label.startswith("_") else label,
        marker="o" if len(epochs) <= 30 else None,
        markersize=3,
    )
    if len(curves) > 1:
        lows, highs = [min(at) for at in values], [max(at) for at in values]
        axes.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)


def _mpl_text(text: str) -> str:
    """Text matplotlib draws as it is: a ``$`` would start mathematics."""
    return text.replace("$", r"\$")


def _png_name(task: str, metric: str, taken: set[str]) -> str:
    """``curves_<task>_<metric>.png`` in safe characters (``val/acc``: ``val-acc``), unique in the report."""
    stem = "curves_" + "_".join(
        re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip(".-") or "x" for part in (task, metric)
    )
    name, suffix = f"{stem}.png", 2
    while name in taken:
        name, suffix = f"{stem}-{suffix}.png", suffix + 1
    taken.add(name)
    return name


# ----------------------------------------------------------------- searches -----

BEST_SHOWN = 5  # trials per study in the report's table


def search_markdown(studies: list[Study], plots: dict[tuple[str, str], Path]) -> str:
    """Per study: how far it went, its best trials, and the optimisation history."""
    if not studies:
        return ""
    lines = ["", "## Searches", ""]
    lines += ["Hyperparameter searches of `scripts/search.py`: each trial is a run of its own."]
    for study in studies:
        done = study.count("complete") + study.count("pruned")
        wanted = f" of {study.wanted}" if study.wanted is not None else ""
        lines += ["", f"### {_md_text(study.task)}: {_md_text(study.name)}", ""]
        complete, pruned, failed = (study.count(state) for state in ("complete", "pruned", "failed"))
        lines.append(
            f"{done}{wanted} trials done ({complete} complete, {pruned} pruned), {failed} failed; "
            f"{study.direction} {_code(study.metric)}, a trial's best epoch."
        )
        ranked = study.ranked()[:BEST_SHOWN]
        if ranked:
            lines += ["", f"| trial | {_md_text(study.metric)} | run | parameters |", "|---:|---:|---|---|"]
            for trial in ranked:
                params = ", ".join(f"{name}={value}" for name, value in trial.params.items())
                value = format_number(trial.value) if trial.value is not None else "-"
                lines.append(f"| {trial.number} | {value} | {_code(trial.run)} | {_md_text(params)} |")
        png = plots.get((study.task, study.name))
        if png is not None:
            lines += ["", f"![{_md_text(study.name)}: optimisation history]({png.name})"]
    return "\n".join(lines) + "\n"


def write_search_plots(studies: list[Study], out_dir: Path) -> dict[tuple[str, str], Path] | None:
    """Per study, each complete trial's value by trial number and the best so far; ``None``
    without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    written = {}
    taken: set[str] = set()
    for study in studies:
        points = [(trial.number, trial.value) for trial in study.trials if trial.value is not None]
        if not points:
            continue
        points.sort()
        pick = max if study.direction == "maximize" else min
        best = [pick(value for _, value in points[: index + 1]) for index in range(len(points))]
        figure = Figure(figsize=(8, 4), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        numbers = [number for number, _ in points]
        axes.scatter(numbers, [value for _, value in points], s=14, label="complete trial")
        axes.step(numbers, best, where="post", color="C1", label="best so far")
        title = f"{study.task}: {study.name} ({study.direction} {study.metric})"
        axes.set(title=_mpl_text(title), xlabel="trial", ylabel=_mpl_text(study.metric))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure.savefig(buffer, format="png", dpi=110)
        except (ValueError, OverflowError, ArithmeticError):  # values near 1e308: no axis fits
            continue
        name = _png_name(study.task, study.name, taken).replace("curves_", "search_", 1)
        path = out_dir / name
        files.write_bytes_atomic(path, buffer.getvalue())
        written[(study.task, study.name)] = path
    return written
