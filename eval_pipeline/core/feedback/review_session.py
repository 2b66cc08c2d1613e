"""The terminal review flow: a person walks through the pending candidates.

A decision is recorded the moment it is made (one short store connection per decision, so
the store is not held while a person thinks): quitting and starting again resumes with what
is still pending.

Everything shown comes from end users (queries, answers, comments) and goes through
``terminal.printable``: control characters are shown, never obeyed by the terminal. When
the store stays locked past the store's own wait, the typed decision is kept: the person
can retry, or quit and find it saved in a file ``--import`` reads.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from eval_pipeline.core.feedback import candidates as cands
from eval_pipeline.core.feedback import golden
from eval_pipeline.core.feedback.review import (
    GRADERS,
    ConnFactory,
    Decision,
    ReviewError,
    check_approval,
    is_lock_error,
    record,
)
from eval_pipeline.core.terminal import printable


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
