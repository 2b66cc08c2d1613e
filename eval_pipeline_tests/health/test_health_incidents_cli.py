"""`eval-pipeline incidents` lists pipeline-health incidents with drift incidents, filterable
by kind, and shows one; ack/resolve by hand stay for drift incidents."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from eval_pipeline import settings
from eval_pipeline.cli import main
from eval_pipeline.core import store
from eval_pipeline.core.health import incidents as health

T0 = dt.datetime(2026, 11, 20, 2, 10)


@pytest.fixture
def both():
    with store.connect(settings.duckdb_path()) as conn:
        conn.execute(
            "INSERT INTO drift_incidents (incident_id, kind, status, segments, opened_on, "
            "detected_on, last_degraded_on, detector, peak_drop, current_drop, cause, "
            "computed_at) VALUES ('inc-1', 'drift', 'open', ['billing'], DATE '2026-10-22', "
            "DATE '2026-10-22', DATE '2026-10-23', 'day-test', 1.9, 1.8, 'prompt_version v2', now())"
        )
        failed = health.RunOutcome(
            job="daily_drift_job", scope="2026-11-19", run_id="run-1", at=T0,
            step="raw_traces", error="PhoenixUnavailable: down",
        )  # fmt: skip
        opened = health.record_failure(conn, failed, retry_window=dt.timedelta(0))
        health.record_missing(
            conn, "daily_drift_job", dt.date(2026, 11, 18), "no drift report", now=T0
        )
        health.record_success(
            conn, health.RunOutcome(job="daily_drift_job", scope="2026-11-18", run_id="r", at=T0)
        )
    return opened.touched[0].incident_id


def test_all_kinds_by_default(both, capsys):
    assert main(["incidents"]) == 0
    out = capsys.readouterr().out
    assert "inc-1" in out and "prompt_version v2" in out
    assert "pipeline health" in out and "daily_drift_job / 2026-11-19 / raw_traces" in out
    assert f"{both}: PhoenixUnavailable: down" in out


def test_filtered_by_kind_and_status(both, capsys):
    assert main(["incidents", "list", "--kind", "pipeline", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"pipeline"} and len(rows) == 2
    assert main(["incidents", "list", "--kind", "pipeline", "--status", "open", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["incident_id"] == both and row["status"] == "open"
    assert main(["incidents", "list", "--kind", "drift"]) == 0
    out = capsys.readouterr().out
    assert "inc-1" in out and "pipeline health" not in out


def test_show_a_health_incident_and_refuse_hand_resolution(both, capsys):
    assert main(["incidents", "show", both]) == 0
    out = capsys.readouterr().out
    assert "PhoenixUnavailable: down" in out and "raw_traces" in out
    assert main(["incidents", "resolve", both, "--reason", "fixed"]) == 2
    assert "resolves with the next successful run" in capsys.readouterr().out
