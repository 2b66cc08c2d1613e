"""`make demo` step: one pipeline-health incident, opened and resolved.

The last demo day is run again through Dagster (``dagster asset materialize``, in the
project's Dagster home) with its trace source pointed at Phoenix on a port nothing listens
on: ``raw_traces`` fails. The health sensors are then evaluated on that run as the daemon
would (a run-failure sensor): a health incident opens, naming the step and the error. The
day is re-run from the trace inbox, it succeeds, and the recovery sensor resolves the
incident. The retry window is set to zero for the demo, so the incident counts as paged;
its notifications are about an old demo day, outside the notify window, so they are
recorded as suppressed rather than sent (a backfill does not page). Results go into the
demo summary under ``"health"``.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.health import incidents as health
from eval_pipeline.defs import health as health_defs
from eval_pipeline.demo.dagster_cli import dagster_materialize

_OVERRIDES = (
    "EVAL_TRACE_SOURCE",
    "EVAL_PHOENIX_URL",
    "EVAL_PHOENIX_PROJECT",
    "EVAL_PHOENIX_RETRIES",
)


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _latest_run(instance: dg.DagsterInstance, day: str) -> dg.DagsterRun:
    [record] = instance.get_run_records(
        filters=dg.RunsFilter(tags={health_defs.PARTITION_TAG: day}), limit=1
    )
    return record.dagster_run


def sense(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Evaluate the failure or the recovery sensor on a finished run, as the daemon does."""
    failed = run.status == dg.DagsterRunStatus.FAILURE
    kind = dg.DagsterEventType.RUN_FAILURE if failed else dg.DagsterEventType.RUN_SUCCESS
    event = instance.all_logs(run.run_id, of_type=kind)[-1].dagster_event
    ctx = dg.build_run_status_sensor_context(
        sensor_name="pipeline_failure_sensor" if failed else "pipeline_recovery_sensor",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
    )
    if failed:
        health_defs.pipeline_failure_sensor(ctx.for_run_failure())
    else:
        health_defs.pipeline_recovery_sensor(ctx)


def _incident(incident_id: str | None = None) -> health.HealthIncident | None:
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = health.incidents(conn)
    if incident_id is not None:
        rows = [r for r in rows if r.incident_id == incident_id]
    return rows[-1] if rows else None


def _notifications(incident_id: str) -> list[dict]:
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = conn.execute(
            "SELECT event, channel, status, coalesce(reason, '') FROM notifications "
            "WHERE incident_id = ? ORDER BY event, channel",
            [incident_id],
        ).fetchall()
    return [dict(zip(("event", "channel", "status", "reason"), r, strict=True)) for r in rows]


def run(summary: dict) -> None:
    day = _last_demo_day()
    saved = {k: os.environ.get(k) for k in (*_OVERRIDES, "EVAL_HEALTH_RETRY_WINDOW_MINUTES")}
    print(f"\n== pipeline health: {day} with its trace source unreachable, then re-run ==")
    os.environ["EVAL_HEALTH_RETRY_WINDOW_MINUTES"] = "0"
    try:
        os.environ.update(
            EVAL_TRACE_SOURCE="phoenix",
            EVAL_PHOENIX_URL=f"http://127.0.0.1:{_closed_port()}",
            EVAL_PHOENIX_PROJECT="demo",
            EVAL_PHOENIX_RETRIES="1",  # refused at once: no point waiting on backoff
        )
        code, _ = dagster_materialize("group:drift", "dagster_health_fail.log", partition=day)
        with dg.DagsterInstance.get() as instance:
            failed = _latest_run(instance, day)
            sense(instance, failed)
        opened = _incident()
        for key in _OVERRIDES:
            os.environ.pop(key, None)
        os.environ["EVAL_TRACE_SOURCE"] = "jsonl"
        code_ok, _ = dagster_materialize("group:drift", "dagster_health_rerun.log", partition=day)
        with dg.DagsterInstance.get() as instance:
            ok = _latest_run(instance, day)
            sense(instance, ok)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    resolved = _incident(opened.incident_id) if opened else None
    out = {
        "day": day,
        "failed_run": failed.run_id,
        "failed_run_exit": code,
        "rerun": ok.run_id,
        "rerun_exit": code_ok,
        "incident_id": opened.incident_id if opened else None,
        "step": opened.step if opened else None,
        "error": opened.error if opened else None,
        "status_after_rerun": resolved.status if resolved else None,
        "resolution": resolved.resolution if resolved else None,
        "notifications": _notifications(opened.incident_id) if opened else [],
    }
    out["opened_and_resolved"] = (
        opened is not None
        and opened.status == "open"
        and resolved is not None
        and resolved.status == "resolved"
        and code != 0
        and code_ok == 0
    )
    summary["health"] = out
    if opened:
        print(f"  incident {opened.incident_id}: {day} failed at step {opened.step}")
        print(f"  error: {opened.error}")
    print(
        f"  after the re-run: {out['status_after_rerun']} ({out['resolution']}); "
        f"notifications: {len(out['notifications'])} recorded "
        f"({', '.join(sorted({n['status'] for n in out['notifications']})) or 'no channel configured'})"
    )


def _last_demo_day() -> str:
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        return str(conn.execute("SELECT max(partition_date) FROM raw_traces").fetchone()[0])
