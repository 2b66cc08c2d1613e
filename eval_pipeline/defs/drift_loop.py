"""The daily drift loop as Dagster assets: raw_traces -> sampled_traces -> judge_scores ->
drift_report -> drift_incidents, plus its job and 02:00 UTC schedule.

Each asset is a thin adapter: open the store, call one core function per day of the run,
report figures. All of them write DuckDB, so all carry pool="duckdb" (limit 1 in the
project's dagster.yaml) and a single-run backfill policy: a 30-day backfill is one run.
"""

import dataclasses
import datetime as dt

import dagster as dg

from eval_pipeline.core.drift import (
    budget,
    budget_sampling,
    detectors,
    sampling,
)
from eval_pipeline.core.drift import history as incident_history
from eval_pipeline.core.drift import report as drift
from eval_pipeline.core.judge import cache as scoring
from eval_pipeline.core.judge.base import judge_versions
from eval_pipeline.core.regression.history import latest_baseline
from eval_pipeline.core.sources import ingest as traces
from eval_pipeline.defs.incident_settings import IncidentsConfig
from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.reporting import materialize_days, plot_float, run_days
from eval_pipeline.defs.resources import EvalStore, JudgeResource, TraceSourceResource

COMMON = dict(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    group_name="drift",
)
MD = dg.MetadataValue


class SamplingConfig(dg.Config):
    """The day's sample. budget_calls 0: the fixed sampler (sample_size, floor 20). budget_calls
    > 0: the budgeted sampler, whose defaults are the measured configuration (floor 10, risk
    x6, watch CUSUM 0.5; docs/sampling.md). floor_per_segment unset means 20 for the fixed
    sampler and 10 for the budgeted one; a value set applies to either."""

    sample_size: int = 200
    floor_per_segment: int | None = None
    seed: str = "eval-pipeline"
    # Segments beyond this many (the smallest) share one stratum, "(other segments)".
    max_segments: int = 50
    # Budgeted sampling (docs/sampling.md): > 0 replaces sample_size by this many stage-1
    # judge calls (watched segments first, else Neyman), risk slices oversampled; the
    # estimates are weighted back, the incident engine tests the sample as drawn.
    budget_calls: int = 0
    # Budgeted only, as the fixed sampler has no risk slices or watch set.
    risk_oversample: float = budget_sampling.BudgetedSamplingConfig.risk_oversample
    # Segments in an open incident or with CUSUM >= this get the calls above the floors
    # (docs/sampling.md); None: Neyman for all.
    watch_cusum: float | None = budget_sampling.BudgetedSamplingConfig.watch_cusum


class DriftConfig(dg.Config):
    baseline_days: int = 7
    min_drop: float = 0.2
    alpha: float = 0.05
    pinned_baseline: float | None = None
    # Pin the baseline to the judge-scored mean of the latest golden regression run (the
    # golden-set score at deploy time) instead of the trailing days.
    baseline_from_golden_run: bool = False
    golden_target: str | None = None  # which regression target; None: the latest of any
    min_baseline_n: int = 100


class JudgeFailureConfig(dg.Config):
    max_failure_rate: float = 0.05
    # The judge's daily budget (docs/sampling.md); 0 = no cap. Traces beyond it are
    # recorded as not judged for budget, not as failures.
    budget_calls_per_day: int = 0
    budget_money_per_day: float = 0.0
    # Same-day follow-up of a budgeted sample: this many more calls for suspicious segments.
    follow_up_calls: int = 0
    sample_seed: str = "eval-pipeline"  # must match the sampled_traces seed
    max_segments: int = 50
    # Must match the sampled_traces risk_oversample: the follow-up draws as stage 1 did.
    risk_oversample: float = budget_sampling.BudgetedSamplingConfig.risk_oversample
    target_drop: float = 0.3  # the report states the judged traces this drop would need
    # The day test the statement of what the sample can see is for: keep them equal to
    # drift_incidents' day_alpha and min_drop (the assets do not read each other's config).
    day_alpha: float = detectors.DAY_ALPHA
    min_drop: float = 0.2


