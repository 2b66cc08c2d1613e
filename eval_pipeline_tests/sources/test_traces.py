"""Trace ingestion from the inbox: good rows land, every kind of bad row is kept with a reason."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from eval_pipeline.core import store
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import SourceUnavailable, ingest_day

DAY = dt.date(2026, 10, 5)


def trace(i: int, **over) -> dict:
    row = {
        "trace_id": f"t{i}",
        "timestamp": f"2026-10-05T{i % 24:02d}:00:00Z",
        "user_query": f"question {i}",
        "assistant_response": f"answer {i}.",
        "segment": "billing",
        "model": "m1",
        "prompt_version": "v1",
        "user_id": "u1",
        "metadata": {"k": i},
    }
    row.update(over)
    return row


@pytest.fixture
def db(tmp_path):
    with store.connect(tmp_path / "t.duckdb") as conn:
        yield conn


def write_lines(path, lines: list[bytes | str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    path.write_bytes(data)


def rejects(db) -> list[tuple]:
    return db.execute(
        "SELECT regexp_replace(location, '.*/', ''), line_no, reason FROM trace_rejects "
        "ORDER BY location, line_no"
    ).fetchall()


def test_good_rows_land_with_all_fields(db, tmp_path):
    inbox = tmp_path / "inbox"
    write_lines(inbox / "2026-10-05.jsonl", [json.dumps(trace(1)), json.dumps(trace(2))])
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert (res.rows_ingested, res.rows_rejected, res.files_read) == (2, 0, 1)
    row = db.execute(
        "SELECT trace_id, ts, user_query, assistant_response, segment, model, prompt_version, "
        "user_id, metadata->>'k', source, source_ref FROM raw_traces ORDER BY trace_id"
    ).fetchone()
    assert row[0] == "t1"
    assert row[1] == dt.datetime(2026, 10, 5, 1, 0)
    assert row[2:9] == ("question 1", "answer 1.", "billing", "m1", "v1", "u1", "1")
    assert row[9] == "jsonl" and row[10].endswith("/2026-10-05.jsonl")


def test_every_kind_of_bad_row_is_kept_with_file_line_and_reason(db, tmp_path):
    inbox = tmp_path / "inbox"
    lines = [
        json.dumps(trace(1)),  # 1 good
        '{"trace_id": "t2", "timestamp": ',  # 2 not JSON (cut off)
        b'{"trace_id": "t3", "user_query": "caf\xe9"}',  # 3 undecodable bytes
        json.dumps([1, 2]),  # 4 not an object
        json.dumps({k: v for k, v in trace(5).items() if k != "user_query"}),  # 5 missing field
        json.dumps(trace(6, trace_id=6)),  # 6 wrong type
        json.dumps(trace(7, timestamp="yesterday")),  # 7 bad timestamp
        json.dumps(trace(8, metadata="not an object")),  # 8 wrong type metadata
        json.dumps(trace(9, timestamp="2026-10-06T01:00:00Z")),  # 9 outside the file's day
        json.dumps(trace(1, user_query="dup")),  # 10 duplicate of line 1
        "",  # blank lines are allowed and ignored
        json.dumps(
            trace(11, timestamp=int(dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC).timestamp() * 1000))
        ),
        json.dumps(trace(12, assistant_response=None)),  # 13 missing (null) answer
        json.dumps(trace(13, segment=7)),  # 14 wrong type segment
        json.dumps(trace(14, timestamp=1791200000)),  # 15 epoch seconds, not milliseconds
    ]
    write_lines(inbox / "2026-10-05.jsonl", lines)
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.rows_ingested == 2  # lines 1 and 12 (epoch ms timestamp)
    got = rejects(db)
    assert [(line, reason.split(" (")[0].split(":")[0]) for _, line, reason in got] == [
        (2, "not valid JSON"),
        (3, "undecodable bytes"),
        (4, "not a JSON object"),
        (5, "missing field user_query"),
        (6, "wrong type"),
        (7, "bad timestamp"),
        (8, "wrong type"),
        (9, "timestamp outside the file's day"),
        (10, "duplicate trace_id"),
        (13, "missing field assistant_response"),
        (14, "wrong type"),
        (15, "bad timestamp"),
    ]
    reasons = dict((line, reason) for _, line, reason in got)
    assert "first seen at" in reasons[10] and "2026-10-05.jsonl:1" in reasons[10]
    assert reasons[6] == "wrong type: trace_id must be a string"
    assert (
        reasons[9] == "timestamp outside the file's day: 2026-10-06T01:00:00 is not on 2026-10-05"
    )
    assert reasons[10].startswith("duplicate trace_id: t1 (first seen at")
    assert "looks like epoch seconds" in reasons[15]
    assert res.rows_rejected == len(got)
    assert res.rows_seen == 14
    assert db.execute("SELECT list(trace_id ORDER BY trace_id) FROM raw_traces").fetchone()[0] == [
        "t1",
        "t11",
    ]


def test_empty_file_is_reported_and_other_files_still_land(db, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "2026-10-05").mkdir(parents=True)
    (inbox / "2026-10-05" / "empty.jsonl").write_bytes(b"")
    write_lines(inbox / "2026-10-05" / "good.jsonl", [json.dumps(trace(1))])
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.rows_ingested == 1
    assert rejects(db) == [("empty.jsonl", 0, "empty file: no rows")]


def test_undated_files_contribute_only_their_rows_of_the_day(db, tmp_path):
    inbox = tmp_path / "inbox"
    write_lines(
        inbox / "traces.jsonl",
        [json.dumps(trace(1)), json.dumps(trace(2, timestamp="2026-10-04T23:59:59Z"))],
    )
    write_lines(
        inbox / "2026-10-04.jsonl", [json.dumps(trace(3, timestamp="2026-10-04T10:00:00Z"))]
    )
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert (res.rows_ingested, res.rows_rejected, res.files_read) == (1, 0, 1)
    res4 = ingest_day(db, InboxSource(inbox), DAY - dt.timedelta(days=1))
    assert (res4.rows_ingested, res4.files_read) == (2, 2)


def test_parquet_files_go_through_the_same_checks(db, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    target = inbox / "2026-10-05.parquet"
    duckdb.sql(
        "SELECT * FROM (VALUES ('p1', '2026-10-05T03:00:00Z', 'q', 'a.', 'shipping'),"
        " ('p2', 'nonsense', 'q', 'a.', 'shipping')) t(trace_id, timestamp, user_query,"
        " assistant_response, segment)"
    ).write_parquet(str(target))
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.rows_ingested == 1
    assert rejects(db) == [
        ("2026-10-05.parquet", 2, "bad timestamp: not ISO 8601 or epoch milliseconds")
    ]


def test_reingesting_a_day_replaces_it(db, tmp_path):
    inbox = tmp_path / "inbox"
    write_lines(inbox / "2026-10-05.jsonl", [json.dumps(trace(i)) for i in range(5)] + ["bad"])
    for _ in range(3):
        ingest_day(db, InboxSource(inbox), DAY)
    assert db.execute("SELECT count(*) FROM raw_traces").fetchone()[0] == 5
    assert db.execute("SELECT count(*) FROM trace_rejects").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM trace_ingests").fetchone()[0] == 1


def test_a_missing_inbox_fails_loudly_and_writes_nothing(db, tmp_path):
    with pytest.raises(SourceUnavailable, match="does not exist"):
        ingest_day(db, InboxSource(tmp_path / "nope"), DAY)
    assert db.execute("SELECT count(*) FROM trace_ingests").fetchone()[0] == 0


def test_a_day_with_no_files_is_a_real_zero_trace_day(db, tmp_path):
    (tmp_path / "inbox").mkdir()
    res = ingest_day(db, InboxSource(tmp_path / "inbox"), DAY)
    assert (res.rows_ingested, res.files_read) == (0, 0)
    assert db.execute("SELECT rows_ingested FROM trace_ingests").fetchone()[0] == 0


def test_large_file_spanning_several_read_chunks(db, tmp_path, monkeypatch):
    from eval_pipeline.core.sources import inbox_stream

    monkeypatch.setattr(inbox_stream, "CHUNK_BYTES", 1000)
    inbox = tmp_path / "inbox"
    lines = [json.dumps(trace(i)) for i in range(300)]
    lines[150] = b'{"trace_id": "x", "bad": "\xff"}'
    write_lines(inbox / "2026-10-05.jsonl", lines)
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.rows_ingested == 299
    assert rejects(db) == [("2026-10-05.jsonl", 151, "undecodable bytes (not UTF-8)")]
