"""Constructed days for the signals tests: traces straight into a fresh store's raw_traces."""

from __future__ import annotations

import datetime as dt
import json

import duckdb

from eval_pipeline.core import store

# raw_traces' columns these fixtures fill (the trace parts stay NULL).
RAW_COLUMNS = (
    "(partition_date, trace_id, ts, user_query, assistant_response, segment, model, "
    "prompt_version, user_id, metadata, source, source_ref)"
)

DAY = dt.date(2026, 5, 4)


def fresh() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    store.migrate(conn)
    return conn


def add(conn, day: dt.date, traces: list[dict]) -> None:
    """Each trace: answer, and optionally query, segment, model, prompt_version, metadata."""
    start = conn.execute("SELECT count(*) FROM raw_traces").fetchone()[0]
    rows = [
        (
            day,
            f"t{start + i}",
            dt.datetime.combine(day, dt.time(12)),
            t.get("query", "what is my balance?"),
            t["answer"],
            t.get("segment"),
            t.get("model", "m1"),
            t.get("prompt_version", "v1"),
            None,
            json.dumps(t["metadata"]) if "metadata" in t else None,
            "jsonl",
            None,
        )
        for i, t in enumerate(traces)
    ]
    if rows:
        conn.executemany(
            f"INSERT INTO raw_traces {RAW_COLUMNS} VALUES ({', '.join('?' * 12)})", rows
        )