@dg.asset(kinds={"duckdb", "python"}, **COMMON)
def raw_traces(
    context: dg.AssetExecutionContext, store: EvalStore, trace_source: TraceSourceResource
):
    """The day's traces from the trace source, validated; bad rows kept in trace_rejects."""
    source = trace_source.build()
    days = run_days(context)
    per_day = {}
    for day in days:
        # A remote source (Phoenix) is read before the store is opened, so the DuckDB file
        # is not held while pages come over the network.
        prefetch = getattr(source, "prefetch", None)
        if callable(prefetch):
            prefetch(day)
        with store.connect() as conn:
            res = traces.ingest_day(conn, source, day)
        if res.rows_ingested == 0:
            context.log.warning(
                f"{day}: the source had no traces for this day ({res.files_read} files read)"
            )
        if res.rows_rejected:
            context.log.warning(f"{day}: {traces.reject_summary(res)}")
        for note in res.notes:  # skipped files, grouped by reason: a few lines at most
            context.log.warning(f"{day}: {note}")
        meta = {
            "dagster/row_count": MD.int(res.rows_ingested),
            "rows_ingested": MD.int(res.rows_ingested),
            "rows_rejected": MD.int(res.rows_rejected),
            "files_read": MD.int(res.files_read),
            # Rows read, whatever happened to them: in an undated inbox file, rows of other
            # days are read and left for their own day, so seen >= ingested + rejected.
            "rows_seen": MD.int(res.rows_seen),
            "source": MD.text(res.source),
            # By reason kind with a few examples each: bounded, whatever the day holds.
            "rejects_by_reason": MD.json(res.rejects_by_reason),
            "reject_examples": MD.json(res.reject_examples),
            "traces_by_segment": MD.json(res.segments),
        }
        if res.notes:
            meta["notes"] = MD.text("; ".join(res.notes))
        per_day[day] = meta
        context.log.info(f"{day}: {res.rows_ingested} traces, {res.rows_rejected} rejected")
    yield from materialize_days(context, days, per_day)


def sampler_configs(
    config: SamplingConfig,
) -> tuple[sampling.SamplingConfig, budget_sampling.BudgetedSamplingConfig]:
    """The fixed and the budgeted sampler's settings; an unset floor takes each one's own
    default (20 fixed, 10 budgeted)."""
    floor = config.floor_per_segment
    fixed = sampling.SamplingConfig(
        config.sample_size,
        sampling.SamplingConfig.floor_per_segment if floor is None else floor,
        config.seed,
        config.max_segments,
    )
    budgeted = budget_sampling.BudgetedSamplingConfig(
        calls=config.budget_calls,
        reserve_fraction=0.0,  # the follow-up's calls are the judge asset's to spend
        floor_per_segment=budget_sampling.BudgetedSamplingConfig.floor_per_segment
        if floor is None
        else floor,
        max_segments=config.max_segments,
        seed=config.seed,
        risk_oversample=config.risk_oversample,
        watch_cusum=config.watch_cusum,
    )
    return fixed, budgeted


# trace_signals (defs/signals.py, by key: it imports this module) runs on every trace of
# the day before sampling, so a budgeted sample can oversample segments whose signal moved.
@dg.asset(kinds={"duckdb"}, deps=[raw_traces, "trace_signals"], **COMMON)
def sampled_traces(context: dg.AssetExecutionContext, config: SamplingConfig, store: EvalStore):
    """A reproducible stratified sample of the day's traces (a floor per segment)."""
    cfg, budgeted = sampler_configs(config)
    days = run_days(context)
    per_day = {}
    with store.connect() as conn:
        for day in days:
            if config.budget_calls > 0:
                moved = budget.moved_segments(conn, day)
                res = budget_sampling.sample_day_budgeted(conn, day, budgeted, moved)
                if moved:
                    context.log.info(f"{day}: cheap signal moved in {', '.join(sorted(moved))}")
            else:
                res = sampling.sample_day(conn, day, cfg)
            meta = {
                "dagster/row_count": MD.int(res.sampled),
                "sampled": MD.int(res.sampled),
                "population": MD.int(res.population),
                # One key per stratum: at most max_segments + 1, whatever the day holds.
                "by_segment": MD.json(
                    {s: {"traces": p, "sampled": k} for s, (p, k) in res.by_segment.items()}
                ),
            }
            if res.notes:
                meta["notes"] = MD.text("; ".join(res.notes))
                context.log.info(f"{day}: " + "; ".join(res.notes))
            per_day[day] = meta
    yield from materialize_days(context, days, per_day)


