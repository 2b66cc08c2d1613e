"""The heartbeat: `eval-pipeline health` and its HTTP endpoint, read from a real Dagster
instance in the test's own Dagster home."""

from __future__ import annotations

import datetime as dt
import json
import threading

import dagster as dg
import httpx
import pytest

from eval_pipeline import settings
from eval_pipeline.cli import health as health_cli
from eval_pipeline.cli import main
from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline_tests.health.health_fixtures import run_job

DAY = dt.date(2026, 11, 19)
AFTER = "2026-11-20T06:30:00"
BEFORE = "2026-11-20T05:30:00"


@pytest.fixture
def one_day(monkeypatch):
    """DAY's drift job has run (empty inbox) in the Dagster home; lookback of one day."""
    monkeypatch.setenv("EVAL_HEALTH_LOOKBACK_DAYS", "1")
    settings.trace_inbox().mkdir(parents=True)
    with dg.DagsterInstance.get() as instance:
        run = run_job(instance, "daily_drift_job", partition_key=DAY.isoformat())
    assert run.status == dg.DagsterRunStatus.SUCCESS
    return run


def test_fresh_after_the_deadline_names_the_day_and_run(one_day, capsys):
    assert main(["health", "--now", AFTER]) == 0
    out = capsys.readouterr().out
    assert "status: ok" in out
    assert f"last successful day: {DAY} (run {one_day.run_id}" in out
    assert "open health incidents: 0" in out


def test_stale_when_the_next_day_is_due(one_day, capsys):
    assert main(["health", "--json", "--now", "2026-11-21T06:00:00+00:00"]) == 1
    beat = json.loads(capsys.readouterr().out)
    assert beat["status"] == "stale" and beat["missing_days"] == ["2026-11-20"]
    assert beat["last_successful_day"] == DAY.isoformat()
    assert beat["last_successful_run"] == one_day.run_id
    # Before that day's deadline it is not late yet.
    assert main(["health", "--now", "2026-11-21T05:59:59"]) == 0


def test_nothing_ever_reported_is_stale(monkeypatch, capsys):
    monkeypatch.setenv("EVAL_HEALTH_LOOKBACK_DAYS", "1")
    assert main(["health", "--now", BEFORE]) == 1
    assert "last successful day: none" in capsys.readouterr().out


def test_without_a_dagster_home_it_cannot_tell(monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME")
    assert main(["health"]) == 2
    assert "cannot tell: DAGSTER_HOME is not set" in capsys.readouterr().out


def test_a_bad_deadline_setting_is_named(monkeypatch, capsys):
    monkeypatch.setenv("EVAL_HEALTH_DEADLINE", "six")
    assert main(["health"]) == 2
    assert "EVAL_HEALTH_DEADLINE" in capsys.readouterr().out


def test_http_endpoint_answers_503_when_stale_and_200_when_fresh(one_day, monkeypatch):
    now = {"t": dt.datetime(2026, 11, 21, 7, 0)}
    real = health_cli.heartbeat
    monkeypatch.setattr(health_cli, "heartbeat", lambda: real(now["t"]))
    server = health_cli.make_server(0)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        stale = httpx.get(f"{base}/health")
        assert stale.status_code == 503 and stale.json()["status"] == "stale"
        now["t"] = dt.datetime(2026, 11, 20, 7, 0)
        fresh = httpx.get(f"{base}/health")
        assert fresh.status_code == 200
        assert fresh.json()["last_successful_run"] == one_day.run_id
        assert httpx.get(f"{base}/other").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_knows_the_partitions_first_day():
    assert daily_partitions.start.date() == health_cli.FIRST_PARTITION
