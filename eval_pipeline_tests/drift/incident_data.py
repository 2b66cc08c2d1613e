"""Constructed judged days for the incident tests: exact score counts, no randomness."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pandas as pd

from eval_pipeline.core.drift.incidents import SegmentDay
from eval_pipeline.core.drift.reference import Counts

D0 = dt.date(2026, 5, 1)

# 40 judged traces with mean 4.2 (sd about 0.9), and the same traffic with a drop.
HEALTHY = Counts((1, 2, 4, 12, 21))  # mean 4.25

BROKEN = Counts((10, 8, 6, 8, 8))  # mean 2.9


def day(i: int) -> dt.date:
    return D0 + dt.timedelta(days=i)


def days(pattern: dict[str, list[Counts]], judge: str = "j") -> list[SegmentDay]:
    """{segment: [counts of day 0, day 1, ...]} -> SegmentDays."""
    return [
        SegmentDay(day(i), seg, c, 0, judge)
        for seg, cs in pattern.items()
        for i, c in enumerate(cs)
    ]


def expand(counts: Counts) -> list[int]:
    return [s for s, n in zip(range(1, 6), counts.c, strict=True) for _ in range(n)]


def insert_day(
    conn: duckdb.DuckDBPyConnection,
    d: dt.date,
    segment: str,
    counts: Counts,
    prompt_version: str = "v1",
    n_failed: int = 0,
) -> None:
    """Judged traces of one segment-day in raw_traces and judge_scores (one bulk insert)."""
    scores = expand(counts) + [None] * n_failed
    ids = [f"{d}-{segment}-{prompt_version}-{k}" for k in range(len(scores))]
    traces = pd.DataFrame(
        {
            "partition_date": d,
            "trace_id": ids,
            "ts": dt.datetime.combine(d, dt.time(12)),
            "user_query": "q",
            "assistant_response": "a",
            "segment": segment,
            "model": "m1",
            "prompt_version": prompt_version,
            "user_id": "u",
            "metadata": [
                json.dumps({"channel": "web" if k % 2 else "app"}) for k in range(len(ids))
            ],
            "source": "jsonl",
        }
    )
    judged = pd.DataFrame(
        {
            "partition_date": d,
            "trace_id": ids,
            "segment": segment,
            "judgment_key": [f"k-{t}" for t in ids],
            "state": ["ok" if s else "error" for s in scores],
            "score": pd.array(scores, dtype="Int64"),
            "judge_name": "heuristic",
            "rubric_version": "v1",
            "cache_hit": False,
        }
    )
    for table, frame in (("raw_traces", traces), ("judge_scores", judged)):
        conn.register("_rows", frame)
        cols = ", ".join(frame.columns)
        conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _rows")
        conn.unregister("_rows")