@dg.asset(
    kinds={"duckdb", "python"},
    deps=[sampled_traces],
    check_specs=[
        dg.AssetCheckSpec(
            "judge_failure_rate",
            asset="judge_scores",
            blocking=True,
            description="Unparseable + error judgments are at most 5% of the day's sample.",
        )
    ],
    **COMMON,
)
def judge_scores(
    context: dg.AssetExecutionContext,
    config: JudgeFailureConfig,
    store: EvalStore,
    judge: JudgeResource,
):
    """Each sampled trace scored 1-5 with a reason; cached by content hash."""
    the_judge = judge.build()
    days = run_days(context)
    per_day = {}
    worst = (0.0, None)
    for day in days:
        # The store is not held while the judge works: a remote judge can take minutes,
        # and other writers (the CLI, other runs) would wait on the lock all that time.
        res, spend_meta = _judge_day(context, config, store, the_judge, day)
        meta = {
            "dagster/row_count": MD.int(res.n),
            "judge": MD.text(the_judge.name),
            "judge_model": MD.text(the_judge.model or "none"),
            "rubric_version": MD.text(the_judge.rubric_version),
            "mean_score": plot_float(res.mean_score),
            "failure_rate": MD.float(res.failure_rate),
            "ok": MD.int(res.states["ok"]),
            "unparseable": MD.int(res.states["unparseable"]),
            "error": MD.int(res.states["error"]),
            "cache_hits": MD.int(res.cache_hits),
            "judge_calls": MD.int(res.judge_calls),
            "prompt_tokens": MD.int(res.prompt_tokens),
            "completion_tokens": MD.int(res.completion_tokens),
            "http_attempts": MD.int(res.http_attempts),
            "failures_by_kind": MD.json(dict(sorted(res.failures_by_kind.items()))),
            "cost_estimate": plot_float(res.cost_estimate),
            "latency_ms_mean": plot_float(res.latency_ms_mean),
            "latency_ms_p95": plot_float(res.latency_ms_p95),
            "judge_wall_seconds": MD.float(res.wall_seconds),
        }
        meta.update(spend_meta)
        if len(res.per_criterion) > 1:  # one criterion: the keys above say it all
            for crit, line in res.per_criterion.items():
                meta[f"mean_score/{crit}"] = plot_float(line.mean_score)
                meta[f"failure_rate/{crit}"] = MD.float(line.failure_rate)
                meta[f"judge_calls/{crit}"] = MD.int(line.judge_calls)
                meta[f"tokens/{crit}"] = MD.int(line.prompt_tokens + line.completion_tokens)
                meta[f"not_applicable/{crit}"] = MD.int(line.not_applicable)
            meta["criteria_mode"] = MD.text(res.criteria_mode)
        structured = getattr(the_judge, "response_format", None)
        if isinstance(structured, str):
            meta["judge_response_format"] = MD.text(structured)
        per_day[day] = meta
        context.log.info(
            f"{day}: {res.n} judged by {the_judge.name} ({res.cache_hits} from cache, "
            f"{res.judge_calls} calls), failure rate {res.failure_rate:.1%}"
        )
        if res.failure_rate >= worst[0]:
            worst = (res.failure_rate, day)
    rate, day = worst
    check = dg.AssetCheckResult(
        check_name="judge_failure_rate",
        passed=rate <= config.max_failure_rate,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "worst_failure_rate": MD.float(rate),
            "worst_day": MD.text(str(day)),
            "max_failure_rate": MD.float(config.max_failure_rate),
        },
    )
    yield from materialize_days(context, days, per_day, [check])


def _engine_references(conn, day):
    """The engine's reference (default settings); needs stage 1's scores (the day's judge)."""
    incident_settings = IncidentsConfig()
    return budget.day_references(
        conn, day, incident_settings.incident_config(), incident_settings.metadata_keys
    )


