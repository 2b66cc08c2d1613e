"""Helpers shared by the feedback, collector and review tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import store

TRACES = {
    "t-billing-1": (
        "Why was I charged twice for order #123456?",
        "I'm sorry, but I can't help with billing questions.",
        "billing",
    ),
    "t-billing-2": (
        "How do I update the credit card on my account?",
        "You can update your card under",
        "billing",
    ),
    "t-ship-1": (
        "Where is my order #555555?",
        "Order #555555 left our warehouse yesterday.",
        "shipping",
    ),
}


def add_traces(traces: dict = TRACES, day: dt.date = dt.date(2026, 10, 22)) -> None:
    with store.connect(settings.duckdb_path()) as conn:
        for tid, (q, a, seg) in traces.items():
            conn.execute(
                "INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, "
                "assistant_response, segment, model, prompt_version, source) "
                "VALUES (?, ?, ?, ?, ?, ?, 'support-bot-2026-10', 'v2', 'jsonl')",
                [day, tid, dt.datetime.combine(day, dt.time(12)), q, a, seg],
            )


def line(trace_id: str, rating: str = "down", **kw) -> str:
    return json.dumps({"trace_id": trace_id, "rating": rating, **kw})


def write_settled(path: Path, content: str | bytes, age: float = 60.0) -> Path:
    """Write a file and date it in the past, so it counts as complete at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    past = time.time() - age
    os.utime(path, (past, past))
    return path
