"""Human review of eval candidates: record decisions, the terminal flow, export / import.

A decision is recorded the moment it is made (one short store connection per decision, so
the store is not held while a person thinks): quitting and starting again resumes with what
is still pending. Every decision lands in ``candidate_reviews`` with the reviewer and time;
the candidate's status moves from pending to approved or rejected. Skipping records nothing.

An approval is checked as a golden case (grader known, parameters valid) before it is
recorded, so promotion never meets a case a reviewer could have fixed.

Everything shown comes from end users (queries, answers, comments) and goes through
``terminal.printable``: control characters are shown, never obeyed by the terminal. When
the store stays locked past the store's own wait, the typed decision is kept: the person
can retry, or quit and find it saved in a file ``--import`` reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from eval_pipeline.core.feedback import candidates as cands
from eval_pipeline.core.feedback import golden
from eval_pipeline.core.regression import cases
from eval_pipeline.core.terminal import printable

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


# --- the terminal flow -----------------------------------------------------------------


def _block(text: str | None, width: int = 88) -> str:
    if not text:
        return "    (none)"
    return "\n".join(
        textwrap.fill(printable(p), width, initial_indent="    ", subsequent_indent="    ")
        or "    "
        for p in text.split("\n")
    )


def show(c: cands.Candidate, index: int, total: int) -> str:
    head = f"Candidate {index} of {total}  [{printable(c.candidate_id)}]"
    facts = ", ".join(
        f"{k} {printable(v)}"
        for k, v in (("segment", c.segment), ("model", c.model), ("prompt", c.prompt_version))
        if v
    )
    lines = [
        "",
        "=" * 72,
        head,
        f"trace {printable(c.trace_id)}" + (f"  ({facts})" if facts else ""),
        f"thumbs-down reports: {c.reports}",
    ]
    if not c.trace_found:
        lines.append("!! The trace is not in the store: its query and answer are unknown.")
    lines += [
        "",
        "User query:",
        _block(c.user_query),
        "",
        "Answer the user disliked:",
        _block(c.assistant_response),
        "",
        "User comments:",
    ]
    lines += [f'    "{printable(x)}"' for x in c.comments] or ["    (none)"]
    lines.append("-" * 72)
    return "\n".join(lines)


EXPECTED_PROMPTS = {
    "judge": "Reference answer or notes for the judge: ",
    "exact": "Expected answer (exact): ",
    "contains": "Text the answer must contain (separate several with ' | '): ",
    "regex": "Regex the answer must match: ",
    "json": "Expected JSON object (one line): ",
    "numeric": "Expected number: ",
}


def _parse_expected(grader: str, text: str) -> tuple[Any, dict]:
    """(expected, grader params) from what the reviewer typed."""
    if grader == "contains":
        values = [v.strip() for v in text.split("|") if v.strip()]
        return (values[0] if len(values) == 1 else values), {}
    if grader == "numeric":
        try:
            return float(text) if any(ch in text for ch in ".eE") else int(text), {}
        except ValueError as exc:
            raise ReviewError(f"{text!r} is not a number") from exc
    if grader == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReviewError(f"not JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            raise ReviewError("expected a JSON object")
        return value, {}
    return text, {}


@dataclass
class SessionResult:
    approved: int = 0
    rejected: int = 0
    skipped: int = 0
    quit: bool = False
    still_pending: int = 0
    review_ids: list[str] = field(default_factory=list)


class _Quit(Exception):
    pass


def is_lock_error(exc: BaseException) -> bool:
    """DuckDB's "another process holds the file" (after the store's own wait gave up)."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.IOException) and "lock" in text and "conflict" in text


BUSY = (
    "  the store is busy: another process holds its write lock (a pipeline run?). "
    "Your decision is kept."
)