def _judge_day(context, config: JudgeFailureConfig, store: EvalStore, the_judge, day):
    """Judge the day's sample within the budget, then the follow-up; the power metadata."""
    key = incident_history.judge_key(the_judge.name, the_judge.model, the_judge.rubric_version)
    has_budget = config.budget_calls_per_day > 0 or config.budget_money_per_day > 0
    the_budget = (
        budget.Budget(key, config.budget_calls_per_day or None, config.budget_money_per_day or None)
        if has_budget
        else None
    )
    meta: dict = {}
    res = None
    refs = None
    for stage, purpose in ((1, "drift"), (2, "drift-follow-up")):
        with store.connect() as conn:
            if stage == 2:
                # Every segment at or past the follow-up line, significant ones included:
                # the engine's day test then decides on the full day only, at its own alpha.
                refs = _engine_references(conn, day)
                suspects = budget.store_suspects(conn, day, budget.FollowUpRule(), refs)
                cfg = budget_sampling.BudgetedSamplingConfig(
                    seed=config.sample_seed,
                    max_segments=config.max_segments,
                    risk_oversample=config.risk_oversample,
                )
                extra = budget_sampling.follow_up_day(
                    conn,
                    day,
                    cfg,
                    suspects,
                    config.follow_up_calls,
                    budget.moved_segments(conn, day),
                )
                meta["follow_up"] = MD.json(extra)
                if not extra:
                    budget.record_spend(conn, day, key, purpose, 0, None)
                    break
            plan = scoring.plan_day(conn, the_judge, day)
            skipped: list = []
            if the_budget is not None:
                used = budget.spent(conn, day, key, excluding=PURPOSES_OF_THE_DAY[stage - 1 :])
                per_call = (
                    budget.expected_cost_per_call(conn, the_judge)
                    if the_budget.money_per_day
                    else None
                )
                left = the_budget.calls_left(*used, per_call)
                rows = conn.execute(
                    "SELECT s.trace_id, coalesce(x.stratum, s.segment) FROM sampled_traces s "
                    "LEFT JOIN sample_strata x USING (partition_date, trace_id) "
                    "WHERE s.partition_date = ?",
                    [day],
                ).fetchall()
                # A budget call is one judgment of one criterion (conservative in one-call
                # mode): the traces kept are judged on every criterion.
                per_trace = len(judge_versions(the_judge))
                trimmed, skipped = budget.trim_to_budget(
                    plan, left // per_trace, budget.keep_order(rows, config.sample_seed)
                )
                plan = (
                    scoring.plan_day(conn, the_judge, day, {r[0] for r in trimmed.rows})
                    if per_trace > 1
                    else trimmed
                )
        new, wall = scoring.judge_plan(
            the_judge,
            plan,
            progress=lambda i, n, day=day: context.log.info(f"{day}: judged {i}/{n}"),
        )
        with store.connect() as conn:
            res = scoring.record_day(conn, the_judge, plan, new, wall)
            budget.record_skips(conn, day, key, skipped)
            budget.record_spend(conn, day, key, purpose, res.judge_calls, res.cost_estimate)
        if skipped:
            context.log.warning(f"{day}: {len(skipped)} sampled traces not judged: budget spent")
        if config.follow_up_calls <= 0:
            break
    with store.connect() as conn:
        refs = refs if refs is not None else _engine_references(conn, day)
        powers = budget.day_power(
            conn, day, config.day_alpha, config.target_drop, config.min_drop, refs
        )
        if the_budget is not None:
            acct = budget.accounting(conn, day, the_budget)
            meta["budget_calls_spent"] = MD.int(acct["calls"])
            meta["not_judged_budget"] = MD.int(acct["not_judged_budget"])
            meta["budget_lines"] = MD.json(acct["lines"])
    # One float per segment (bounded by max_segments) so the UI plots it per partition.
    for p in powers:
        name = "overall" if p.segment == drift.ALL_SEGMENTS else p.segment
        meta[f"mde/{name}"] = plot_float(p.mde)
        if p.segment != drift.ALL_SEGMENTS:
            meta[f"mde_shift/{name}"] = plot_float(p.mde_shift)
        meta[f"cusum_drop/{name}"] = plot_float(p.cusum_drop)
        meta[f"weighted_mean/{name}"] = plot_float(p.weighted_mean)
    meta["what_the_sample_can_see"] = MD.md("\n".join(f"- {p.sentence()}" for p in powers))
    return res, meta


PURPOSES_OF_THE_DAY = ("drift", "drift-follow-up")


