"""Trusting the judge, as Dagster assets: judge_calibration (agreement with people, the trust
status) and the daily judge_anchors (the anchor set re-judged; judge drift told apart from
app drift), with a daily schedule and a weekly test-retest schedule.
"""

import datetime as dt
import math

import dagster as dg

from eval_pipeline.core.drift import budget
from eval_pipeline.core.drift.history import judge_key
from eval_pipeline.core.judge import agreement as ag
from eval_pipeline.core.judge import anchors, labels, trust
from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.reporting import materialize_days, plot_float, run_days
from eval_pipeline.defs.resources import EvalStore, JudgeResource

MD = dg.MetadataValue
GROUP = "judge_trust"


class CalibrationConfig(dg.Config):
    min_labels: int = ag.MIN_LABELS
    kappa_bar: float = ag.KAPPA_BAR


@dg.asset(
    kinds={"duckdb", "python"},
    deps=[dg.AssetKey("judge_scores")],
    group_name=GROUP,
    pool="duckdb",
)
def judge_calibration(
    context: dg.AssetExecutionContext,
    config: CalibrationConfig,
    store: EvalStore,
    judge: JudgeResource,
) -> dg.MaterializeResult:
    """Agreement of the configured judge with people's labels, and its trust status."""
    identity = labels.JudgeIdentity.of(judge.build()).key
    with store.connect() as conn:
        res = trust.agreement_for(conn, identity)
        status = trust.judge_trust_status(conn, identity, config.min_labels, config.kappa_bar, res)
        others = [i for i in labels.identities(conn) if i != identity]
        rows = [
            (i, trust.judge_trust_status(conn, i, config.min_labels, config.kappa_bar))
            for i in others
        ]
    context.log.info(status.line())
    table = "\n".join(
        ["| judge | status | reason |", "|---|---|---|"]
        + [
            f"| {s.judge_identity} | {s.status} | {s.reason} |"
            for s in [status] + [r for _, r in rows]
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "judge_identity": MD.text(identity),
            "trust_status": MD.text(status.status),
            "trust_reason": MD.text(status.reason),
            "n_labels": MD.int(res.n),
            "kappa": plot_float(None if math.isnan(res.kappa) else res.kappa),
            "kappa_low": plot_float(None if math.isnan(res.kappa_low) else res.kappa_low),
            "kappa_high": plot_float(None if math.isnan(res.kappa_high) else res.kappa_high),
            "exact_agreement": plot_float(None if math.isnan(res.exact) else res.exact),
            "within_one": plot_float(None if math.isnan(res.within_one) else res.within_one),
            "spearman": plot_float(None if math.isnan(res.spearman) else res.spearman),
            "mean_bias": plot_float(None if math.isnan(res.mean_bias) else res.mean_bias),
            "confusion": MD.json({"rows_person_cols_judge": res.confusion}),
            "all_judges": MD.md(table),
        }
    )


class AnchorConfig(dg.Config):
    anchor_set: str = anchors.DEFAULT_SET
    anchor_size: int = anchors.ANCHOR_SIZE
    alpha: float = anchors.ALPHA
    effect_floor: float = anchors.EFFECT_FLOOR
    retest_repeats: int = 0  # > 0: re-judge the anchors this many more times (judge noise)
    # The first scoring by a judge identity is made 1 + this many times (its own noise).
    baseline_repeats: int = anchors.BASELINE_REPEATS


