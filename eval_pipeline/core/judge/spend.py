"""The judge's daily spend ledger (``judge_spend``) and a meter for judging outside the
drift loop.

The ledger has one line per day, judge identity (``name/model/rubric``) and purpose. It
lives here, below the drift loop, so that the regression gate and the A/B run (which the
drift loop reads) can write their own lines without an import cycle; ``drift.budget``
re-exports it with the budget that reads it.

``SpendMeter`` wraps the judge a gate or an A/B run uses and counts what it actually
asked: every fresh judgment is one call (one judgment of one criterion, as the drift loop
counts), a cache hit (``attempts == 0``) is free, and the cost is the judge's price on the
tokens of those calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
import pandas as pd

from eval_pipeline.core.judge.base import Judge, JudgeRequest, Judgment, judge_criteria
from eval_pipeline.core.store import replace_rows

PURPOSES = ("drift", "drift-follow-up", "anchors", "repeats", "ab", "gate")


def judge_key(name: str | None, model: str | None, rubric: str | None) -> str:
    """The judge identity the ledger and the budget are kept by."""
    return "/".join(x for x in (name, model, rubric) if x)


def record_spend(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    judge: str,
    purpose: str,
    calls: int,
    cost: float | None,
) -> None:
    """Set the day's line for (judge, purpose): a re-run of the day replaces its figure."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r} (known: {', '.join(PURPOSES)})")
    frame = pd.DataFrame(
        {
            "partition_date": [day],
            "judge": [judge],
            "purpose": [purpose],
            "calls": [int(calls)],
            "cost": pd.array([cost], dtype="Float64"),
            "recorded_at": [pd.Timestamp.now(tz="UTC").tz_localize(None)],
        }
    )
    replace_rows(
        conn,
        "judge_spend",
        "partition_date = ? AND judge = ? AND purpose = ?",
        [day, judge, purpose],
        frame=frame,
    )


def add_spend(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    judge: str,
    purpose: str,
    calls: int,
    cost: float | None,
) -> None:
    """Add one run's calls to the day's line: gate and A/B runs are separate events, and
    several a day all draw on the budget."""
    row = conn.execute(
        "SELECT calls, cost FROM judge_spend WHERE partition_date = ? AND judge = ? "
        "AND purpose = ?",
        [day, judge, purpose],
    ).fetchone()
    if row is not None:
        calls += int(row[0])
        if row[1] is not None and not pd.isna(row[1]):
            cost = (cost or 0.0) + float(row[1])
    record_spend(conn, day, judge, purpose, calls, cost)


def run_day(started_at: dt.datetime) -> dt.date:
    """The ledger day of a run: its start's UTC date (naive times are UTC already)."""
    if started_at.tzinfo is not None:
        started_at = started_at.astimezone(dt.UTC)
    return started_at.date()


class SpendMeter:
    """A judge that counts its fresh judgments and their tokens (see the module doc)."""

    def __init__(self, judge: Judge) -> None:
        self.inner = judge
        self.name, self.model, self.rubric_version = judge.name, judge.model, judge.rubric_version
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def __getattr__(self, attr: str):  # versions, cost_estimate, ... of the wrapped judge
        return getattr(self.inner, attr)

    def _count(self, judgments: Sequence[Judgment]) -> None:
        for j in judgments:
            if j.attempts == 0:  # answered from the cache
                continue
            self.calls += 1
            self.prompt_tokens += j.prompt_tokens or 0
            self.completion_tokens += j.completion_tokens or 0

    def judge_many(self, requests: Sequence[JudgeRequest], progress=None) -> list[Judgment]:
        out = self.inner.judge_many(requests, progress=progress)
        self._count(out)
        return out

    def judge_criteria(self, items, progress=None) -> list[dict[str, Judgment]]:
        out = judge_criteria(self.inner, items, progress)
        self._count([j for per in out for j in per.values()])
        return out

    @property
    def key(self) -> str:
        return judge_key(self.name, self.model, self.rubric_version)

    def cost(self) -> float | None:
        price = getattr(self.inner, "cost_estimate", None)
        if not callable(price) or not self.calls:
            return None
        return price(float(self.prompt_tokens), float(self.completion_tokens))
