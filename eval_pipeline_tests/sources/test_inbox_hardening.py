"""The trace inbox under hostile or unlucky input: bounded reject summaries, capped rows,
no symlinks, gzip and unknown files reported, a BOM, and files still being written."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import time
import tracemalloc

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.sources import inbox as traces
from eval_pipeline.core.sources import inbox_stream, ingest
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.inbox_fast import FastPass
from eval_pipeline.core.sources.ingest import ingest_day

DAY = dt.date(2026, 10, 5)


def trace(i: int, **over) -> dict:
    row = {
        "trace_id": f"t{i}",
        "timestamp": f"2026-10-05T{i % 24:02d}:00:00Z",
        "user_query": f"question {i}",
        "assistant_response": f"answer {i}.",
        "segment": "billing",
    }
    row.update(over)
    return row


@pytest.fixture
def db(tmp_path):
    with store.connect(tmp_path / "t.duckdb") as conn:
        yield conn


@pytest.fixture
def inbox(tmp_path):
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def lines_of(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def ingested_ids(db) -> list[str]:
    return [r[0] for r in db.execute("SELECT trace_id FROM raw_traces ORDER BY 1").fetchall()]


def reject_reasons(db) -> list[tuple[str, int, str]]:
    return db.execute(
        "SELECT regexp_replace(location, '.*/', ''), line_no, reason FROM trace_rejects "
        "ORDER BY location, line_no"
    ).fetchall()


# --- reject summaries grow with the kinds of fault, not with the data --------------------


def test_reject_summary_is_grouped_by_kind_with_bounded_examples(db, inbox):
    n = 100_000
    rows = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # epoch seconds, each a different value
            rows.append(json.dumps(trace(i, timestamp=1_791_200_000 + i)))
        elif kind == 1:  # a different out-of-day timestamp each
            rows.append(json.dumps(trace(i, timestamp=f"2026-10-06T{i % 24:02d}:{i % 60:02d}:00Z")))
        elif kind == 2:  # duplicate ids, each of a different first id
            rows.append(json.dumps(trace(i - 1 if i % 8 == 2 else i + 5_000_000)))
            rows.append(
                json.dumps(trace(i - 1 if i % 8 == 2 else i + 5_000_000, user_query="again"))
            )
        else:
            rows.append(json.dumps(trace(i, trace_id=i)))  # wrong type
    (inbox / "2026-10-05.jsonl").write_text("\n".join(rows) + "\n")
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.rows_rejected >= n * 3 // 4
    assert set(res.rejects_by_reason) == {
        "bad timestamp",
        "timestamp outside the file's day",
        "duplicate trace_id",
        "wrong type",
    }
    assert sum(res.rejects_by_reason.values()) == res.rows_rejected
    assert all(len(v) <= ingest.EXAMPLES_PER_KIND for v in res.reject_examples.values())
    # What reaches Dagster (metadata and the log line) stays small whatever the day holds.
    size = len(json.dumps(res.rejects_by_reason)) + len(json.dumps(res.reject_examples))
    assert size < 10_000
    assert len(ingest.reject_summary(res)) < 2_000


def test_reject_kinds_are_capped_even_when_reasons_carry_values_before_the_colon(db):
    # A source may word reasons any way: the kinds stay bounded, the tail goes to "other".
    db.execute(ingest.STAGED_REJECTS_DDL)
    n = ingest.MAX_REASON_KINDS * 10
    db.execute(
        "INSERT INTO staged_rejects SELECT 'x', 'f', i, 'reason number ' || i, 'e' FROM range(?) r(i)",
        [n],
    )
    by_kind, examples = ingest.summarize_rejects(db)
    assert len(by_kind) == ingest.MAX_REASON_KINDS and by_kind["other"] == n - len(by_kind) + 1
    assert sum(by_kind.values()) == n
    assert set(examples) <= set(by_kind)


# --- the row size is capped before anything is parsed or judged --------------------------


def test_an_oversize_line_is_rejected_and_the_other_files_of_the_day_kept(db, inbox, monkeypatch):
    monkeypatch.setenv("EVAL_TRACE_MAX_ROW_BYTES", "1000")
    monkeypatch.setenv("EVAL_TRACE_SETTLE_SECONDS", "0")  # no final newline: read it anyway
    (inbox / "2026-10-05").mkdir()
    # One single-line file far over the cap (no newline at all), one good file.
    (inbox / "2026-10-05" / "huge.jsonl").write_bytes(
        json.dumps(trace(1, assistant_response="x" * 50_000)).encode()
    )
    (inbox / "2026-10-05" / "good.jsonl").write_bytes(lines_of(trace(2), trace(3)))
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t2", "t3"]
    [(name, line, reason)] = reject_reasons(db)
    assert (name, line) == ("huge.jsonl", 1)
    assert reason.startswith("line too long") and "> 1000" in reason
    assert res.rejects_by_reason == {"line too long": 1}
    excerpt = db.execute("SELECT excerpt FROM trace_rejects").fetchone()[0]
    assert len(excerpt) <= traces.EXCERPT_CHARS


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_long_line_that_starts_blank_is_rejected_not_skipped(db, inbox, monkeypatch, gzipped):
    # Its first bytes (all that is kept of a long line) are spaces; the rest is a trace. A
    # line that is spaces to the end is blank, and skipped, whichever reader reads it.
    monkeypatch.setenv("EVAL_TRACE_MAX_ROW_BYTES", "300")
    data = lines_of(
        trace(1),
        b" " * 2000 + json.dumps(trace(2)).encode(),
        b" " * 2000,
        b" " * 2000 + b"\t" * 2000,
        trace(3),
    )
    name = "2026-10-05.jsonl.gz" if gzipped else "2026-10-05.jsonl"
    (inbox / name).write_bytes(gzip.compress(data) if gzipped else data)
    ingest_day(db, InboxSource(inbox, settle_seconds=0), DAY)
    assert ingested_ids(db) == ["t1", "t3"]
    [(_, line, reason)] = reject_reasons(db)
    assert line == 2 and reason.startswith("line too long")


def test_the_streaming_reader_holds_a_bounded_part_of_a_huge_line(db, inbox, monkeypatch):
    # Stands for the 1 GB single-line file: neither DuckDB nor Python may hold the whole line.
    monkeypatch.setattr(inbox_stream, "CHUNK_BYTES", 1 << 20)
    monkeypatch.setenv("EVAL_TRACE_MAX_ROW_BYTES", str(1 << 20))
    big = b'{"trace_id": "big", "user_query": "' + b"y" * (40 << 20) + b'"}\n'
    (inbox / "2026-10-05.jsonl").write_bytes(big + lines_of(trace(7)))
    del big
    tracemalloc.start()
    try:
        ingest_day(db, InboxSource(inbox), DAY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"peak {peak / 2**20:.0f} MiB"
    assert ingested_ids(db) == ["t7"]
    assert [r[2].split(" (")[0] for r in reject_reasons(db)] == ["line too long"]


def test_a_line_of_tens_of_megabytes_never_reaches_the_store(db, inbox):
    answer = "z" * (30 << 20)
    (inbox / "2026-10-05.jsonl").write_bytes(
        lines_of(trace(1), trace(2, assistant_response=answer), trace(3))
    )
    del answer
    ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t1", "t3"]
    [(_, line, reason)] = reject_reasons(db)
    assert line == 2 and reason.startswith("line too long")
    longest = db.execute("SELECT max(length(assistant_response)) FROM raw_traces").fetchone()[0]
    assert longest < 100


def test_a_value_over_the_phoenix_cap_is_rejected_with_its_size(db, inbox):
    (inbox / "2026-10-05.jsonl").write_bytes(
        lines_of(trace(1), trace(2, assistant_response="a" * 100_001))
    )
    ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t1"]
    assert reject_reasons(db) == [
        ("2026-10-05.jsonl", 2, "value too large (answer 100001 chars > 100000)")
    ]


# --- links, names, compression, BOM ------------------------------------------------------


def test_symlinks_are_not_followed_and_are_reported(db, inbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret line\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "2026-10-05.jsonl").write_bytes(lines_of(trace(9)))
    (inbox / "2026-10-05.jsonl").symlink_to(secret)
    (inbox / "linked-dir").symlink_to(outside, target_is_directory=True)
    (inbox / "2026-10-05-good.jsonl").write_bytes(lines_of(trace(1)))
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t1"]
    assert reject_reasons(db) == []
    assert res.files_read == 1
    notes = " ".join(res.notes)
    assert "symbolic link" in notes and "2026-10-05.jsonl" in notes and "linked-dir" in notes


def test_gzip_is_read_and_unknown_names_are_reported_as_skipped(db, inbox):
    with gzip.open(inbox / "2026-10-05.jsonl.gz", "wb") as fh:
        fh.write(lines_of(trace(1), trace(2), b"not json"))
    (inbox / "2026-10-05.json").write_bytes(lines_of(trace(3)))
    (inbox / "2026-10-05-b.JSONL").write_bytes(lines_of(trace(4)))
    (inbox / "2026-10-05.txt").write_bytes(b"hello\n")
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t1", "t2"]
    assert reject_reasons(db) == [("2026-10-05.jsonl.gz", 3, "not valid JSON")]
    notes = " ".join(res.notes)
    for name in ("2026-10-05.json", "2026-10-05-b.JSONL", "2026-10-05.txt"):
        assert name in notes
    assert "skipped" in notes


def test_a_truncated_gzip_file_is_rejected_whole_not_read_in_part(db, inbox):
    data = gzip.compress(lines_of(*[trace(i) for i in range(2000)]))
    (inbox / "2026-10-05.jsonl.gz").write_bytes(data[: len(data) // 2])
    (inbox / "2026-10-05-b.jsonl").write_bytes(lines_of(trace(5000)))
    ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t5000"]
    [(name, line, reason)] = reject_reasons(db)
    assert (name, line) == ("2026-10-05.jsonl.gz", 0) and reason.startswith("unreadable gzip")


@pytest.mark.parametrize("python_path", [False, True])
def test_a_utf8_bom_does_not_reject_line_1(db, inbox, python_path):
    rows = [b"\xef\xbb\xbf" + json.dumps(trace(1)).encode(), json.dumps(trace(2)).encode()]
    if python_path:  # an undecodable line elsewhere sends the file through the Python reader
        rows.append(b'{"x": "\xff"}')
    (inbox / "2026-10-05.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t1", "t2"]


# --- a file still being written ----------------------------------------------------------


def test_a_file_still_being_written_is_not_ingested_partly(db, inbox, monkeypatch):
    monkeypatch.delenv("EVAL_TRACE_SETTLE_SECONDS", raising=False)  # the production default
    full = lines_of(*[trace(i) for i in range(100)])
    half = inbox / "2026-10-05.jsonl"
    half.write_bytes(full[: len(full) // 2])  # stops mid-line, just now
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == [] and reject_reasons(db) == []
    assert any("still being written" in note for note in res.notes)
    # Once the writer is done (or has not touched it for the settle time), it is read.
    old = time.time() - 3600
    os.utime(half, (old, old))
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.rows_ingested > 0 and [r[2] for r in reject_reasons(db)] == ["not valid JSON"]
    half.write_bytes(full)
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.rows_ingested == 100


def test_the_settle_time_is_configuration(db, inbox, monkeypatch):
    monkeypatch.setenv("EVAL_TRACE_SETTLE_SECONDS", "0")
    (inbox / "2026-10-05.jsonl").write_bytes(lines_of(trace(1)) + b'{"trace_id": "t2", "ti')
    ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t1"]
    assert InboxSource(inbox, settle_seconds=5).settle() == 5


def test_a_file_written_to_while_it_is_read_is_left_for_a_later_run(db, inbox, monkeypatch):
    path = inbox / "2026-10-05.jsonl"
    path.write_bytes(lines_of(trace(1), trace(2)))
    (inbox / "2026-10-05-other.jsonl").write_bytes(lines_of(trace(3)))
    real = FastPass.parse

    def read_then_append(self, p):
        read = real(self, p)
        if p == path:  # the writer adds a line right after our read
            with p.open("ab") as fh:
                fh.write(lines_of(trace(4)))
        return read

    monkeypatch.setattr(FastPass, "parse", read_then_append)
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert ingested_ids(db) == ["t3"] and res.files_read == 1
    assert any(
        "changed while being read" in note and "2026-10-05.jsonl" in note for note in res.notes
    )


def test_a_fifo_is_skipped_not_read(db, inbox):
    os.mkfifo(inbox / "2026-10-05.jsonl")  # reading it would block the run forever
    res = ingest_day(db, InboxSource(inbox), DAY)
    assert res.files_read == 0
    assert any("not a regular file" in note for note in res.notes)