@dg.asset(
    kinds={"duckdb", "python"},
    deps=[judge_scores],
    check_specs=[
        dg.AssetCheckSpec(
            "no_drift_alert",
            asset="drift_report",
            description="Warns when a day's drift report raises an alert.",
        )
    ],
    **COMMON,
)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, store: EvalStore):
    """Per day and segment: n, mean, p10, bad share and failures vs the baseline, with tests."""
    cfg = drift.DriftConfig(
        baseline_days=config.baseline_days,
        min_drop=config.min_drop,
        alpha=config.alpha,
        pinned_baseline=config.pinned_baseline,
        min_baseline_n=config.min_baseline_n,
    )
    days = run_days(context)
    per_day = {}
    alerting = []
    with store.connect() as conn:
        if config.baseline_from_golden_run:
            golden = latest_baseline(conn, config.golden_target)
            if golden is None:
                raise dg.Failure(
                    "baseline_from_golden_run is set but no golden regression run has a judge "
                    "mean yet: materialize golden_regression first"
                )
            cfg = dataclasses.replace(
                cfg,
                pinned_baseline=golden["judge_mean"],
                pinned_judge=(
                    golden["judge_name"],
                    golden.get("judge_model"),
                    golden["rubric_version"],
                ),
            )
            context.log.info(
                f"baseline pinned to {golden['judge_mean']:.2f}: golden run {golden['run_id']} "
                f"(deploy {golden['deploy_id']}, golden set {golden['golden_version']})"
            )
        for day in days:
            res = drift.report_day(conn, day, cfg)
            overall = res.overall
            meta = {
                "judge": MD.text(res.judge_name or "none"),
                "rubric_version": MD.text(res.rubric_version or "none"),
                "alerts": MD.int(len(res.alerts)),
                "report": MD.md(drift.markdown_table(res.rows)),
            }
            if overall is not None:
                for key in (
                    "mean_score",
                    "p10_score",
                    "bad_share",
                    "failure_rate",
                    "delta",
                    "baseline_mean",
                    "mean_p_value",
                ):
                    value = getattr(overall, key)
                    meta[key] = plot_float(value)
            for row in res.rows:
                if row.segment != drift.ALL_SEGMENTS and row.mean_score is not None:
                    meta[f"mean_score/{row.segment}"] = MD.float(row.mean_score)
            # Every other criterion judged that day: its own series, overall and per segment
            # (bounded by the criteria configured times the segments).
            for crit, cres in drift.criterion_reports(conn, day, cfg).items():
                meta[f"alerts/{crit}"] = MD.int(len(cres.alerts))
                meta[f"report/{crit}"] = MD.md(drift.markdown_table(cres.rows))
                for row in cres.rows:
                    name = "overall" if row.segment == drift.ALL_SEGMENTS else row.segment
                    meta[f"mean_score/{crit}/{name}"] = plot_float(row.mean_score)
                    meta[f"bad_share/{crit}/{name}"] = plot_float(row.bad_share)
                for row in cres.alerts:
                    alerting.append(f"{day} {crit} {row.segment}: {row.verdict}")
                    context.log.warning(f"DRIFT {day} {crit} {row.segment}: {row.verdict}")
            per_day[day] = meta
            for row in res.alerts:
                alerting.append(f"{day} {row.segment}: {row.verdict}")
                context.log.warning(f"DRIFT {day} {row.segment}: {row.verdict}")
    check = dg.AssetCheckResult(
        check_name="no_drift_alert",
        passed=not alerting,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"alerts": MD.md("\n".join(f"- {a}" for a in alerting) or "none")},
    )
    yield from materialize_days(context, days, per_day, [check])


daily_drift_job = dg.define_asset_job(
    "daily_drift_job",
    # The anchor set is re-judged in the same run, before the incidents read its verdict.
    selection=dg.AssetSelection.groups("drift") | dg.AssetSelection.assets("judge_anchors"),
    description="Ingest, sample, judge, check the judge, report and track incidents for a day.",
)


@dg.schedule(
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=daily_drift_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_drift_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """02:00 UTC: the drift loop for the day that just ended."""
    tick = context.scheduled_execution_time.astimezone(dt.UTC)
    day = (tick - dt.timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"drift-{day}", partition_key=day)
