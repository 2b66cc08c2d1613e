"""Watching the watcher: sensors that open a pipeline-health incident when a run of the
project's jobs fails or the daily drift report is late, and resolve it when the job
succeeds again. The lifecycle, the retry window and the freshness rule are plain Python in
``eval_pipeline.core.health``; this module turns Dagster runs into its inputs.

- ``pipeline_failure_sensor`` (run failure): opens or extends the incident of the run's job
  and scope (partition, range, feedback file, or the job), with the failing step and the
  error's first line, scrubbed. A failed blocking check is named as what it is (the judge's
  failure rate; the regression gate's verdict), not as a crash.
- ``pipeline_recovery_sensor`` (run success): resolves the incidents of the same job and
  scope.
- ``pipeline_freshness_sensor`` (every 5 minutes): a day whose drift report is missing after
  the deadline opens an incident even when no run was launched; failures still open after
  the retry window are paged.

Runs launched from the asset graph (the UI's Materialize, ``dagster asset materialize``,
the demo) run as an ad-hoc asset job: they count as the job whose group their assets belong
to, so a day fixed by hand resolves the incident the schedule's run opened.

The store is opened briefly to update the incident table, and closed before any
notification is sent (``deliver_in_phases``); the Dagster instance is read for the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from types import ModuleType

import dagster as dg
import duckdb

from eval_pipeline.core.health import freshness
from eval_pipeline.core.health import incidents as health
from eval_pipeline.core.health.config import HealthConfig, secrets
from eval_pipeline.core.notify.config import ChannelConfig
from eval_pipeline.core.notify.lifecycle import DeliveryReport, deliver_in_phases
from eval_pipeline.defs import drift_loop, feedback, judge_trust, phoenix, regression, signals
from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.resources import EvalStore

DRIFT_JOB = drift_loop.daily_drift_job.name
REPORT_ASSET = dg.AssetKey("drift_report")
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Unpartitioned jobs whose runs are about one thing, named by a tag (else: the job itself).
SCOPE_TAGS = {feedback.feedback_ingestion_job.name: feedback.SHA_TAG}
MD = dg.MetadataValue

# Health incidents in the UI: reported (runless) by the freshness sensor when they change.
HEALTH_ASSET = dg.AssetSpec(
    "pipeline_health",
    group_name="health",
    description="Pipeline-health incidents, open first (eval-pipeline incidents --kind "
    "pipeline); reported by pipeline_freshness_sensor when they change.",
)


# The project's jobs, in order of precedence for an asset two of them select.
WATCHED_JOBS = (
    drift_loop.daily_drift_job,
    regression.golden_regression_job,
    feedback.feedback_ingestion_job,
    judge_trust.judge_anchors_job,
)


def _asset_jobs() -> dict[dg.AssetKey, str]:
    """Asset key -> the project job that materializes it (each job's own selection)."""
    modules: tuple[ModuleType, ...] = (
        drift_loop,
        phoenix,
        signals,
        regression,
        feedback,
        judge_trust,
    )
    assets = [
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, dg.AssetsDefinition)
    ]
    out: dict[dg.AssetKey, str] = {}
    for job in WATCHED_JOBS:  # an asset in two jobs counts as the first's (the drift job's)
        for key in job.selection.resolve(assets):
            out.setdefault(key, job.name)
    return out


ASSET_JOBS = _asset_jobs()
PROJECT_JOBS = frozenset(job.name for job in WATCHED_JOBS)


