"""Human review of eval candidates: a decision, checked and recorded.

Every decision lands in ``candidate_reviews`` with the reviewer and time; the candidate's
status moves from pending to approved or rejected. Skipping records nothing. The ways a
person makes decisions are the terminal flow (``review_session.py``) and an edited export
file (``review_files.py``).

An approval is checked as a golden case (grader known, parameters valid) before it is
recorded, so promotion never meets a case a reviewer could have fixed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb

from eval_pipeline.core.feedback import candidates as cands
from eval_pipeline.core.feedback import golden
from eval_pipeline.core.regression import cases

GRADERS = ("judge", "exact", "contains", "regex", "json", "numeric")
DECISIONS = ("approve", "reject")

ConnFactory = Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]]


class ReviewError(ValueError):
    pass


@dataclass
class Decision:
    candidate_id: str
    decision: str  # approve | reject
    reviewer: str
    expected: Any = None
    grader: dict | None = None
    tags: list[str] = field(default_factory=list)
    input: Any = None  # None: the trace's query
    note: str | None = None
    via: str = "terminal"
    reviewed_at: dt.datetime | None = None


def check_approval(candidate: cands.Candidate, d: Decision) -> cases.Case:
    """The case this approval would promote; ReviewError saying what is wrong."""
    value = d.input if d.input is not None else candidate.user_query
    if value is None:
        raise ReviewError("the trace is unknown: give the input (the user's question)")
    try:
        return cases.parse_case(
            {
                "id": golden.case_id_for(candidate.candidate_id),
                "input": value,
                "expected": d.expected,
                "grader": d.grader or {"type": "judge"},
                "tags": d.tags,
            }
        )
    except ValueError as exc:
        raise ReviewError(str(exc)) from exc


def record(conn: duckdb.DuckDBPyConnection, d: Decision) -> str:
    """Record one decision for a pending candidate; returns the review id."""
    if d.decision not in DECISIONS:
        raise ReviewError(f"decision must be approve or reject (got {d.decision!r})")
    if not d.reviewer or not d.reviewer.strip():
        raise ReviewError("a reviewer name is required")
    candidate = cands.get(conn, d.candidate_id)
    if candidate is None:
        raise ReviewError(f"no candidate {d.candidate_id!r}")
    if candidate.status != "pending":
        raise ReviewError(f"candidate {d.candidate_id} is already {candidate.status}")
    grader = None
    if d.decision == "approve":
        grader = check_approval(candidate, d).grader
    now = d.reviewed_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    review_id = "r-" + uuid.uuid4().hex[:16]
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            "INSERT INTO candidate_reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                review_id,
                d.candidate_id,
                d.decision,
                json.dumps(d.input) if d.input is not None else None,
                json.dumps(d.expected) if d.decision == "approve" else None,
                json.dumps(grader) if grader else None,
                json.dumps(d.tags) if d.tags else None,
                d.note,
                d.reviewer.strip(),
                now,
                d.via,
            ],
        )
        # The status guard makes a concurrent reviewer's decision lose cleanly.
        changed = conn.execute(
            "UPDATE eval_candidates SET status = ?, updated_at = ? "
            "WHERE candidate_id = ? AND status = 'pending' RETURNING candidate_id",
            ["approved" if d.decision == "approve" else "rejected", now, d.candidate_id],
        ).fetchall()
        if not changed:
            raise ReviewError(f"candidate {d.candidate_id} was decided meanwhile")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return review_id


def is_lock_error(exc: BaseException) -> bool:
    """DuckDB's "another process holds the file" (after the store's own wait gave up)."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.IOException) and "lock" in text and "conflict" in text
