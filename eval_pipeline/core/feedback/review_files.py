"""Review through a file: export the pending candidates as JSON lines a person edits,
then import the decisions, all or nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from eval_pipeline.core.feedback import candidates as cands
from eval_pipeline.core.feedback.review import (
    DECISIONS,
    ConnFactory,
    Decision,
    ReviewError,
    check_approval,
    record,
)


def export_pending(conn: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Write the pending candidates to a JSONL file a person can edit and import."""
    rows = cands.pending(conn)
    lines = []
    for c in rows:
        lines.append(
            json.dumps(
                {
                    "candidate_id": c.candidate_id,
                    "trace_id": c.trace_id,
                    "segment": c.segment,
                    "model": c.model,
                    "reports": c.reports,
                    "comments": c.comments,
                    "query": c.user_query,
                    "bad_answer": c.assistant_response,
                    "decision": None,
                    "input": None,
                    "expected": None,
                    "grader": "judge",
                    "tags": ["feedback"] + ([c.segment] if c.segment else []),
                    "note": None,
                },
                ensure_ascii=False,
            )
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)
    return len(lines)


EXPORT_HELP = (
    'Edit each line: "decision": "approve" or "reject" (null = leave pending), and for an '
    'approval "expected" (the expected answer, or reference notes for the judge) and "grader" '
    '("judge", "exact", "contains", "regex", "json", "numeric", or an object with '
    'parameters). "input" null means the trace\'s query.'
)


@dataclass
class ImportResult:
    decisions: list[Decision]
    left_pending: int
    errors: list[str]
    review_ids: list[str] = field(default_factory=list)


def parse_import(conn: duckdb.DuckDBPyConnection, path: Path, reviewer: str) -> ImportResult:
    """Validate every line of an edited export; nothing is recorded here."""
    decisions, errors, left = [], [], 0
    seen: set[str] = set()
    raw = Path(path).read_bytes()
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            errors.append(f"{where}: not a JSON line ({exc})")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("candidate_id"), str):
            errors.append(f"{where}: a line must be an object with a candidate_id")
            continue
        cid = obj["candidate_id"]
        decision = (
            (obj.get("decision") or "").strip().lower()
            if isinstance(obj.get("decision"), str | type(None))
            else "?"
        )
        if decision in ("", "skip", "pending"):
            left += 1
            continue
        if decision not in DECISIONS:
            errors.append(
                f"{where}: decision must be approve, reject or null (got {obj.get('decision')!r})"
            )
            continue
        if cid in seen:
            errors.append(f"{where}: candidate {cid} appears twice")
            continue
        seen.add(cid)
        c = cands.get(conn, cid)
        if c is None:
            errors.append(f"{where}: no candidate {cid}")
            continue
        if c.status != "pending":
            errors.append(f"{where}: candidate {cid} is already {c.status}")
            continue
        grader = obj.get("grader") or "judge"
        grader = {"type": grader} if isinstance(grader, str) else grader
        tags = obj.get("tags") or []
        note = obj.get("note")
        if note is not None and not isinstance(note, str):
            errors.append(f"{where}: note must be text or null")
            continue
        # The person importing is the reviewer of record: a line cannot name someone else
        # (the audit trail would be spoofable). What the file claims is kept in the note.
        claimed = obj.get("reviewer")
        if claimed not in (None, "", reviewer):
            claim = f"[file says reviewer: {str(claimed)[:100]}]"
            note = f"{note} {claim}" if note else claim
        d = Decision(
            cid,
            decision,
            reviewer,
            expected=obj.get("expected"),
            grader=grader,
            tags=tags,
            input=obj.get("input"),
            note=note,
            via="import",
        )
        if decision == "approve":
            if obj.get("expected") in (None, ""):
                errors.append(
                    f"{where}: approve needs an expected answer (or, for the judge, "
                    "reference notes)"
                )
                continue
            try:
                check_approval(c, d)
            except ReviewError as exc:
                errors.append(f"{where}: {exc}")
                continue
        decisions.append(d)
    return ImportResult(decisions, left, errors)


def import_decisions(connect: ConnFactory, path: Path, reviewer: str) -> ImportResult:
    """All or nothing: if any line is wrong, nothing is recorded and every error is listed."""
    with connect() as conn:
        res = parse_import(conn, path, reviewer)
        if res.errors:
            return res
        for d in res.decisions:
            res.review_ids.append(record(conn, d))
    return res