def utcnow() -> dt.datetime:
    """Naive UTC, as the store keeps it (tests replace this to stand at a deadline)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def logical_job(run: dg.DagsterRun) -> str | None:
    """The project job a run counts as; None for a run of no asset of this project."""
    if run.job_name in PROJECT_JOBS:
        return run.job_name
    keys = run.asset_selection or set()
    jobs = {ASSET_JOBS[k] for k in keys if k in ASSET_JOBS}
    if len(jobs) == 1:
        return jobs.pop()
    if keys:  # assets outside the jobs (golden_set): watched under their own names
        return "assets:" + ",".join(sorted(k.to_user_string() for k in keys))[:120]
    return None


def run_scope(run: dg.DagsterRun, job: str) -> tuple[str, dt.date | None]:
    """(scope, the day it is about) of a run."""
    tags = run.tags
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    key = tags.get(PARTITION_TAG)
    if start and end:
        scope = start if start == end else f"{start}{health.RANGE_SEP}{end}"
    elif key:
        scope = key
    elif job in SCOPE_TAGS:
        scope = tags.get(SCOPE_TAGS[job], "")
    else:
        scope = ""
    days = health.scope_days(scope) if scope else None
    return scope, days[1] if days else None


def _finished_at(instance: dg.DagsterInstance, run_id: str) -> dt.datetime:
    record = instance.get_run_record_by_id(run_id)
    if record is not None and record.end_time:
        return dt.datetime.fromtimestamp(record.end_time, dt.UTC).replace(tzinfo=None)
    return utcnow()


def _root_error(error: object) -> object:
    """The error that says what went wrong: a ``dg.Failure`` (the asset's own sentence) if
    the chain has one, else the innermost cause (Dagster wraps user errors)."""
    while getattr(error, "cls_name", None) != "Failure" and getattr(error, "cause", None):
        error = error.cause
    return error


def _pct(value: object) -> str:
    """7%, 5.4% (one decimal under 10%, so a rate just over a 5% limit does not read 5%)."""
    if not isinstance(value, (int, float)):
        return "?"
    return f"{value:.0%}" if value >= 0.1 else f"{value:.1%}".replace(".0%", "%")


def _meta(evaluation: object, key: str) -> object:
    entry = (getattr(evaluation, "metadata", None) or {}).get(key)
    return getattr(entry, "value", entry)


def describe_check(evaluation: object) -> str:
    """A failed blocking check in words: what it means for the day, not a stack trace."""
    name = getattr(evaluation, "check_name", "?")
    if name == "judge_failure_rate":
        day = _meta(evaluation, "worst_day")
        return (
            f"the judge failed on {_pct(_meta(evaluation, 'worst_failure_rate'))} of the day's "
            f"sample (limit {_pct(_meta(evaluation, 'max_failure_rate'))}): "
            f"no drift verdict for {day}"
        )
    if name == "pass_rate":
        verdict = _meta(evaluation, "verdict")
        return (
            f"the regression gate blocked the deploy: pass rate "
            f"{_pct(_meta(evaluation, 'pass_rate'))} below {_pct(_meta(evaluation, 'threshold'))}"
            + (f" ({verdict})" if verdict else "")
        )
    asset = getattr(getattr(evaluation, "asset_key", None), "to_user_string", lambda: "?")()
    return f"blocking check {asset}:{name} failed"


def describe_failure(
    instance: dg.DagsterInstance, run: dg.DagsterRun, run_failure_message: str | None = None
) -> tuple[str | None, str]:
    """(failing step, the error's first line, scrubbed) of a failed run."""
    hidden = secrets()
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        if getattr(evaluation, "passed", True) is False and getattr(evaluation, "blocking", False):
            step = record.dagster_event.step_key
            return step, health.first_line(describe_check(evaluation), hidden)
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    if failures:
        event = failures[0].dagster_event
        error = _root_error(event.step_failure_data.error)
        line = health.first_line(getattr(error, "message", ""), hidden)
        if getattr(error, "cls_name", None) == "Failure":
            # dg.Failure is the asset's own sentence for what went wrong: no class name.
            line = line.removeprefix("Failure: ")
        return event.step_key, line
    return None, health.first_line(run_failure_message or "the run failed", hidden)


def run_outcome(
    instance: dg.DagsterInstance, run: dg.DagsterRun, *, failed: bool, message: str | None = None
) -> health.RunOutcome | None:
    job = logical_job(run)
    if job is None:
        return None
    scope, day = run_scope(run, job)
    step, error = describe_failure(instance, run, message) if failed else (None, "")
    return health.RunOutcome(
        job=job,
        scope=scope,
        run_id=run.run_id,
        at=_finished_at(instance, run.run_id),
        day=day,
        step=step,
        error=error,
    )


def _apply(
    change: Callable[[duckdb.DuckDBPyConnection, HealthConfig, dt.datetime], list[health.Outcome]],
    log: Callable[[str], object],
    seen: list[health.HealthIncident] | None = None,
) -> DeliveryReport:
    """Update the incidents on one short connection, then notify with none held open.
    ``seen`` receives the recent incidents as they are after the change."""
    cfg = HealthConfig.from_env()
    store = EvalStore()
    now = utcnow()
    with store.connect() as conn:
        outcomes = change(conn, cfg, now)
        if seen is not None:
            seen.extend(health.recent(conn))
    events = [e for o in outcomes for e in o.events]
    for o in outcomes:
        for inc in o.touched:
            log(f"health incident {inc.incident_id}: {inc.status} ({inc.error})")
    return deliver_in_phases(
        store.connect,
        events,
        ChannelConfig.from_env(),
        today=now.date(),
        notify_within_days=cfg.notify_within_days,
    )


@dg.run_failure_sensor(
    name="pipeline_failure_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed run of the project's jobs opens or extends a health incident.",
)
def pipeline_failure_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    outcome = run_outcome(context.instance, run, failed=True, message=context.failure_event.message)
    if outcome is None:
        return dg.SkipReason(f"run {run.run_id} is not one of the project's jobs")

    def change(conn, cfg, now):
        failed = health.record_failure(
            conn, outcome, retry_window=cfg.retry_window, base_url=cfg.ui_base_url
        )
        return [failed, health.due_pages(conn, now=now, retry_window=cfg.retry_window)]

    report = _apply(change, context.log.info)
    context.log.info(f"health notifications: {report.as_metadata()}")
    return None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="pipeline_recovery_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A successful run resolves the health incidents of its job and scope.",
)
def pipeline_recovery_sensor(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    outcome = run_outcome(context.instance, run, failed=False)
    if outcome is None:
        return dg.SkipReason(f"run {run.run_id} is not one of the project's jobs")

    def change(conn, cfg, now):
        return [health.record_success(conn, outcome)]

    _apply(change, context.log.info)
    return None


def reported_days(instance: dg.DagsterInstance) -> set[dt.date]:
    """Days with a drift report in the instance (what the UI shows as materialized)."""
    out = set()
    for key in instance.get_materialized_partitions(REPORT_ASSET):
        try:
            out.add(dt.date.fromisoformat(key))
        except ValueError:
            continue
    return out


def latest_report_run(
    instance: dg.DagsterInstance, day: dt.date | None
) -> tuple[str, dt.datetime] | None:
    """(run id, when) of the latest drift report of ``day``."""
    if day is None:
        return None
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=REPORT_ASSET, asset_partitions=[day.isoformat()]),
        limit=1,
    )
    if not result.records:
        return None
    record = result.records[0]
    return record.run_id, dt.datetime.fromtimestamp(record.timestamp, dt.UTC).replace(tzinfo=None)


