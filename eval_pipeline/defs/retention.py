"""Raw-trace retention as a Dagster asset, job and 04:00 UTC schedule (after the 02:00 drift
loop): days older than the retention lose their raw rows, everything derived is kept."""

import datetime as dt

import dagster as dg

from eval_pipeline.core import retention
from eval_pipeline.defs.resources import EvalStore

MD = dg.MetadataValue


class RetentionConfig(dg.Config):
    # None: $EVAL_RAW_RETENTION_DAYS, else 30. 0 keeps every day.
    keep_days: int | None = None
    # None: $EVAL_RAW_ARCHIVE_DIR, else no archive (dropped rows are gone).
    archive_dir: str | None = None
    # The day the retention counts back from (YYYY-MM-DD); None: today in UTC.
    today: str | None = None


@dg.asset(kinds={"duckdb"}, pool="duckdb", group_name="retention")
def raw_trace_retention(
    context: dg.AssetExecutionContext, config: RetentionConfig, store: EvalStore
):
    """Drops (or archives to Parquet, then drops) raw traces older than the retention."""
    cfg = retention.RetentionConfig.resolve(config.keep_days, config.archive_dir)
    today = dt.date.fromisoformat(config.today) if config.today else dt.datetime.now(dt.UTC).date()
    with store.connect() as conn:
        res = retention.apply_retention(conn, today, cfg)
    if res.cutoff is None:
        context.log.info("raw-trace retention is off (keep_days = 0): nothing dropped")
    elif res.days:
        context.log.info(
            f"dropped the raw traces of {len(res.days)} day(s) before {res.cutoff} "
            f"({res.rows_dropped} traces, {res.rejects_dropped} rejects)"
            + (f"; archived under {cfg.archive_dir}" if res.archives else "")
        )
    return dg.MaterializeResult(
        metadata={
            "keep_days": MD.int(cfg.keep_days),
            "first_day_kept": MD.text(str(res.cutoff) if res.cutoff else "all"),
            "days_dropped": MD.int(len(res.days)),
            "traces_dropped": MD.int(res.rows_dropped),
            "rejects_dropped": MD.int(res.rejects_dropped),
            "archive_dir": MD.text(str(cfg.archive_dir) if cfg.archive_dir else "none"),
        }
    )


raw_trace_retention_job = dg.define_asset_job(
    "raw_trace_retention_job",
    selection=dg.AssetSelection.assets(raw_trace_retention),
    description="Drop (or archive) raw traces older than the retention.",
)


@dg.schedule(
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    job=raw_trace_retention_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def raw_trace_retention_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """04:00 UTC: the retention counted back from the tick's day."""
    day = context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()
    return dg.RunRequest(
        run_key=f"retention-{day}",
        run_config=dg.RunConfig({"raw_trace_retention": RetentionConfig(today=day)}),
    )
