"""The demo's feedback step, through Dagster, on a store holding two days of demo traffic."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.demo import feedback as demo_feedback
from eval_pipeline.demo import traffic as demo_traffic


def _load_demo_days(days: list[dt.date]) -> None:
    with store.connect(settings.duckdb_path()) as conn:
        for day in days:
            for t in demo_traffic.day_traces(day):
                conn.execute(
                    "INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, "
                    "assistant_response, segment, model, prompt_version, user_id, metadata, "
                    "source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'jsonl')",
                    [
                        day,
                        t["trace_id"],
                        dt.datetime.combine(day, dt.time(12)),
                        t["user_query"],
                        t["assistant_response"],
                        t["segment"],
                        t["model"],
                        t["prompt_version"],
                        t["user_id"],
                        json.dumps(t["metadata"]),
                    ],
                )


@pytest.mark.slow
def test_demo_step_leaves_pending_candidates():
    _load_demo_days([dt.date(2026, 10, 21), dt.date(2026, 10, 22)])
    summary: dict = {}
    demo_feedback.run(summary)
    out = summary["feedback"]
    assert out["runs"] and all(r["ok"] for r in out["runs"])
    assert out["records_stored"] == {"down": demo_feedback.DOWNS + 1, "up": demo_feedback.UPS}
    reasons = [r["reason"].split(":")[0] for r in out["rejected_lines"]]
    assert sorted(reasons) == sorted(
        ["not JSON", "missing field", "unknown rating", "oversized", "undecodable"]
    )
    assert out["pending_candidates"] == demo_feedback.DOWNS + 1
    assert out["pending_without_trace"] == 1
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT segment, prompt_version, trace_date >= DATE '2026-10-22' "
            "FROM eval_candidates WHERE trace_found"
        ).fetchall()
    assert rows == [("billing", "v2", True)]
    # Running the step again changes nothing: the same content never runs twice.
    again: dict = {}
    demo_feedback.run(again)
    assert again["feedback"]["runs"] == []
    assert again["feedback"]["records_stored"] == out["records_stored"]
