"""The day's judge accounting puts every sampled trace in a column: cached, called, or a
same-day duplicate of a trace judged in the same run."""

from __future__ import annotations

import datetime as dt
import json

from eval_pipeline.core import store
from eval_pipeline.core.drift.sampling import SamplingConfig, sample_day
from eval_pipeline.core.judge.base import HeuristicJudge
from eval_pipeline.core.judge.cache import score_day
from eval_pipeline.core.sources.inbox import InboxSource, ingest_day

DAY = dt.date(2026, 10, 5)


def test_same_day_duplicates_are_counted(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = [
        {
            "trace_id": f"t{i:03d}",
            "timestamp": "2026-10-05T10:00:00Z",
            "user_query": f"question {i % 111}",
            "assistant_response": f"The answer to question {i % 111} is here.",
        }
        for i in range(200)
    ]
    (inbox / "2026-10-05.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with store.connect(tmp_path / "t.duckdb") as conn:
        ingest_day(conn, InboxSource(inbox), DAY)
        sample_day(conn, DAY, SamplingConfig(sample_size=200))
        res = score_day(conn, HeuristicJudge(), DAY)
        assert (res.n, res.cache_hits, res.judge_calls, res.same_day_duplicates) == (
            200,
            0,
            111,
            89,
        )
        row = conn.execute(
            "SELECT n, cache_hits, judge_calls, same_day_duplicates FROM judge_accounting"
        ).fetchone()
        assert row == (200, 0, 111, 89)
        again = score_day(conn, HeuristicJudge(), DAY)
        assert (again.cache_hits, again.judge_calls, again.same_day_duplicates) == (200, 0, 0)
