"""The drift loop's last step as a Dagster asset: drift_incidents, replayed from every stored
day on each run, with the judge's trust and the open/resolve notifications.

A thin adapter over ``core/drift`` (history, incidents, judge_gate) and ``core/notify``.
"""

import datetime as dt

import dagster as dg

from eval_pipeline.core.drift import criteria_history, judge_gate, records
from eval_pipeline.core.drift import history as incident_history
from eval_pipeline.core.notify.config import ChannelConfig, NotifyConfigError
from eval_pipeline.core.notify.events import IncidentEvent
from eval_pipeline.core.notify.lifecycle import deliver_in_phases
from eval_pipeline.defs.drift_loop import COMMON, MD, drift_report
from eval_pipeline.defs.incident_settings import IncidentsConfig
from eval_pipeline.defs.reporting import materialize_days, plot_float, run_days
from eval_pipeline.defs.resources import EvalStore


def _segment_name(segment: str) -> str:
    return "overall" if segment == records.ALL else segment


def incidents_markdown(rows: list[records.Incident], limit: int = 20) -> str:
    """Open incidents first, then the most recent resolved ones."""
    if not rows:
        return "no incidents"
    ordered = sorted(rows, key=lambda i: (i.status != "open", -i.opened_on.toordinal()))
    lines = [
        "| incident | status | segments | opened | paged | last degraded | resolved | "
        "peak drop | detector | cause | ack |",
        "|---|---|---|---|---|---|---|---:|---|---|---|",
    ]
    for i in ordered[:limit]:
        cause = (i.cause or "").replace("|", "/")
        lines.append(
            f"| {i.incident_id} | {i.status} | {', '.join(map(_segment_name, i.segments))} | "
            f"{i.opened_on} | {i.detected_on} | {i.last_degraded_on} | "
            f"{i.resolved_on or '–'} {('(' + i.resolution + ')') if i.resolution else ''} | "
            f"{i.peak_drop:.2f} | {i.detector} | {cause} | {i.acknowledged_by or ''} |"
        )
    return "\n".join(lines)


# trace_signals (defs/signals.py) by key: its paging signals feed the same incidents.
# judge_anchors first: a day whose judge changed must not page as app drift.
@dg.asset(
    kinds={"duckdb", "python"}, deps=[drift_report, "trace_signals", "judge_anchors"], **COMMON
)
def drift_incidents(context: dg.AssetExecutionContext, config: IncidentsConfig, store: EvalStore):
    """Open and recent drift incidents, replayed from every stored day on each run (so a
    re-run of a past day reaches the later days), and their open/resolve notifications."""
    cfg = config.incident_config()
    days = run_days(context)
    with store.connect() as conn:
        history = incident_history.recompute(conn, cfg, config.metadata_keys)
        by_criterion = criteria_history.recompute_criteria(conn, cfg)
    last_day = max((v.day for v in history.verdicts), default=days[-1])
    today = dt.date.fromisoformat(config.today) if config.today else dt.datetime.now(dt.UTC).date()
    # Quality's incidents and every other criterion's, through one lifecycle (deduplicated
    # per incident id, event and channel).
    planned = incident_history.events(history, through=last_day)
    planned += criteria_history.criteria_events(by_criterion, through=last_day)
    events = [IncidentEvent(**e) for e in planned]
    with store.connect() as conn:
        gated = judge_gate.gate_events(conn, events, days=days)
    for held in gated.held:
        context.log.warning(f"not paged: {held.title} ({held.details['judge']})")
    events = gated.send
    try:
        channels = ChannelConfig.from_env()
    except NotifyConfigError as exc:
        raise dg.Failure(f"notification channels misconfigured: {exc}") from None
    report = deliver_in_phases(
        store.connect,
        events,
        channels,
        today=today,
        notify_within_days=config.notify_within_days,
        digest=config.digest,
    )
    for error in report.errors:
        context.log.error(f"notification failed: {error}")
    open_now = [i for i in history.incidents if i.status == "open"]
    summary = {
        "incidents": MD.md(incidents_markdown(history.incidents)),
        "open_incidents": MD.int(len(open_now)),
        "incidents_total": MD.int(len(history.incidents)),
        "notifications": MD.json({k: v for k, v in report.as_metadata().items()}),
    }
    # Each other criterion's incidents (notified with quality's): docs/criteria.md.
    for crit, h in by_criterion.items():
        summary[f"open_incidents/{crit}"] = MD.int(sum(i.status == "open" for i in h.incidents))
        summary[f"incidents/{crit}"] = MD.md(incidents_markdown(h.incidents))
    per_day = {}
    for day in days:
        states = [v for v in history.verdicts if v.day == day]
        meta = dict(summary)
        for v in states:
            name = _segment_name(v.segment)
            meta[f"reference_mean/{name}"] = plot_float(v.reference_mean)
            meta[f"drop/{name}"] = plot_float(v.drop)
            meta[f"cusum/{name}"] = plot_float(v.cusum)
            if v.incident_id:
                meta[f"incident/{name}"] = MD.text(v.incident_id)
        if day in gated.trust_by_day:
            meta["judge_trust"] = MD.text(gated.trust_by_day[day].line())
        overall = next((v for v in states if v.segment == records.ALL), None)
        meta["reference_mean"] = plot_float(overall.reference_mean if overall else None)
        meta["open_on_day"] = MD.int(
            sum(1 for i in history.incidents if i.opened_on <= day <= (i.resolved_on or last_day))
        )
        for crit, h in by_criterion.items():
            for v in h.verdicts:
                if v.day == day:
                    meta[f"drop/{crit}/{_segment_name(v.segment)}"] = plot_float(v.drop)
        per_day[day] = meta
    for i in open_now:
        context.log.warning(
            f"OPEN {i.incident_id} {', '.join(i.segments)} since {i.opened_on}: "
            f"-{i.peak_drop:.2f}; {i.cause}"
        )
    yield from materialize_days(context, days, per_day)
