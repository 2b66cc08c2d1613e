"""The freshness sensor against a real Dagster instance at the deadline's edges, a day that
was never launched, and backfills over old days that must not page."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.defs import health as health_defs
from eval_pipeline_tests.health.health_fixtures import (
    notification_rows,
    run_job,
    sense,
    stored,
    texts,
)
from eval_pipeline_tests.sources.phoenix_fixtures import free_port
from eval_pipeline_tests.webhook_server import WebhookReceiver

DAY = dt.date(2026, 11, 19)


@pytest.fixture
def receiver(monkeypatch):
    with WebhookReceiver() as rx:
        monkeypatch.setenv("EVAL_ALERT_WEBHOOK_URL", rx.url)
        monkeypatch.setenv("EVAL_HEALTH_RETRY_WINDOW_MINUTES", "0")
        monkeypatch.setenv("EVAL_HEALTH_LOOKBACK_DAYS", "1")
        yield rx


def at(monkeypatch, when: dt.datetime) -> None:
    monkeypatch.setattr(health_defs, "utcnow", lambda: when)


def tick(instance):
    return health_defs.pipeline_freshness_sensor(dg.build_sensor_context(instance=instance))


def reported(instance, day: dt.date) -> None:
    """The drift report of ``day`` exists (as the UI would show it)."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="drift_report", partition=day.isoformat())
    )


def test_a_day_never_launched_opens_an_incident_at_the_deadline_not_before(receiver, monkeypatch):
    with dg.DagsterInstance.ephemeral() as instance:
        reported(instance, DAY - dt.timedelta(days=1))
        at(monkeypatch, dt.datetime(2026, 11, 20, 5, 59, 59))
        tick(instance)
        assert stored() == [] and receiver.posts == []

        at(monkeypatch, dt.datetime(2026, 11, 20, 6, 0))
        tick(instance)
        [inc] = stored("open")
        assert (inc.job, inc.scope, inc.reason, inc.run_id) == (
            "daily_drift_job", DAY.isoformat(), "missing", None,
        )  # fmt: skip
        assert inc.error == (
            f"no drift report for {DAY} by 06:00 UTC: no run was launched for this day "
            "(is the Dagster daemon running?)"
        )
        [opened] = texts(receiver)
        assert f"Incident opened on {DAY}" in opened and "no run was launched" in opened

        at(monkeypatch, dt.datetime(2026, 11, 20, 6, 5))
        tick(instance)  # still missing: the same incident, no second page
        assert len(stored()) == 1 and len(receiver.posts) == 1

        # The day is run (late, by hand): its success resolves the incident.
        settings.trace_inbox().mkdir(parents=True)
        ok = run_job(instance, "daily_drift_job", partition_key=DAY.isoformat())
        assert ok.status == dg.DagsterRunStatus.SUCCESS
        sense(instance, ok)
        [inc] = stored("resolved")
        assert inc.resolved_by_run == ok.run_id
        assert "Incident resolved" in texts(receiver)[-1] and len(receiver.posts) == 2
        at(monkeypatch, dt.datetime(2026, 11, 20, 6, 10))
        tick(instance)  # the report is there now: nothing opens again
        assert len(stored()) == 1


def test_the_deadline_is_configurable(receiver, monkeypatch):
    monkeypatch.setenv("EVAL_HEALTH_DEADLINE", "09:30")
    with dg.DagsterInstance.ephemeral() as instance:
        reported(instance, DAY - dt.timedelta(days=1))
        at(monkeypatch, dt.datetime(2026, 11, 20, 9, 29))
        tick(instance)
        assert stored() == []
        at(monkeypatch, dt.datetime(2026, 11, 20, 9, 30))
        tick(instance)
        assert [i.scope for i in stored("open")] == [DAY.isoformat()]
        assert "by 09:30 UTC" in stored()[0].error


def test_a_missing_day_whose_run_failed_names_that_run(receiver, monkeypatch):
    monkeypatch.setenv("EVAL_TRACE_SOURCE", "phoenix")
    monkeypatch.setenv("EVAL_PHOENIX_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("EVAL_PHOENIX_PROJECT", "shop")
    monkeypatch.setenv("EVAL_PHOENIX_RETRIES", "1")
    with dg.DagsterInstance.ephemeral() as instance:
        reported(instance, DAY - dt.timedelta(days=1))
        failed = run_job(instance, "daily_drift_job", partition_key=DAY.isoformat())
        at(monkeypatch, dt.datetime(2026, 11, 20, 6, 0))
        tick(instance)
        [inc] = stored("open")
        assert inc.run_id == failed.run_id
        assert inc.error.endswith(f"its latest run {failed.run_id} is FAILURE")


def test_a_backfill_over_old_failed_days_pages_nobody(receiver, monkeypatch):
    """Old days (outside the notify window) fail again in a backfill, then a ranged backfill
    fixes them: the incidents are recorded and resolved, nothing is sent."""
    monkeypatch.setenv("EVAL_TRACE_SOURCE", "phoenix")
    monkeypatch.setenv("EVAL_PHOENIX_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("EVAL_PHOENIX_PROJECT", "shop")
    monkeypatch.setenv("EVAL_PHOENIX_RETRIES", "1")
    first, last = "2026-10-01", "2026-10-03"
    ranged = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
    with dg.DagsterInstance.ephemeral() as instance:
        failed_range = run_job(instance, "daily_drift_job", tags=ranged)
        failed_day = run_job(instance, "daily_drift_job", partition_key="2026-10-02")
        for run in (failed_range, failed_day):
            assert run.status == dg.DagsterRunStatus.FAILURE
            sense(instance, run)
        assert sorted(i.scope for i in stored("open")) == ["2026-10-01...2026-10-03", "2026-10-02"]
        monkeypatch.setenv("EVAL_TRACE_SOURCE", "jsonl")
        settings.trace_inbox().mkdir(parents=True)
        fixed = run_job(instance, "daily_drift_job", tags=ranged)
        assert fixed.status == dg.DagsterRunStatus.SUCCESS
        sense(instance, fixed)
        assert stored("open") == []
        assert receiver.posts == []
        rows = notification_rows()
        assert {(r[1], r[4]) for r in rows} == {
            ("opened", "suppressed"),
            ("resolved", "suppressed"),
        }
        assert all(r[5].startswith("old: 2026-10-0") for r in rows)


def test_the_ui_gets_the_incident_table_only_when_it_changes(receiver, monkeypatch):
    with dg.DagsterInstance.ephemeral() as instance:
        reported(instance, DAY - dt.timedelta(days=1))
        at(monkeypatch, dt.datetime(2026, 11, 20, 6, 0))
        first = tick(instance)
        assert isinstance(first, dg.SensorResult)
        [event] = first.asset_events
        assert event.asset_key == dg.AssetKey("pipeline_health")
        assert event.metadata["open"].value == 1
        table = event.metadata["incidents"].value
        assert f"| open | daily_drift_job | {DAY} |" in table and "no run was launched" in table
        again = health_defs.pipeline_freshness_sensor(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert (
            isinstance(again, dg.SkipReason)
            and "missing drift reports: 2026-11-19" in again.skip_message
        )
