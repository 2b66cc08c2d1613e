"""The incident history against the store: load the per-day scores, replay them through
``incidents.run_history``, and write the incidents and day states back.

The replay covers every stored day on every run, so whatever day was (re-)materialised,
the incidents and later days' verdicts reflect it: the same traces give the same rows
whether the days came in one ranged backfill, one by one, or with a past day re-run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Sequence

import duckdb
import pandas as pd

from eval_pipeline.core.drift.cause import Cause, attribute
from eval_pipeline.core.drift.grouping import SegState
from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.records import ALL, Action, History, SegmentDay, planned_events
from eval_pipeline.core.drift.reference import Counts, Rebaseline, Reference, select_reference
from eval_pipeline.core.judge.spend import judge_key  # re-exported: the judge identity
from eval_pipeline.core.signals.detect import paging_alarms
from eval_pipeline.core.store import replace_rows

log = logging.getLogger(__name__)

TRACE_DIMENSIONS = ("prompt_version", "model")
SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def load_segment_days(conn: duckdb.DuckDBPyConnection) -> list[SegmentDay]:
    rows = conn.execute(
        "SELECT partition_date, segment, any_value(judge_name), any_value(judge_model), "
        "any_value(rubric_version), "
        + ", ".join(f"count(*) FILTER (WHERE state = 'ok' AND score = {s})" for s in range(1, 6))
        + ", count(*) FILTER (WHERE state <> 'ok') FROM judge_scores "
        "WHERE criterion = 'quality' GROUP BY ALL ORDER BY 1, 2"
    ).fetchall()
    return [
        SegmentDay(day, seg, Counts(tuple(int(x) for x in r[:5])), int(r[5]), judge_key(j, m, rv))
        for day, seg, j, m, rv, *r in rows
    ]


def load_rebaselines(conn: duckdb.DuckDBPyConnection) -> list[Rebaseline]:
    rows = conn.execute(
        "SELECT segment, from_day, reason, created_by, created_at FROM drift_rebaselines "
        "ORDER BY from_day, segment"
    ).fetchall()
    return [Rebaseline(*r) for r in rows]


def load_actions(conn: duckdb.DuckDBPyConnection) -> list[Action]:
    rows = conn.execute(
        "SELECT incident_id, action, day, actor, reason, acted_at FROM incident_actions "
        "ORDER BY acted_at"
    ).fetchall()
    return [Action(*r) for r in rows]


def load_judged_traces(
    conn: duckdb.DuckDBPyConnection, metadata_keys: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per ok judgment: day, segment, score and the dimensions a cause can name."""
    for key in metadata_keys:
        if not SAFE_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r}: use letters, digits, '_', '-' or '.'")
    meta = "".join(f', json_extract_string(t.metadata, ?) AS "meta:{k}"' for k in metadata_keys)
    # A day whose raw rows the retention dropped keeps its judged traces' dimensions in
    # retained_trace_dimensions.
    frame = conn.execute(
        "SELECT s.partition_date AS day, s.segment, s.score::DOUBLE AS score, "
        f"t.prompt_version, t.model{meta}, t.trace_id IS NULL AS lost FROM judge_scores s "
        "LEFT JOIN (SELECT partition_date, trace_id, prompt_version, model, metadata "
        "FROM raw_traces UNION ALL SELECT partition_date, trace_id, prompt_version, model, "
        "metadata FROM retained_trace_dimensions) t "
        "USING (partition_date, trace_id) WHERE s.state = 'ok' AND s.criterion = 'quality'",
        [f"$.{k}" for k in metadata_keys],
    ).df()
    lost = frame["lost"].astype(bool)
    if lost.any():
        days = sorted({str(d)[:10] for d in frame.loc[lost, "day"]})
        shown = ", ".join(days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")
        log.warning(
            "%d judged traces on %d day(s) (%s) have no model, prompt_version or metadata: "
            "their raw rows were dropped without being kept (restore the days with "
            "eval_pipeline.core.retention.restore_day). Drift causes leave them out.",
            int(lost.sum()),
            len(days),
            shown,
        )
    frame = frame.loc[~lost].drop(columns="lost").reset_index(drop=True)
    # DuckDB DATEs arrive as pandas timestamps; the engine's days are datetime.date.
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def cause_function(traces: pd.DataFrame):
    """A ``cause_fn`` for run_history over a frame from ``load_judged_traces``."""
    dims = [c for c in traces.columns if c in TRACE_DIMENSIONS or c.startswith("meta:")]
    by_seg = dict(tuple(traces.groupby("segment"))) if len(traces) else {}

    def cause_fn(segment: str, ref_days, cur_days, hypothesis: str | None = None) -> Cause:
        frame = traces if segment == ALL else by_seg.get(segment, traces.iloc[:0])
        ref = frame[frame["day"].isin(set(ref_days))]
        cur = frame[frame["day"].isin(set(cur_days))]
        where = "all" if segment == ALL else segment
        dimensions = dims + (["segment"] if segment == ALL else [])
        return attribute(ref, cur, dimensions, where=where, hypothesis=hypothesis)

    return cause_fn


def recompute(
    conn: duckdb.DuckDBPyConnection,
    config: IncidentConfig | None = None,
    metadata_keys: Sequence[str] = (),
) -> History:
    """Replay every stored day and store the result (incidents, day states, report columns)."""
    history = run_history(
        # A budgeted day is tested as drawn, like a fixed one (budget_sampling.engine_counts).
        load_segment_days(conn),
        config or IncidentConfig(),
        rebaselines=load_rebaselines(conn),
        actions=load_actions(conn),
        cause_fn=cause_function(load_judged_traces(conn, metadata_keys)),
        signal_alarms=paging_alarms(conn),
    )
    save(conn, history)
    return history


def references_on(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    config: IncidentConfig | None = None,
    metadata_keys: Sequence[str] = (),
) -> dict[str, Reference]:
    """The reference each row's day test on ``day`` uses (segments and ``ALL``).

    The stored days before ``day`` replayed with the same inputs as ``recompute`` (judge,
    rebaselines, hand actions, causes, paging signals), then ``select_reference`` as
    ``run_history`` calls it for ``day``: the judge of ``day``'s scores, a rebaseline
    dated ``day`` taking effect first. So the held days of a building CUSUM run, the
    incidents' days and other judges' days stay out exactly as the engine leaves them
    out; only ``day``'s own judge must be known (its scores stored). Empty without them."""
    config = config or IncidentConfig()
    stored = load_segment_days(conn)
    judges = [sd.judge for sd in stored if sd.day == day]
    if not judges:
        return {}
    rebaselines = load_rebaselines(conn)
    states: dict[str, SegState] = {}
    run_history(
        [sd for sd in stored if sd.day < day],
        config,
        rebaselines=[rb for rb in rebaselines if rb.from_day < day],
        actions=[a for a in load_actions(conn) if a.day < day],
        cause_fn=cause_function(load_judged_traces(conn, metadata_keys)),
        signal_alarms={k: v for k, v in paging_alarms(conn).items() if k[0] < day},
        states=states,
    )
    for rb in rebaselines:
        if rb.from_day == day:
            states.setdefault(rb.segment, SegState()).rebaseline_from = day
    rows = {sd.segment for sd in stored if sd.day == day}
    if config.overall:
        rows.add(ALL)
    out = {}
    for seg in sorted(rows):
        st = states.get(seg, SegState())
        out[seg] = select_reference(
            st.history, day, judges[-1], config.reference, st.rebaseline_from
        )
    return out


def save(conn: duckdb.DuckDBPyConnection, history: History) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    incidents = pd.DataFrame(
        [
            {
                "incident_id": i.incident_id,
                "kind": i.kind,
                "status": i.status,
                "segments": list(i.segments),
                "opened_on": i.opened_on,
                "detected_on": i.detected_on,
                "last_degraded_on": i.last_degraded_on,
                "resolved_on": i.resolved_on,
                "resolution": i.resolution,
                "resolved_by": i.resolved_by,
                "detector": i.detector,
                "reference_mean": i.reference_mean,
                "current_mean": i.current_mean,
                "peak_drop": i.peak_drop,
                "current_drop": i.current_drop,
                "cause_key": i.cause_key,
                "cause": i.cause,
                "acknowledged_by": i.acknowledged_by,
                "acknowledged_at": i.acknowledged_at,
                "computed_at": now,
            }
            for i in history.incidents
        ]
    )
    states = pd.DataFrame(
        [
            {
                "partition_date": v.day,
                "segment": v.segment,
                "state": v.state,
                "n": v.n,
                "n_failed": v.n_failed,
                "mean_score": v.mean,
                "reference_mean": v.reference_mean,
                "reference_n": v.reference_n,
                "reference_days": v.reference_days,
                "drop_points": v.drop,
                "z": v.z,
                "p_value": v.p,
                "p_holm": v.p_holm,
                "cusum": v.cusum,
                "incident_id": v.incident_id,
                "verdict": v.verdict,
            }
            for v in history.verdicts
        ]
    )
    replace_rows(conn, "drift_incidents", "kind = 'drift'", [], frame=_or_none(incidents))
    replace_rows(conn, "drift_day_states", "true", [], frame=_or_none(states))
    conn.execute(
        "UPDATE drift_reports r SET reference_mean = s.reference_mean, "
        "incident_id = s.incident_id FROM drift_day_states s "
        "WHERE r.partition_date = s.partition_date AND r.segment = s.segment"
    )


def _or_none(frame: pd.DataFrame) -> pd.DataFrame | None:
    return frame if len(frame) else None


def events(history: History, through: dt.date | None = None, metric: str = "quality") -> list[dict]:
    """Lifecycle events as IncidentEvent fields, plus a digest for each later open day up to
    ``through`` (the notifications decide whether digests are sent). ``metric``: the score
    series, named in the titles."""
    out = planned_events(history.incidents, metric)
    if through is None:
        return out
    for inc in history.incidents:
        last = (inc.resolved_on - dt.timedelta(days=1)) if inc.resolved_on else through
        day = inc.detected_on + dt.timedelta(days=1)
        while day <= min(last, through):
            opened = next(e for e in out if e["incident_id"] == inc.incident_id)
            out.append({**opened, "event": "digest", "day": day})
            day += dt.timedelta(days=1)
    return out


def incident_rows(conn: duckdb.DuckDBPyConnection, status: str | None = None) -> list[dict]:
    where = "WHERE status = ?" if status else ""
    frame = conn.execute(
        f"SELECT * FROM drift_incidents {where} ORDER BY opened_on DESC, incident_id",
        [status] if status else [],
    ).df()
    return json.loads(frame.to_json(orient="records", date_format="iso"))
