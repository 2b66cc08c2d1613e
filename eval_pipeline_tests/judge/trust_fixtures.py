"""A small store of judged traces for the judge-trust tests: each answer carries its true
quality (1-5) in its text, and SimJudge reads it with a bias of its own."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd

from eval_pipeline.core.judge import cache
from eval_pipeline.core.judge.base import JudgeRequest, Judgment, Progress

DAY = dt.date(2026, 3, 1)
_QUALITY = re.compile(r"quality (\d)")


@dataclass
class SimJudge:
    """Reads the quality from the answer; ``bias`` shifts it; counts every request."""

    bias: int = 0
    name: str = "sim"
    model: str | None = "sim-model"
    rubric_version: str = "sim-v1"
    calls: int = 0

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Progress | None = None
    ) -> list[Judgment]:
        self.calls += len(requests)
        out = []
        for r in requests:
            q = int(_QUALITY.search(r.response).group(1))
            out.append(Judgment("ok", max(1, min(5, q + self.bias)), "sim", prompt_tokens=10))
        return out


def quality(i: int) -> int:
    return 1 + (i * 7 + i // 5) % 5


def add_day(conn: duckdb.DuckDBPyConnection, day: dt.date, n: int, judge: SimJudge) -> None:
    """n traces on ``day``, all sampled, scored by ``judge`` through the judgment cache."""
    ids = [f"t{day:%m%d}-{i:03d}" for i in range(n)]
    raw = pd.DataFrame(
        {
            "partition_date": day,
            "trace_id": ids,
            "ts": pd.Timestamp(day),
            "user_query": [f"question {i}: how do I reset my password?" for i in range(n)],
            "assistant_response": [
                f"answer {i} of quality {quality(i)}. \x1b[2J(esc)" for i in range(n)
            ],
            "segment": "general",
            "source": "test",
        }
    )
    conn.register("_raw", raw)
    conn.execute(
        "INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, assistant_response,"
        " segment, source) SELECT * FROM _raw"
    )
    conn.unregister("_raw")
    conn.execute(
        "INSERT INTO sampled_traces SELECT partition_date, trace_id, segment, ?, ? FROM raw_traces"
        " WHERE partition_date = ?",
        [n, n, day],
    )
    cache.score_day(conn, judge, day)
