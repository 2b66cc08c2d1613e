"""`make demo` end to end, in a temporary data folder and Dagster home: the injected
regression raises an alert in the right segment within two days, and no clean day does."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pytest

from eval_pipeline import settings
from eval_pipeline.demo import traffic as demo_traffic


@pytest.mark.slow
def test_demo_finds_the_injected_regression_and_nothing_else(isolated_data):
    # The demo's golden set, copied so the run cannot touch the one in git.
    golden = isolated_data / "golden" / "golden.jsonl"
    golden.parent.mkdir(parents=True)
    shutil.copy(settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl", golden)
    proc = subprocess.run(
        [sys.executable, "-m", "eval_pipeline.demo"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((isolated_data / "demo" / "summary.json").read_text())
    drift = summary["drift"]
    assert drift["days_processed"] == demo_traffic.DAYS
    start = demo_traffic.REGRESSION_START
    alerts = drift["alerts"]
    in_segment = [
        a
        for a in alerts
        if a["segment"] == demo_traffic.REGRESSED_SEGMENT
        and start <= dt.date.fromisoformat(a["day"]) <= start + dt.timedelta(days=2)
    ]
    assert in_segment, alerts
    assert not [a for a in alerts if dt.date.fromisoformat(a["day"]) < start], alerts
    # Every alert after the start is about the regressed segment or the overall mean it drags.
    assert {a["segment"] for a in alerts} <= {demo_traffic.REGRESSED_SEGMENT, "__all__"}
    assert "detected on" in proc.stdout
    # The manifest says what was injected.
    manifest = json.loads((isolated_data / "demo" / "manifest.json").read_text())
    assert manifest["injected_regression"]["from_day"] == start.isoformat()
    # The other loops' demo steps ran through Dagster and did what the README promises.
    regression = summary["regression"]
    assert regression["gate_blocked_regressed"], regression
    assert regression["cli_exit_codes"] == {"pass": 0, "fail": 1, "outage": 3}
    assert "A" in summary["ab"]["verdict"] and "wins" in summary["ab"]["verdict"].lower()
    assert summary["feedback"]["pending_candidates"] > 0
    assert all(r["ok"] for r in summary["feedback"]["runs"])
