"""The demo's health step on one small day: `dagster asset materialize` fails the day with
the trace source unreachable, a health incident opens; the re-run resolves it."""

from __future__ import annotations

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.demo import health as demo_health
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.health.health_fixtures import run_job


@pytest.mark.slow  # two `dagster asset materialize` processes
def test_demo_step_opens_and_resolves_one_health_incident(monkeypatch, capsys):
    monkeypatch.setattr(demo_traffic, "DAYS", 1)
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 200)
    demo_traffic.generate(settings.trace_inbox())
    day = demo_traffic.START.isoformat()
    with dg.DagsterInstance.get() as instance:
        assert run_job(instance, "daily_drift_job", partition_key=day).status.value == "SUCCESS"
    summary: dict = {}
    demo_health.run(summary)
    h = summary["health"]
    assert h["opened_and_resolved"], h
    assert (h["day"], h["step"], h["status_after_rerun"]) == (day, "raw_traces", "resolved")
    assert (
        h["error"].startswith("PhoenixUnavailable: Phoenix at http://127.0.0.1:")
        and "did not answer" in h["error"]
    )
    assert h["resolution"] == "recovered" and h["failed_run_exit"] != 0 and h["rerun_exit"] == 0
    assert h["notifications"] == []  # no channel configured: nothing sent, nothing recorded
    assert "after the re-run: resolved" in capsys.readouterr().out