@dg.asset(
    kinds={"duckdb", "python"},
    deps=[dg.AssetKey("judge_scores")],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    group_name=GROUP,
    check_specs=[
        dg.AssetCheckSpec(
            "judge_unchanged",
            asset="judge_anchors",
            description="The day's judge scores the anchor set like its first scoring did.",
        )
    ],
)
def judge_anchors(
    context: dg.AssetExecutionContext,
    config: AnchorConfig,
    store: EvalStore,
    judge: JudgeResource,
):
    """The anchor set re-judged by the day's judge (no cache), compared with its first scoring."""
    the_judge = judge.build()
    identity = labels.JudgeIdentity.of(the_judge)
    per_day, changed = {}, []
    for day in run_days(context):
        with store.connect() as conn:
            fixed, how = anchors.choose(conn, config.anchor_size, config.anchor_set, until=day)
            repeats = anchors.repeats_for(
                conn,
                identity,
                config.retest_repeats,
                config.anchor_set,
                day,
                config.baseline_repeats,
            )
        context.log.info(f"{day}: {how}")
        if not fixed:
            per_day[day] = {"anchor_set": MD.text(how), "judge_drift": MD.bool(False)}
            continue
        # The store is not held while the judge works (see judge_scores).
        run = anchors.rejudge(the_judge, fixed, repeats)
        with store.connect() as conn:
            anchors.record_run(conn, day, identity, fixed, run, the_judge, config.anchor_set)
            # Their own lines in the judge's daily ledger, beside the drift loop's.
            spend_key = judge_key(the_judge.name, the_judge.model, the_judge.rubric_version)
            for purpose, (calls, cost) in run.spend(the_judge).items():
                budget.record_spend(conn, day, spend_key, purpose, calls, cost)
            ledger = conn.execute(
                "SELECT purpose, calls, cost FROM judge_spend WHERE partition_date = ?"
                " AND judge = ? ORDER BY purpose",
                [day, spend_key],
            ).fetchall()
            f = anchors.compare(
                conn, day, identity, config.anchor_set, config.alpha, config.effect_floor
            )
            anchors.store_finding(conn, f)
        (context.log.warning if f.judge_drift else context.log.info)(f"{day}: {f.verdict}")
        if f.judge_drift:
            changed.append(day.isoformat())
        per_day[day] = {
            "anchor_set": MD.text(how),
            "judge_identity": MD.text(identity.key),
            "judge_drift": MD.bool(f.judge_drift),
            "verdict": MD.text(f.verdict),
            "n_paired": MD.int(f.n_paired),
            "mean_shift": plot_float(f.mean_shift),
            "changed_share": plot_float(f.changed_share),
            "p_value": plot_float(f.p_value),
            "spread_p_value": plot_float(f.spread_p_value),
            "spread_excess": plot_float(f.spread_excess),
            "retest_kappa": plot_float(f.retest_kappa),
            "retest_exact": plot_float(f.retest_exact),
            "anchor_judge_calls": MD.int(sum(len(p) for p in run.passes)),
            "anchors_calls": MD.int(run.spend(the_judge)["anchors"][0]),
            "repeats_calls": MD.int(run.spend(the_judge)["repeats"][0]),
            "judge_spend_lines": MD.json({p: {"calls": c, "cost": x} for p, c, x in ledger}),
            "baseline_date": MD.text(str(f.baseline_date)),
        }
    check = dg.AssetCheckResult(
        check_name="judge_unchanged",
        passed=not changed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"judge_changed_on": MD.text(", ".join(changed) or "none")},
    )
    yield from materialize_days(context, run_days(context), per_day, [check])


judge_anchors_job = dg.define_asset_job(
    "judge_anchors_job",
    selection=dg.AssetSelection.assets(judge_anchors),
    description="Re-judge the anchor set for one day (or a range): judge drift vs app drift.",
)


def _yesterday(context: dg.ScheduleEvaluationContext) -> str:
    tick = context.scheduled_execution_time.astimezone(dt.UTC)
    return (tick - dt.timedelta(days=1)).date().isoformat()


@dg.schedule(
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
    job=judge_anchors_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def weekly_judge_noise_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Sundays 04:00 UTC: the anchors re-judged with 2 repeats, for the judge's own noise."""
    day = _yesterday(context)
    return dg.RunRequest(
        run_key=f"judge-noise-{day}",
        partition_key=day,
        run_config={"ops": {"judge_anchors": {"config": {"retest_repeats": 2}}}},
    )
