"""Incidents per criterion: every criterion other than quality replayed through the same
incident engine (``incidents.run_history``: healthy-day reference, day test, CUSUM) over its
own score series, and stored in drift_incidents_criteria / drift_day_states_criteria.

A criterion's incidents notify through the same lifecycle as quality's (``criteria_events``:
ids ``<criterion>:inc-...``, the criterion named in every title and in the details), so
the notifications table deduplicates them the same way; manual acts (acknowledge, resolve)
apply to quality's incidents. A
rebaseline of a segment applies to every criterion (it declares a new normal for the
segment). Scores are not reweighted for a budgeted sample here; the only cause named is a
segment (for the overall row, so that it joins that segment's incident).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from eval_pipeline.core.drift.cause import Cause
from eval_pipeline.core.drift.history import (
    cause_function,
    events,
    judge_key,
    load_rebaselines,
)
from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.records import ALL, History, SegmentDay
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.store import replace_rows


def criteria_judged(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every criterion other than quality with stored scores."""
    rows = conn.execute(
        "SELECT DISTINCT criterion FROM judge_scores WHERE criterion <> 'quality' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def load_criterion_days(conn: duckdb.DuckDBPyConnection, criterion: str) -> list[SegmentDay]:
    rows = conn.execute(
        "SELECT partition_date, segment, any_value(judge_name), any_value(judge_model), "
        "any_value(rubric_version), "
        + ", ".join(f"count(*) FILTER (WHERE state = 'ok' AND score = {s})" for s in range(1, 6))
        + ", count(*) FILTER (WHERE state <> 'ok') FROM judge_scores "
        "WHERE criterion = ? GROUP BY ALL ORDER BY 1, 2",
        [criterion],
    ).fetchall()
    return [
        SegmentDay(day, seg, Counts(tuple(int(x) for x in r[:5])), int(r[5]), judge_key(j, m, rv))
        for day, seg, j, m, rv, *r in rows
    ]


def load_criterion_traces(conn: duckdb.DuckDBPyConnection, criterion: str) -> pd.DataFrame:
    """One row per ok judgment of the criterion: day, segment, score. The only dimension a
    cause can name is the segment, so the overall row's alarm joins the incident of the
    segment that explains it rather than opening one of its own."""
    frame = conn.execute(
        "SELECT partition_date AS day, segment, score::DOUBLE AS score FROM judge_scores "
        "WHERE state = 'ok' AND criterion = ?",
        [criterion],
    ).df()
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def segment_cause(traces: pd.DataFrame):
    """A ``cause_fn`` that names segments only. A criterion judged on one segment alone (only
    the RAG segment has documents to ground on) has an overall row that is that segment:
    the overall row's cause is then that segment, so both are one incident."""
    by_segment = cause_function(traces)

    def cause_fn(segment: str, ref_days, cur_days, hypothesis: str | None = None) -> Cause:
        if segment != ALL:  # a segment has no dimension left to name: no cause, no text
            return Cause(None, "")
        judged = set(traces.loc[traces["day"].isin(set(cur_days)), "segment"])
        if len(judged) == 1:
            (only,) = judged
            return Cause(f"segment={only}", f"{only} is the only segment judged")
        return by_segment(segment, ref_days, cur_days, hypothesis=hypothesis)

    return cause_fn


def recompute_criteria(
    conn: duckdb.DuckDBPyConnection, config: IncidentConfig | None = None
) -> dict[str, History]:
    """Replay every criterion's stored days and store its incidents and day states."""
    rebaselines = load_rebaselines(conn)
    out = {
        c: run_history(
            load_criterion_days(conn, c),
            config or IncidentConfig(),
            rebaselines=rebaselines,
            cause_fn=segment_cause(load_criterion_traces(conn, c)),
        )
        for c in criteria_judged(conn)
    }
    _save(conn, out)
    return out


def criteria_events(histories: dict[str, History], through: dt.date | None = None) -> list[dict]:
    """Every criterion's lifecycle events as IncidentEvent fields, ids as stored
    (``<criterion>:<id>``), the criterion named in the title and the details."""
    return [
        {
            **e,
            "incident_id": f"{crit}:{e['incident_id']}",
            "details": {**e["details"], "criterion": crit},
        }
        for crit, h in histories.items()
        for e in events(h, through=through, metric=crit)
    ]


def _save(conn: duckdb.DuckDBPyConnection, histories: dict[str, History]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    incidents = [
        {
            "criterion": c,
            "incident_id": f"{c}:{i.incident_id}",
            "status": i.status,
            "segments": list(i.segments),
            "opened_on": i.opened_on,
            "detected_on": i.detected_on,
            "last_degraded_on": i.last_degraded_on,
            "resolved_on": i.resolved_on,
            "resolution": i.resolution,
            "detector": i.detector,
            "reference_mean": i.reference_mean,
            "current_mean": i.current_mean,
            "peak_drop": i.peak_drop,
            "current_drop": i.current_drop,
            "computed_at": now,
        }
        for c, h in histories.items()
        for i in h.incidents
    ]
    states = [
        {
            "partition_date": v.day,
            "criterion": c,
            "segment": v.segment,
            "state": v.state,
            "n": v.n,
            "n_failed": v.n_failed,
            "mean_score": v.mean,
            "reference_mean": v.reference_mean,
            "drop_points": v.drop,
            "p_holm": v.p_holm,
            "cusum": v.cusum,
            "incident_id": f"{c}:{v.incident_id}" if v.incident_id else None,
            "verdict": v.verdict,
        }
        for c, h in histories.items()
        for v in h.verdicts
    ]
    replace_rows(
        conn,
        "drift_incidents_criteria",
        "true",
        [],
        frame=pd.DataFrame(incidents) if incidents else None,
    )
    replace_rows(
        conn,
        "drift_day_states_criteria",
        "true",
        [],
        frame=pd.DataFrame(states) if states else None,
    )
