"""Shared by the health tests: the project's real jobs, run in process on a Dagster instance,
and the health sensors evaluated on what those runs left in the instance."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.health import incidents as health
from eval_pipeline.definitions import defs
from eval_pipeline.defs import health as health_defs

DEFS = defs()


def today() -> dt.date:
    return health_defs.utcnow().date()


def run_job(instance: dg.DagsterInstance, name: str, **kwargs) -> dg.DagsterRun:
    """One run of the project's job ``name`` (its resources as the code location binds them)."""
    job = DEFS.resolve_job_def(name)
    result = job.execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    return result.dagster_run


def _event(instance: dg.DagsterInstance, run: dg.DagsterRun, kind: dg.DagsterEventType):
    records = instance.all_logs(run.run_id, of_type=kind)
    assert records, f"run {run.run_id} has no {kind}"
    return records[-1].dagster_event


def sense(instance: dg.DagsterInstance, run: dg.DagsterRun):
    """Evaluate the failure or the recovery sensor on a finished run, as the daemon would."""
    if run.status == dg.DagsterRunStatus.FAILURE:
        ctx = dg.build_run_status_sensor_context(
            sensor_name="pipeline_failure_sensor",
            dagster_event=_event(instance, run, dg.DagsterEventType.RUN_FAILURE),
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        return health_defs.pipeline_failure_sensor(ctx)
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
    ctx = dg.build_run_status_sensor_context(
        sensor_name="pipeline_recovery_sensor",
        dagster_event=_event(instance, run, dg.DagsterEventType.RUN_SUCCESS),
        dagster_instance=instance,
        dagster_run=run,
    )
    return health_defs.pipeline_recovery_sensor(ctx)


def stored(status: str | None = None) -> list[health.HealthIncident]:
    with store.connect(settings.duckdb_path()) as conn:
        return health.incidents(conn, status)


def notification_rows() -> list[tuple]:
    with store.connect(settings.duckdb_path()) as conn:
        return conn.execute(
            "SELECT incident_id, event, channel, kind, status, coalesce(reason, '') "
            "FROM notifications ORDER BY first_seen_at, event"
        ).fetchall()


def texts(receiver) -> list[str]:
    return [p["json"]["text"] for p in receiver.posts]
