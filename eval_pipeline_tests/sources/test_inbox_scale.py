"""A day of any size: bounded memory, bad lines found by file and line, and the same rows,
rejects and sample whichever way the day's files are cut."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import duckdb
import pytest

from eval_pipeline.core import store
from eval_pipeline.core.drift.sampling import SamplingConfig, sample_day
from eval_pipeline.core.sources import inbox_stream
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import SourceUnavailable, ingest_day

DAY = dt.date(2026, 10, 5)
SEGMENTS = ("billing", "shipping", "returns", "account", "product")
BAD_KINDS = (
    ('{"trace_id": "cut', "not valid JSON"),
    ("[1, 2]", "not a JSON object (got array)"),
    ('{"trace_id": "nq", "timestamp": "2026-10-05T01:00:00Z"}', "missing field user_query"),
)


def trace_line(i: int, answer_chars: int = 40) -> str:
    return json.dumps(
        {
            "trace_id": f"t{i:07d}",
            "timestamp": f"2026-10-05T{i % 24:02d}:{i % 60:02d}:00Z",
            "user_query": f"question {i}",
            "assistant_response": f"answer {i} " + "x" * answer_chars,
            "segment": SEGMENTS[i % len(SEGMENTS)],
            "model": "m1",
            "prompt_version": "v1",
            "user_id": f"u{i % 97}",
            "metadata": {"k": i},
        }
    )


def day_lines(n: int, bad_every: int = 1000, answer_chars: int = 40) -> list[tuple[int, str]]:
    """(hour, line) for n lines; line k (1-based) is bad when k % bad_every == 0."""
    out = []
    for i in range(n):
        if (i + 1) % bad_every == 0:
            out.append((i % 24, BAD_KINDS[(i // bad_every) % len(BAD_KINDS)][0]))
        else:
            out.append((i % 24, trace_line(i, answer_chars)))
    return out


def write_single(folder, lines, newline="\n") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "2026-10-05.jsonl").write_text(
        "".join(text + newline for _, text in lines), newline=""
    )


def write_parts(folder, lines, gz: bool = False) -> None:
    day = folder / DAY.isoformat()
    day.mkdir(parents=True, exist_ok=True)
    for hour in range(24):
        data = "".join(text + "\n" for h, text in lines if h == hour).encode()
        if gz:
            (day / f"part-{hour + 1:04d}.jsonl.gz").write_bytes(gzip.compress(data))
        else:
            (day / f"part-{hour + 1:04d}.jsonl").write_bytes(data)


def outcome(db) -> dict:
    """What the day came to, independent of where each line sat."""
    return {
        "rows": db.execute(
            "SELECT trace_id, ts, user_query, assistant_response, segment, model, "
            "prompt_version, user_id, metadata::VARCHAR FROM raw_traces ORDER BY trace_id"
        ).fetchall(),
        "rejects": db.execute(
            "SELECT reason, excerpt FROM trace_rejects ORDER BY reason, excerpt"
        ).fetchall(),
        "sample": db.execute(
            "SELECT trace_id, segment, stratum_size, stratum_sample FROM sampled_traces "
            "ORDER BY trace_id"
        ).fetchall(),
    }


def ingest(tmp_path, name: str, inbox, **connect) -> dict:
    with store.connect(tmp_path / f"{name}.duckdb", **connect) as db:
        ingest_day(db, InboxSource(inbox, settle_seconds=0), DAY)
        sample_day(db, DAY, SamplingConfig(sample_size=50, floor_per_segment=5))
        return outcome(db)


def test_a_bad_line_every_thousand_is_rejected_with_its_file_line_and_reason(tmp_path):
    lines = day_lines(10_000)
    write_single(tmp_path / "inbox", lines)
    with store.connect(tmp_path / "s.duckdb") as db:
        res = ingest_day(db, InboxSource(tmp_path / "inbox", settle_seconds=0), DAY)
        got = db.execute(
            "SELECT regexp_replace(location, '.*/', ''), line_no, reason FROM trace_rejects "
            "ORDER BY line_no"
        ).fetchall()
        # A good row names its file (a reject names file and line).
        refs = db.execute(
            "SELECT count(*) FROM raw_traces WHERE source_ref = ?",
            [str(tmp_path / "inbox" / "2026-10-05.jsonl")],
        ).fetchone()[0]
    want = [
        ("2026-10-05.jsonl", k, BAD_KINDS[(k // 1000 - 1) % len(BAD_KINDS)][1])
        for k in range(1000, 10_001, 1000)
    ]
    assert got == want
    assert (res.rows_ingested, res.rows_rejected) == (9_990, 10)
    assert refs == 9_990  # every good row names its file


@pytest.mark.parametrize(
    ("limit", "n", "shown"),
    [
        # the fast path (its JSON reader needs 48 MiB a thread), spilling to disk
        ("128MB", 130_000, ("122.0 MiB", "128.0 MB")),
        # under that, the chunked reader, its chunks classified one at a time
        ("64MB", 80_000, ("61.0 MiB", "64.0 MB")),
    ],
)
def test_a_day_larger_than_the_memory_limit_ingests_with_its_rejects(tmp_path, limit, n, shown):
    # More JSONL than the DuckDB memory limit: it has to spill or stream, not fail.
    lines = day_lines(n, answer_chars=1100)
    write_single(tmp_path / "inbox", lines)
    size = (tmp_path / "inbox" / "2026-10-05.jsonl").stat().st_size
    assert size > int(limit[:-2]) * 1.2 * 10**6
    spill = tmp_path / "spill"
    with store.connect(tmp_path / "m.duckdb", memory_limit=limit, temp_directory=spill) as db:
        got = db.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        res = ingest_day(db, InboxSource(tmp_path / "inbox", settle_seconds=0), DAY)
        total_chars = db.execute(
            "SELECT sum(length(assistant_response)) FROM raw_traces"
        ).fetchone()
        bad = db.execute("SELECT line_no FROM trace_rejects ORDER BY 1").fetchall()
    assert got.startswith(shown), got
    assert (res.rows_ingested, res.rows_rejected) == (n - n // 1000, n // 1000)
    assert [b[0] for b in bad] == list(range(1000, n + 1, 1000))
    # The text itself landed, not a truncated copy.
    assert total_chars[0] == sum(
        len(json.loads(text)["assistant_response"])
        for _, text in lines
        if text.startswith('{"trace_id": "t')
    )


def test_a_parquet_row_group_larger_than_the_memory_limit_fails_the_day_not_its_rows(tmp_path):
    # DuckDB reads a row group's column whole. One that does not fit the limit is a set-up
    # problem, not bad data: the day fails saying what to change, and nothing is recorded.
    lines = day_lines(80_000, answer_chars=1100)
    source = tmp_path / "day.jsonl"
    source.write_text("\n".join(text for _, text in lines if text.startswith('{"trace_id": "t')))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    target = inbox / f"{DAY}.parquet"

    def write_parquet(row_group_size: int) -> None:
        with duckdb.connect() as conn:
            conn.execute(
                f"COPY (SELECT * FROM read_json('{source}', format = 'newline_delimited')) "
                f"TO '{target}' (FORMAT parquet, ROW_GROUP_SIZE {row_group_size})"
            )

    def connect():
        spill = tmp_path / "spill"
        return store.connect(tmp_path / "m.duckdb", memory_limit="64MB", temp_directory=spill)

    write_parquet(122_880)  # DuckDB's default: the whole day in one row group
    with connect() as db:
        with pytest.raises(SourceUnavailable, match=r"\.parquet: a row group .* memory_limit \(61"):
            ingest_day(db, InboxSource(inbox, settle_seconds=0), DAY)
        assert db.execute("SELECT count(*) FROM trace_ingests").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM trace_rejects").fetchone()[0] == 0
    # The same rows in row groups that fit: the day ingests under the same limit.
    write_parquet(8_192)
    with connect() as db:
        res = ingest_day(db, InboxSource(inbox, settle_seconds=0), DAY)
    assert (res.rows_ingested, res.rows_rejected) == (79_920, 0)


def test_one_file_hourly_parts_gzip_parts_and_the_chunked_reader_give_the_same_day(
    tmp_path, monkeypatch
):
    lines = day_lines(6_000, bad_every=700)
    write_single(tmp_path / "single", lines)
    write_parts(tmp_path / "parts", lines)
    write_parts(tmp_path / "gz", lines, gz=True)
    # CRLF endings send the file to the Python reader, here in 4 KiB chunks.
    write_single(tmp_path / "crlf", lines, newline="\r\n")
    base = ingest(tmp_path, "single", tmp_path / "single")
    assert len(base["rows"]) == 6_000 - 8 and len(base["rejects"]) == 8
    assert len(base["sample"]) == 50
    assert ingest(tmp_path, "parts", tmp_path / "parts") == base
    assert ingest(tmp_path, "gz", tmp_path / "gz") == base
    monkeypatch.setattr(inbox_stream, "CHUNK_BYTES", 4096)
    assert ingest(tmp_path, "crlf", tmp_path / "crlf") == base


def test_the_memory_limit_and_spill_folder_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EVAL_DUCKDB_MEMORY_LIMIT", "200MB")
    monkeypatch.setenv("EVAL_DUCKDB_TEMP_DIR", str(tmp_path / "spill"))
    with store.connect(tmp_path / "e.duckdb") as db:
        limit, temp = db.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    assert limit.startswith(("190.7 MiB", "200.0 MB")) and temp == str(tmp_path / "spill")
    # An explicit value wins over the environment.
    with store.connect(tmp_path / "e.duckdb", memory_limit="300MB") as db:
        limit = db.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.startswith(("286.1 MiB", "300.0 MB"))


@pytest.mark.parametrize("bad", ["abc"])
def test_a_memory_limit_that_does_not_parse_is_an_error(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("EVAL_DUCKDB_MEMORY_LIMIT", bad)
    with pytest.raises(Exception, match="(?i)memory"), store.connect(tmp_path / "x.duckdb"):
        pass


TRICKY = [
    # String values that are themselves valid JSON: still strings, still accepted.
    {"trace_id": "12345", "user_query": "42", "assistant_response": "true", "segment": "null"},
    {"trace_id": "t-obj", "user_query": '{"a": 1}', "assistant_response": "[1, 2]"},
    # Non-strings where strings belong: rejected as the wrong type.
    {"trace_id": 12345, "user_query": "q", "assistant_response": "a"},
    {"trace_id": "t-num-q", "user_query": 42, "assistant_response": "a"},
    {"trace_id": "t-obj-a", "user_query": "q", "assistant_response": {"a": 1}},
    {"trace_id": "t-bool-seg", "user_query": "q", "assistant_response": "a", "segment": True},
    {"trace_id": "t-num-model", "user_query": "q", "assistant_response": "a", "model": 3.5},
    {"trace_id": "t-arr-meta", "user_query": "q", "assistant_response": "a", "metadata": [1]},
    # Nulls, escapes, epoch milliseconds and seconds, a blank id, a numeric-text timestamp.
    {"trace_id": "t-nulls", "user_query": "q", "assistant_response": "a", "segment": None},
    {"trace_id": "t-esc", "user_query": 'say "hi"\n\u00e9', "assistant_response": "a\\b"},
    {"trace_id": "t-ms", "timestamp": 1791201600000, "user_query": "q", "assistant_response": "a"},
    {"trace_id": "t-s", "timestamp": 1791201600, "user_query": "q", "assistant_response": "a"},
    {"trace_id": "  ", "user_query": "q", "assistant_response": "a"},
    {
        "trace_id": "t-ts-text",
        "timestamp": "1791201600000",
        "user_query": "q",
        "assistant_response": "a",
    },
    {
        "trace_id": "t-meta",
        "user_query": "q",
        "assistant_response": "a",
        "metadata": {"k": [1.5, None]},
    },
]


def test_the_fast_path_and_the_line_classifier_agree_on_tricky_lines(tmp_path):
    # A plain file goes through the one-parse fast path; a gzip file through the line
    # classifier only. Both must land the same rows and give the same reasons.
    lines = []
    for i, row in enumerate(TRICKY):
        lines.append(json.dumps({"timestamp": f"2026-10-05T{i:02d}:00:00Z", **row}))
    data = "".join(line + "\n" for line in lines).encode()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "2026-10-05.jsonl").write_bytes(data)
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "2026-10-05.jsonl.gz").write_bytes(gzip.compress(data))
    got = {}
    for name in ("plain", "gz"):
        with store.connect(tmp_path / f"{name}.duckdb") as db:
            ingest_day(db, InboxSource(tmp_path / name, settle_seconds=0), DAY)
            got[name] = (
                db.execute(
                    "SELECT trace_id, ts, user_query, assistant_response, segment, model, "
                    "metadata::VARCHAR, replace(regexp_replace(source_ref, '.*/', ''), '.gz', '') "
                    "FROM raw_traces ORDER BY trace_id"
                ).fetchall(),
                db.execute("SELECT line_no, reason FROM trace_rejects ORDER BY 1").fetchall(),
            )
    assert got["plain"] == got["gz"]
    rows, rejects = got["plain"]
    assert [r[0] for r in rows] == ["12345", "t-esc", "t-meta", "t-ms", "t-nulls", "t-obj"]
    assert rows[1][2] == 'say "hi"\n\u00e9' and rows[2][6] == '{"k":[1.5,null]}'
    assert [line for line, _ in rejects] == [3, 4, 5, 6, 7, 8, 12, 13, 14]
    assert all(reason for _, reason in rejects)


def test_the_fast_path_and_the_classifier_agree_on_timestamp_forms(tmp_path):
    # The fast path casts a plain "...Z" time without time zone arithmetic; an offset or a
    # zone name before the Z must still be the classifier's.
    forms = [
        "2026-10-05T14:41:42.515000Z",
        "2026-10-05 14:41:42Z",
        "2026-10-05T14:41Z",
        "2026-10-05T14:41:42+02:00",
        "2026-10-05T14:41:42+02:00Z",
        "2026-10-05T14:41:42 UTCZ",
        "2026-10-05Z",
        "2026-10-05T14:41:42ZZ",
        "2026-10-05T14:41:42 Z",
    ]
    # Edges of the fixed format the fast path tries first: only the agreement is asserted.
    edges = [
        "2026-1-5T14:41:42.5Z",
        "2026-10-05T14:41:42.123456789Z",
        "2026-10-05T14:41:60.000Z",
        "2026-02-30T14:41:42.000Z",
        "2026-10-05t14:41:42.000Z",
        "2026-10-05T24:00:00.000Z",
        "2026-10-05T14:41:42.Z",
        "2026-10-05T14:41:42.000z",
        " 2026-10-05T14:41:42.000Z",
        "+2026-10-05T14:41:42.000Z",
    ]
    forms += edges
    lines = [
        json.dumps(
            {"trace_id": f"t{i}", "timestamp": ts, "user_query": "q", "assistant_response": "a"}
        )
        for i, ts in enumerate(forms)
    ]
    data = "".join(line + "\n" for line in lines).encode()
    got = {}
    for name, file in (("plain", "2026-10-05.jsonl"), ("gz", "2026-10-05.jsonl.gz")):
        (tmp_path / name).mkdir()
        (tmp_path / name / file).write_bytes(gzip.compress(data) if name == "gz" else data)
        with store.connect(tmp_path / f"{name}.duckdb") as db:
            ingest_day(db, InboxSource(tmp_path / name, settle_seconds=0), DAY)
            got[name] = (
                db.execute("SELECT trace_id, ts FROM raw_traces ORDER BY trace_id").fetchall(),
                db.execute("SELECT line_no, reason FROM trace_rejects ORDER BY 1").fetchall(),
            )
    assert got["plain"] == got["gz"]
    rows, rejects = got["plain"]
    first = len(forms) - len(edges)
    assert [r[0] for r in rows if int(r[0][1:]) < first] == ["t0", "t1", "t2", "t3"]
    assert dict(rows)["t3"] == dt.datetime(2026, 10, 5, 12, 41, 42)  # the offset applied
    assert [line for line, _ in rejects if line <= first] == [5, 6, 7, 8, 9]
