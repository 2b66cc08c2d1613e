"""`make demo` end to end, in a temporary data folder and Dagster home: the injected
regression opens one incident on its first day that resolves after the fix, with its cause
named and two notifications, and no clean day pages; the groundedness regression opens one
groundedness incident of its own."""

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
    # One incident: paged on the first broken day, resolved after the fix, the prompt
    # version named, one message on open and one on resolve, nothing on clean days.
    incidents = drift["incidents"]
    assert len(incidents) == 1, incidents
    inc = incidents[0]
    assert demo_traffic.REGRESSED_SEGMENT in inc["segments"]
    assert set(inc["segments"]) <= {demo_traffic.REGRESSED_SEGMENT, "__all__"}
    assert inc["detected_on"][:10] == inc["opened_on"][:10] == start.isoformat()
    fixed = demo_traffic.REGRESSION_FIXED
    assert inc["resolved_on"] and fixed < dt.date.fromisoformat(inc["resolved_on"][:10])
    assert dt.date.fromisoformat(inc["last_degraded_on"][:10]) >= fixed - dt.timedelta(days=1)
    assert inc["cause_key"].startswith("prompt_version=")
    quality = [n["event"] for n in drift["notifications"] if n["incident_id"] == inc["incident_id"]]
    assert quality == ["opened", "resolved"]
    assert drift["check"]["notifications_received"] == 2
    assert drift["check"]["clean_day_alerts"] == 0
    assert "detected on" in proc.stdout
    # Groundedness (rules, judged with quality and safety) sees what quality does not: the
    # shipping answers that stop following the documents open one incident of their own, on
    # shipping, detected within two days of the start and resolved after the last bad day;
    # safety and the other segments open none.
    crit = drift["criteria"]
    assert crit["judged"] == ["groundedness", "safety"]
    assert len(crit["incidents"]) == 1, crit["incidents"]
    (g,) = crit["incidents"]
    assert g["criterion"] == "groundedness" and g["incident_id"].startswith("groundedness:")
    assert demo_traffic.RAG_SEGMENT in g["segments"]
    assert set(g["segments"]) <= {demo_traffic.RAG_SEGMENT, "__all__"}
    g_start, g_end = demo_traffic.UNGROUNDED_START, demo_traffic.UNGROUNDED_END
    assert g_start <= dt.date.fromisoformat(g["opened_on"]) <= g_start + dt.timedelta(days=2)
    assert dt.date.fromisoformat(g["detected_on"]) <= g_start + dt.timedelta(days=2)
    assert g["resolved_on"] and g_end < dt.date.fromisoformat(g["resolved_on"])
    # Before the regression it opened after; the quality incident is its own.
    assert dt.date.fromisoformat(g["resolved_on"]) <= start
    assert crit["check"]["detected"] and crit["check"]["other_incidents"] == 0
    # It notifies through the same lifecycle, once on open and once on resolve, named.
    assert crit["check"]["notified"] == ["opened", "resolved"]
    assert crit["check"]["notifications_received"] == 2
    assert len(drift["received"]) == 4
    assert sum("LLM groundedness drop in shipping" in t for t in drift["received"]) == 2
    assert f"groundedness incident {g['incident_id']} on shipping" in proc.stdout
    # The manifest says what was injected.
    manifest = json.loads((isolated_data / "demo" / "manifest.json").read_text())
    assert manifest["injected_regression"]["from_day"] == start.isoformat()
    assert manifest["injected_regression"]["fixed_on"] == fixed.isoformat()
    # The other loops' demo steps ran through Dagster and did what the README promises.
    regression = summary["regression"]
    assert regression["gate_blocked_regressed"], regression
    assert regression["cli_exit_codes"] == {"pass": 0, "fail": 1, "outage": 3}
    assert "A" in summary["ab"]["verdict"] and "wins" in summary["ab"]["verdict"].lower()
    assert summary["feedback"]["pending_candidates"] > 0
    assert all(r["ok"] for r in summary["feedback"]["runs"])
