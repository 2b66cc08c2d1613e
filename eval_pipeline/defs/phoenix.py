"""Judge scores written back to Arize Phoenix as span annotations (judge_annotations).

A thin adapter over plan_annotations / send_annotations / record_annotations of
eval_pipeline.core.sources.phoenix.annotations, with no store connection open while
posting. It never fails the run because of Phoenix: rejected or undeliverable annotations are recorded per span in
phoenix_annotations, retried on the next run, and reported by the non-blocking
``annotations_delivered`` check (WARN). The judging itself is a separate, upstream asset
and is never affected. On days whose traces did not come from Phoenix it does nothing and
says so in its metadata.
"""

import dagster as dg

from eval_pipeline.core.sources.phoenix import annotations
from eval_pipeline.defs.drift_loop import judge_scores
from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.reporting import materialize_days, run_days
from eval_pipeline.defs.resources import EvalStore, TraceSourceResource

MD = dg.MetadataValue


@dg.asset(
    kinds={"duckdb", "python"},
    deps=[judge_scores],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    group_name="drift",
    check_specs=[
        dg.AssetCheckSpec(
            "annotations_delivered",
            asset="judge_annotations",
            description="Every judge score of a Phoenix trace reached Phoenix (warns, "
            "never blocks: failures are retried on the next run).",
        )
    ],
)
def judge_annotations(
    context: dg.AssetExecutionContext, store: EvalStore, trace_source: TraceSourceResource
):
    """The day's judge scores of Phoenix-sourced traces, posted to Phoenix as span
    annotations (upserted in place on re-runs); delivery state per span in DuckDB."""
    days = run_days(context)
    per_day = {}
    failed_total = 0
    unreachable_days = []
    cfg = None
    for day in days:
        # Three phases so the store is not held while Phoenix answers (DuckDB has one
        # writer at a time; a slow POST would block the CLI and other runs): read the plan,
        # post with no connection open, then record the delivery state.
        plan = None
        with store.connect() as conn:
            eligible = annotations.phoenix_judgments(conn, day)
            retries = annotations.pending_retries(conn, cfg)
            if eligible or retries:
                # Built only when needed: a jsonl deployment needs no Phoenix settings at all.
                cfg = cfg or trace_source.phoenix_config()
                plan = annotations.plan_annotations(conn, cfg, day)
        if plan is None or cfg is None:
            note = (
                "no judgments of Phoenix-sourced traces on this day "
                f"(trace source: {trace_source.resolved_kind()}); nothing to write back"
            )
            per_day[day] = {"annotations_sent": MD.int(0), "note": MD.text(note)}
            continue
        outcome = annotations.send_annotations(cfg, plan)
        with store.connect() as conn:
            res = annotations.record_annotations(conn, plan, outcome)
        failed_total += res.failed
        if res.unreachable:
            unreachable_days.append(day)
        meta = {
            "dagster/row_count": MD.int(res.sent),
            "annotations_sent": MD.int(res.sent),
            "annotations_failed": MD.int(res.failed),
            "eligible_judgments": MD.int(res.eligible),
            "retried_from_earlier_runs": MD.int(res.retried_earlier),
            "failed_by_reason": MD.json(dict(res.errors)),
            "undelivered_in_store": MD.int(res.still_failing_total),
            "annotation_name": MD.text(res.name),
            "annotation_names": MD.text(", ".join(res.names) or "none"),
            "identifiers": MD.text(", ".join(res.identifiers) or "none"),
            "phoenix_url": MD.url(cfg.safe_url()),
            "phoenix_unreachable": MD.bool(res.unreachable),
        }
        per_day[day] = meta
        msg = (
            f"{day}: {res.sent} annotations sent, {res.failed} failed "
            f"({res.retried_earlier} retried from earlier runs) {dict(res.errors)}"
        )
        (context.log.warning if res.failed else context.log.info)(msg)
    check = dg.AssetCheckResult(
        check_name="annotations_delivered",
        passed=failed_total == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "failed": MD.int(failed_total),
            "unreachable_days": MD.text(", ".join(map(str, unreachable_days)) or "none"),
        },
    )
    yield from materialize_days(context, days, per_day, [check])