def latest_run_of_day(instance: dg.DagsterInstance, day: dt.date) -> tuple[str, str] | None:
    """(run id, status) of the newest run tagged with ``day``'s partition, if any."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={PARTITION_TAG: day.isoformat()}), limit=1
    )
    if not records:
        return None
    run = records[0].dagster_run
    return run.run_id, run.status.value


def freshness_rule() -> freshness.FreshnessRule:
    return freshness.FreshnessRule.from_env(first_day=daily_partitions.start.date())


def check_freshness(
    instance: dg.DagsterInstance,
    now: dt.datetime,
    log: Callable[[str], object],
    seen: list[health.HealthIncident] | None = None,
):
    """One freshness tick: open incidents for missing days, page failures past the retry
    window. Returns (missing days, delivery report)."""
    rule = freshness_rule()
    missing = rule.missing(now, reported_days(instance))
    latest = {day: latest_run_of_day(instance, day) for day in missing}

    def change(conn, cfg, _now):
        outcomes = []
        for day in missing:
            run_id, status = latest[day] or (None, None)
            reason = freshness.missing_reason(day, rule, status, run_id)
            outcomes.append(
                health.record_missing(
                    conn, DRIFT_JOB, day, reason, now=now, run_id=run_id, base_url=cfg.ui_base_url
                )
            )
        outcomes.append(health.due_pages(conn, now=now, retry_window=cfg.retry_window))
        return outcomes

    return missing, _apply(change, log, seen)


@dg.sensor(
    name="pipeline_freshness_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Yesterday's drift report exists by the deadline (EVAL_HEALTH_DEADLINE, "
    "06:00 UTC); a missing day opens a health incident even if no run was launched.",
)
def pipeline_freshness_sensor(context: dg.SensorEvaluationContext):
    seen: list[health.HealthIncident] = []
    missing, report = check_freshness(context.instance, utcnow(), context.log.info, seen)
    days = ", ".join(d.isoformat() for d in missing) or "none"
    why = f"missing drift reports: {days}; notifications: {report.as_metadata()}"
    mark = health.fingerprint(seen)
    if mark == (context.cursor or ""):
        return dg.SkipReason(why)
    # The incidents changed since the last tick: show them in the UI (runless event).
    table = dg.AssetMaterialization(
        asset_key=HEALTH_ASSET.key,
        metadata={
            "open": MD.int(sum(i.status == "open" for i in seen)),
            "incidents": MD.md(health.markdown_table(seen)),
        },
    )
    return dg.SensorResult(asset_events=[table], cursor=mark, skip_reason=why)
