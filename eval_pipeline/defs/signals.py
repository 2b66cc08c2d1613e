"""The ``trace_signals`` daily asset: cheap signals on every trace of the day (no judge),
their drift tests against the trailing healthy reference, and a float per signal per
partition so the UI plots them. Same partitions, pool and backfill policy as the drift
loop; it reads ``raw_traces`` and writes ``trace_signals`` and ``trace_signal_tests``.
"""

import dagster as dg

from eval_pipeline.core.signals import compute, detect
from eval_pipeline.core.signals.config import DIST_SIGNALS, RATE_SIGNALS, load_config
from eval_pipeline.defs.drift_loop import COMMON, raw_traces
from eval_pipeline.defs.reporting import materialize_days, plot_float, run_days
from eval_pipeline.defs.resources import EvalStore

MD = dg.MetadataValue


class TraceSignalsConfig(dg.Config):
    # A JSON file of signals settings (patterns, floors, which signals page); none: defaults.
    config_path: str | None = None
    reference_days: int = 14


def day_metadata(rows, findings) -> dict:
    """Every signal of the day as floats (overall, and per segment for rates, medians and
    shares), the counts, and the tests as a markdown table."""
    meta: dict = {}
    overall = rows[rows.segment == compute.ALL]
    n = overall[overall.signal == "refusal_rate"].n
    meta["dagster/row_count"] = MD.int(int(n.iloc[0]) if not n.empty else 0)
    for r in overall.itertuples(index=False):
        if r.signal in RATE_SIGNALS:
            meta[r.signal] = plot_float(r.value)
        elif r.signal in DIST_SIGNALS:
            meta[f"{r.signal}_median"] = plot_float(r.value)
            meta[f"{r.signal}_p10"] = plot_float(r.p10)
            meta[f"{r.signal}_p90"] = plot_float(r.p90)
        else:
            meta[f"{r.signal}/{r.key}"] = plot_float(r.value)
    for r in rows[rows.segment != compute.ALL].itertuples(index=False):
        if r.signal in RATE_SIGNALS:
            meta[f"{r.signal}/{r.segment}"] = plot_float(r.value)
        elif r.signal in ("answer_chars", "latency_ms"):
            meta[f"{r.signal}_median/{r.segment}"] = plot_float(r.value)
        elif r.signal == "segment_share":
            meta[f"segment_share/{r.key}"] = plot_float(r.value)
    fired = [f for f in findings if f.fired]
    meta["pages"] = MD.int(sum(f.pages for f in fired))
    meta["informs"] = MD.int(sum(not f.pages for f in fired))
    meta["tests"] = MD.md(detect.markdown_table(findings) if findings else "no test yet")
    return meta


@dg.asset(
    kinds={"duckdb"},
    deps=[raw_traces],
    check_specs=[
        dg.AssetCheckSpec(
            "no_signal_page",
            asset="trace_signals",
            description="Warns when a signal (refusals, cut-offs, lengths, latency, mix) pages.",
        )
    ],
    **COMMON,
)
def trace_signals(context: dg.AssetExecutionContext, config: TraceSignalsConfig, store: EvalStore):
    """Refusal, empty, cut-off and error rates, lengths, latency, tokens, cost and mix over
    every trace of the day, overall and per segment, tested against healthy days."""
    cfg = load_config(config.config_path)
    days = run_days(context)
    per_day = {}
    paging = []
    with store.connect() as conn:
        for day in days:
            res = compute.record_day(conn, day, cfg)
            findings = detect.run_tests(conn, day, cfg, n_reference_days=config.reference_days)
            per_day[day] = day_metadata(res.rows, findings)
            for f in findings:
                if f.fired:
                    (context.log.warning if f.pages else context.log.info)(
                        f"SIGNAL {day} {'PAGE' if f.pages else 'inform'}: {f.message}"
                    )
                    if f.pages:
                        paging.append(f"{day} {f.message}")
            context.log.info(f"{day}: signals over {res.n_traces} traces")
    check = dg.AssetCheckResult(
        check_name="no_signal_page",
        passed=not paging,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"pages": MD.md("\n".join(f"- {p}" for p in paging) or "none")},
    )
    yield from materialize_days(context, days, per_day, [check])
