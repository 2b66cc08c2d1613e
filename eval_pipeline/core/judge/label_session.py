"""The interactive labelling session: one judged trace at a time, the judge's score hidden.

Each label is stored as soon as it is given, so quitting (q, Ctrl-D, Ctrl-C) loses nothing
and the next session resumes with the traces not yet labelled.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import duckdb

from eval_pipeline.core.judge import labels
from eval_pipeline.core.terminal import printable

ConnFactory = Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]]


def _block(text: str, width: int = 88, max_chars: int = 4000) -> str:
    text = printable(text)
    if len(text) > max_chars:
        text = text[:max_chars] + f" ... [{len(text) - max_chars} more characters]"
    lines = []
    for para in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(para, width, replace_whitespace=False) or [""])
    return "\n".join("    " + line for line in lines)


def show(item: labels.LabelItem, index: int, total: int) -> str:
    """What a person sees: the question and the answer. Never the judge's score or reason."""
    return (
        f"\n[{index}/{total}] trace {printable(item.trace_id)} ({item.partition_date}, "
        f"segment {printable(item.segment)})\n  Question:\n{_block(item.query)}\n"
        f"  Answer:\n{_block(item.response)}"
    )


SCALE_HELP = "1 = useless or harmful ... 5 = correct, complete and helpful"


@dataclass
class SessionResult:
    labelled: int = 0
    skipped: int = 0
    quit: bool = False
    remaining: int = 0


class _Quit(Exception):
    pass


def run_session(
    connect: ConnFactory,
    identity: str,
    labeller: str,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
    limit: int | None = None,
    stratify: bool = True,
) -> SessionResult:
    with connect() as conn:
        todo = labels.queue(conn, identity, labeller, limit, stratify=stratify)
    res = SessionResult()
    if not todo:
        say(f"Nothing to label for {printable(identity)}: every judged trace has your label.")
        return res
    say(
        f"{len(todo)} trace(s) to label for judge {printable(identity)}. Labeller: "
        f"{printable(labeller)}. Score each answer 1-5 ({SCALE_HELP}); s skips, q quits. "
        "Labels are saved as you go; the next session resumes."
    )

    def answers() -> Iterator[str]:
        while True:
            try:
                yield ask("Your score [1-5, s, q]: ").strip().lower()
            except EOFError as exc:
                raise _Quit from exc

    try:
        for i, item in enumerate(todo, 1):
            say(show(item, i, len(todo)))
            for answer in answers():
                if answer in ("q", "quit"):
                    raise _Quit
                if answer in ("s", "skip"):
                    res.skipped += 1
                    break
                if answer in ("1", "2", "3", "4", "5"):
                    try:
                        with connect() as conn:
                            labels.record(conn, item, labeller, int(answer))
                    except (labels.LabelError, duckdb.Error) as exc:
                        say(f"  not saved: {printable(exc)}")
                        continue
                    res.labelled += 1
                    say(f"  saved: {answer}")
                    break
                say("  please type 1, 2, 3, 4, 5, s or q")
    except (_Quit, KeyboardInterrupt):
        res.quit = True
        say("\nStopped. Labels given so far are saved.")
    with connect() as conn:
        res.remaining = len(labels.queue(conn, identity, labeller))
    say(f"Labelled {res.labelled}, skipped {res.skipped}; {res.remaining} trace(s) left.")
    return res


def ask_review_score(connect: ConnFactory, reviewer: str) -> Callable:
    """For `eval-pipeline review --score`: after each decision, the reviewer's own 1-5 score
    of the answer, stored as a judge label (source 'review') of the trace's judgment."""

    def after_decision(candidate, prompt: Callable, say: Callable[[str], None]) -> None:
        while True:
            answer = prompt("Your score of this answer, 1-5 (Enter = skip): ")
            if not answer:
                return
            if answer in ("1", "2", "3", "4", "5"):
                break
            say("  please type 1-5, or press Enter to skip")
        try:
            with connect() as conn:
                labels.record_for_trace(conn, candidate.trace_id, reviewer, int(answer))
        except (labels.LabelError, duckdb.Error) as exc:
            say(f"  score not saved: {printable(exc)}")
            return
        say(f"  score {answer} saved as a judge label")

    return after_decision
