"""What the trackers keep of a resumed run: no step logged twice."""

from __future__ import annotations

import csv
from pathlib import Path

from dlscaffold.create import create_project

from conftest import run_python

RESUME = """
import sys
from pathlib import Path
sys.path.insert(0, ".")
from protocol.tracking import Tracker
tracker = Tracker(Path(sys.argv[1]), "r", {}, start_step=int(sys.argv[2]))
tracker.log({"train_loss": 0.5}, 30)
tracker.close()
"""


def test_the_csv_tracker_drops_rows_past_the_checkpoint_it_resumes_from(tmp_path: Path) -> None:
    root = create_project(
        {"project_name": "logs", "framework": "pytorch", "tracker": "csv"}, tmp_path, use_git=False
    ).root
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    killed_attempt = [
        ["step", "metric", "value"],
        *([str(step), "train_loss", "1.0"] for step in (10, 20, 30, 40)),
    ]
    with (logs / "metrics.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(killed_attempt)
    resumed = run_python(["-c", RESUME, str(logs), "20"], cwd=root)  # its checkpoint was at step 20
    assert resumed.returncode == 0, resumed.stderr
    rows = list(csv.reader((logs / "metrics.csv").open(newline="")))
    assert rows == [
        ["step", "metric", "value"],
        ["10", "train_loss", "1.0"],
        ["20", "train_loss", "1.0"],
        ["30", "train_loss", "0.5"],
    ]
