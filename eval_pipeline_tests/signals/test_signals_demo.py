"""The signals on the demo's 30 days of traffic (straight into a store, no Dagster): the
billing refusal surge pages on its first day and only while it lasts; clean days are quiet."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from eval_pipeline.core.signals.compute import record_day
from eval_pipeline.core.signals.detect import run_tests
from eval_pipeline.demo import traffic
from eval_pipeline_tests.signals.signals_fixtures import RAW_COLUMNS, fresh


@pytest.mark.slow
def test_demo_regression_pages_on_its_first_day_and_clean_days_are_quiet():
    conn = fresh()
    paged: dict[dt.date, set[tuple[str, str]]] = {}
    for i in range(traffic.DAYS):
        day = traffic.START + dt.timedelta(days=i)
        rows = [
            (day, t["trace_id"], dt.datetime.combine(day, dt.time(12)), t["user_query"],
             t["assistant_response"], t["segment"], t["model"], t["prompt_version"],
             t["user_id"], json.dumps(t["metadata"]), "jsonl", None)
            for t in traffic.day_traces(day)
        ]  # fmt: skip
        conn.executemany(
            f"INSERT INTO raw_traces {RAW_COLUMNS} VALUES ({', '.join('?' * 12)})", rows
        )
        record_day(conn, day)
        fired = {(f.segment, f.signal) for f in run_tests(conn, day) if f.fired and f.pages}
        if fired:
            paged[day] = fired
    broken = traffic.REGRESSION_START
    days_broken = {
        broken + dt.timedelta(days=k) for k in range((traffic.REGRESSION_FIXED - broken).days)
    }
    assert set(paged) == days_broken
    assert ("billing", "refusal_rate") in paged[broken]
    assert ("billing", "cutoff_rate") in paged[broken]