def save_unrecorded(d: Decision, folder: Path) -> Path:
    """Write a decision that could not be recorded as an import line; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"review-unrecorded-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.jsonl"
    obj = {
        "candidate_id": d.candidate_id,
        "decision": d.decision,
        "input": d.input,
        "expected": d.expected,
        "grader": d.grader or "judge",
        "tags": d.tags,
        "note": d.note,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return path


def run_session(
    connect: ConnFactory,
    reviewer: str,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
    limit: int | None = None,
    unrecorded_dir: Path | None = None,
) -> SessionResult:
    """Walk a person through the pending candidates; each decision is recorded at once."""
    res = SessionResult()
    try:
        with connect() as conn:
            queue = cands.pending(conn, limit)
    except duckdb.IOException as exc:
        if not is_lock_error(exc):
            raise
        say(BUSY.replace(" Your decision is kept.", "") + " Try again in a while.")
        res.quit = True
        return res
    if not queue:
        say("No pending candidates: nothing to review.")
        return res
    say(
        f"{len(queue)} pending candidate(s). Reviewer: {reviewer}. "
        "Decisions are saved as you go; q quits, and the next session resumes."
    )

    def prompt(text: str, allow_empty: bool = True) -> str:
        while True:
            try:
                answer = ask(text)
            except EOFError as exc:
                raise _Quit from exc
            answer = answer.strip()
            if answer or allow_empty:
                return answer
            say("  (an answer is needed here)")

    try:
        for i, c in enumerate(queue, 1):
            say(show(c, i, len(queue)))
            while True:
                choice = prompt("Decision - [a]pprove, [r]eject, [s]kip, [q]uit: ").lower()
                if choice in ("a", "r", "s", "q", "approve", "reject", "skip", "quit"):
                    break
                say("  please type a, r, s or q")
            choice = choice[0]
            if choice == "q":
                raise _Quit
            if choice == "s":
                res.skipped += 1
                say("  skipped (still pending)")
                continue
            if choice == "r":
                note = prompt("Why reject? (Enter = no note): ") or None
                d = Decision(c.candidate_id, "reject", reviewer, note=note)
            else:
                d = _ask_approval(c, reviewer, prompt, say)
            try:
                review_id = _record_patiently(connect, d, prompt, say, unrecorded_dir)
            except ReviewError as exc:
                say(f"  not recorded: {printable(exc)}")
                continue
            res.review_ids.append(review_id)
            if d.decision == "approve":
                res.approved += 1
                say(f"  approved: will become golden case {golden.case_id_for(c.candidate_id)}")
            else:
                res.rejected += 1
                say("  rejected")
    except (_Quit, KeyboardInterrupt):
        res.quit = True
        say("\nStopped. Decisions made so far are saved.")
    try:
        with connect() as conn:
            res.still_pending = cands.counts(conn)["pending"]
    except duckdb.IOException as exc:
        if not is_lock_error(exc):
            raise
        say(f"Approved {res.approved}, rejected {res.rejected}, skipped {res.skipped}.")
        return res
    say(
        f"Approved {res.approved}, rejected {res.rejected}, skipped {res.skipped}; "
        f"{res.still_pending} candidate(s) still pending."
    )
    return res


def _record_patiently(
    connect: ConnFactory, d: Decision, prompt, say, unrecorded_dir: Path | None
) -> str:
    """Record ``d``; while the store is locked, ask to retry or to quit keeping it in a file."""
    while True:
        try:
            with connect() as conn:
                return record(conn, d)
        except duckdb.IOException as exc:
            if not is_lock_error(exc):
                raise
        say(BUSY)
        again = prompt("  [Enter] try again, [q] quit (the decision is saved to a file): ")
        if again.lower().startswith("q"):
            path = save_unrecorded(d, unrecorded_dir or Path.cwd())
            say(f"  saved to {path}; record it later with: eval-pipeline review --import {path}")
            raise _Quit


def _ask_approval(c: cands.Candidate, reviewer: str, prompt, say) -> Decision:
    value = None
    if not c.trace_found:
        value = prompt("Input (the trace is unknown; type the user's question): ", False)
    while True:
        g = prompt(f"Grader [{'/'.join(GRADERS)}] (Enter = judge): ").lower() or "judge"
        if g not in GRADERS:
            say(f"  unknown grader {g!r}; choose one of {', '.join(GRADERS)}")
            continue
        text = prompt(EXPECTED_PROMPTS[g], allow_empty=False)
        try:
            expected, params = _parse_expected(g, text)
            d = Decision(
                c.candidate_id,
                "approve",
                reviewer,
                expected=expected,
                grader={"type": g, **params},
                input=value,
            )
            check_approval(c, d)  # say what is wrong now, not at promotion
        except ReviewError as exc:
            say(f"  {exc}; let's try again")
            continue
        tags_text = prompt("Tags, comma-separated (Enter = none): ")
        tags = [t.strip() for t in tags_text.split(",") if t.strip()]
        if c.segment and c.segment not in tags:
            tags.append(c.segment)
        d.tags = ["feedback", *[t for t in tags if t != "feedback"]]
        return d


# --- export / import -------------------------------------------------------------------


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
