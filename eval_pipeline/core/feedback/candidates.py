"""Eval candidates: every trace with a thumbs-down, joined with the trace, awaiting review.

One candidate per trace (several users disliking the same answer is one failure to review,
with all their comments). A thumbs-down whose trace is not in ``raw_traces`` is kept with
``trace_found = false`` (never dropped) and filled in on a later run once the trace arrives.
Re-running changes no review status: it adds new candidates and refreshes report counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import duckdb

STATUSES = ("pending", "approved", "rejected", "promoted", "refused")


def candidate_id(trace_id: str) -> str:
    return "c-" + hashlib.sha256(trace_id.encode()).hexdigest()[:16]


@dataclass
class CandidatesResult:
    created: int
    updated: int
    filled_in: int  # candidates whose trace arrived since they were created
    total: int
    by_status: dict[str, int]
    trace_unknown: int


_UPSERT = """
INSERT INTO eval_candidates AS c
SELECT
    'c-' || left(sha256(d.trace_id), 16), d.trace_id, t.trace_id IS NOT NULL,
    t.user_query, t.assistant_response, t.segment, t.model, t.prompt_version, t.trace_date,
    d.reports, to_json(d.comments), to_json(d.feedback_ids),
    'pending', NULL, NULL, $now, $now
FROM (
    SELECT trace_id, count(*) AS reports,
           coalesce(list(comment ORDER BY coalesce(ts, received_at, ingested_at), ingested_at, line_no)
                    FILTER (WHERE comment IS NOT NULL AND trim(comment) <> ''), []) AS comments,
           list(feedback_id ORDER BY coalesce(ts, received_at, ingested_at), ingested_at, line_no)
               AS feedback_ids
    FROM feedback WHERE rating = 'down' GROUP BY trace_id
) d
LEFT JOIN (
    SELECT trace_id,
           arg_max(user_query, partition_date) AS user_query,
           arg_max(assistant_response, partition_date) AS assistant_response,
           arg_max(segment, partition_date) AS segment,
           arg_max(model, partition_date) AS model,
           arg_max(prompt_version, partition_date) AS prompt_version,
           max(partition_date) AS trace_date
    FROM raw_traces
    WHERE trace_id IN (SELECT trace_id FROM feedback WHERE rating = 'down')
    GROUP BY trace_id
) t ON t.trace_id = d.trace_id
ON CONFLICT (candidate_id) DO UPDATE SET
    reports = excluded.reports,
    comments = excluded.comments,
    feedback_ids = excluded.feedback_ids,
    trace_found = c.trace_found OR excluded.trace_found,
    user_query = CASE WHEN c.trace_found THEN c.user_query ELSE excluded.user_query END,
    assistant_response = CASE WHEN c.trace_found THEN c.assistant_response
                              ELSE excluded.assistant_response END,
    segment = CASE WHEN c.trace_found THEN c.segment ELSE excluded.segment END,
    model = CASE WHEN c.trace_found THEN c.model ELSE excluded.model END,
    prompt_version = CASE WHEN c.trace_found THEN c.prompt_version
                          ELSE excluded.prompt_version END,
    trace_date = CASE WHEN c.trace_found THEN c.trace_date ELSE excluded.trace_date END,
    updated_at = CASE WHEN c.reports <> excluded.reports
                        OR c.trace_found <> (c.trace_found OR excluded.trace_found)
                      THEN excluded.updated_at ELSE c.updated_at END
"""


def build_candidates(
    conn: duckdb.DuckDBPyConnection, now: dt.datetime | None = None
) -> CandidatesResult:
    """Create or refresh candidates from every thumbs-down in the store (idempotent)."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn.execute("BEGIN TRANSACTION")
    try:
        before = dict(
            (cid, (found, reports))
            for cid, found, reports in conn.execute(
                "SELECT candidate_id, trace_found, reports FROM eval_candidates"
            ).fetchall()
        )
        conn.execute(_UPSERT, {"now": now})
        after = conn.execute(
            "SELECT candidate_id, trace_found, reports FROM eval_candidates"
        ).fetchall()
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    created = sum(1 for cid, _, _ in after if cid not in before)
    filled = sum(1 for cid, found, _ in after if cid in before and found and not before[cid][0])
    updated = sum(
        1 for cid, found, reports in after if cid in before and before[cid] != (found, reports)
    )
    by_status = dict(
        conn.execute(
            "SELECT status, count(*) FROM eval_candidates GROUP BY status ORDER BY status"
        ).fetchall()
    )
    unknown = conn.execute(
        "SELECT count(*) FROM eval_candidates WHERE NOT trace_found AND status = 'pending'"
    ).fetchall()[0][0]
    return CandidatesResult(created, updated, filled, len(after), by_status, int(unknown))


@dataclass
class Candidate:
    candidate_id: str
    trace_id: str
    trace_found: bool
    user_query: str | None
    assistant_response: str | None
    segment: str | None
    model: str | None
    prompt_version: str | None
    reports: int
    comments: list[str]
    status: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


_COLUMNS = (
    "candidate_id, trace_id, trace_found, user_query, assistant_response, segment, "
    "model, prompt_version, reports, comments, status"
)


def _row(row: tuple) -> Candidate:
    values = list(row)
    values[9] = json.loads(values[9]) if values[9] else []
    return Candidate(*values)


def pending(conn: duckdb.DuckDBPyConnection, limit: int | None = None) -> list[Candidate]:
    """Pending candidates, traces found first, most-reported first, then oldest."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM eval_candidates WHERE status = 'pending' "
        "ORDER BY trace_found DESC, reports DESC, created_at, candidate_id "
        + ("LIMIT ?" if limit else ""),
        [limit] if limit else [],
    ).fetchall()
    return [_row(r) for r in rows]


def get(conn: duckdb.DuckDBPyConnection, cid: str) -> Candidate | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM eval_candidates WHERE candidate_id = ?", [cid]
    ).fetchall()
    return _row(row[0]) if row else None


def counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    found = dict(
        conn.execute("SELECT status, count(*) FROM eval_candidates GROUP BY status").fetchall()
    )
    return {s: int(found.get(s, 0)) for s in STATUSES}
