"""Property tests (Hypothesis) over the feedback line parser, record validation and file
ingestion: arbitrary bytes and JSON never crash, never lose a good line, and every bad line
ends with a reason."""

from __future__ import annotations

import json

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval_pipeline.core import store
from eval_pipeline.core.feedback import ingest as feedback
from eval_pipeline.core.feedback import records

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Text with what the standard strategies leave out: lone surrogates (sent as \ud800 escapes;
# st.text drops them even from an explicit alphabet, hence lists joined), controls, bidi.
text = st.lists(
    st.one_of(st.characters(), st.sampled_from(["\ud800", "\udfff", "\x1b", "\u202e", "\x00"])),
    max_size=30,
).map("".join)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)
# Objects that look like feedback, with any value in any field.
record_like = st.fixed_dictionaries(
    {},
    optional={
        "trace_id": st.one_of(text, scalars),
        "rating": st.one_of(st.sampled_from(["up", "down", "thumbs_up", " Down "]), scalars),
        "comment": st.one_of(text, scalars),
        "user_id": st.one_of(text, scalars),
        "ts": st.one_of(
            st.integers(min_value=-(10**16), max_value=10**16),
            st.sampled_from(["2026-10-22T12:00:00Z", "2026-13-01", "", "1792663200000"]),
            scalars,
        ),
        "feedback_id": st.one_of(text, scalars),
        "received_at": scalars,
        "extra": json_values,
    },
)
# A bad line: anything that is not a good record.
junk_line = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")),
    json_values.map(lambda v: json.dumps(v).encode()),
    record_like.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=4301, max_value=6000).map(
        lambda n: b'{"trace_id": "t", "rating": "up", "n": ' + b"9" * n + b"}"
    ),
    st.integers(min_value=65, max_value=6000).map(
        lambda n: b'{"trace_id": "t", "rating": "up", "x": ' + b"[" * n + b"]" * n + b"}"
    ),
)
good_line = st.builds(
    lambda i, rating, comment: json.dumps(
        {"trace_id": f"good-{i}", "rating": rating, "comment": comment}
    ).encode(),
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["up", "down"]),
    st.text(max_size=40),
)


def _non_blank_line_numbers(data: bytes) -> set[int]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return {n for n, raw in enumerate(data.split(b"\n"), 1) if raw.rstrip(b"\r").strip()}


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_and_every_line_is_accounted_for(data):
    parsed = feedback.parse_file(data)
    good = {n for n, _ in parsed.records}
    bad = {r.line_no for r in parsed.rejects}
    assert not good & bad
    assert good | bad == _non_blank_line_numbers(data)
    assert all(r.reason and ": " in r.reason for r in parsed.rejects)


@FUZZ
@given(st.lists(st.tuples(st.booleans(), good_line, junk_line), max_size=12))
def test_good_lines_survive_any_neighbours(pairs):
    lines, expected = [], {}
    for use_good, good, junk in pairs:
        if use_good:
            lines.append(good)
            expected[len(lines)] = json.loads(good)["trace_id"]
        else:
            lines.append(junk)
    data = b"\n".join(lines) + b"\n"
    parsed = feedback.parse_file(data)
    got = {n: rec.trace_id for n, rec in parsed.records}
    for line_no, trace_id in expected.items():
        assert got.get(line_no) == trace_id, f"good line {line_no} lost"
    # A BOM opening the file is dropped (an editor's, not a line): the same rule as above.
    assert {n for n, _ in parsed.records} | {
        r.line_no for r in parsed.rejects
    } == _non_blank_line_numbers(data)


@FUZZ
@given(st.one_of(record_like, json_values))
def test_validate_record_accepts_or_says_why(obj):
    try:
        rec = records.validate_record(obj)
    except records.InvalidRecord as exc:
        assert exc.kind and str(exc).startswith(exc.kind + ": ")
        return
    # A record the collector accepts writes back to a line that validates to the same id.
    written = records.record_to_json(rec).encode("utf-8")  # what the collector stores
    again = records.validate_record(json.loads(written))
    assert again.feedback_id == rec.feedback_id


def test_ingestion_stores_every_good_line_and_a_reason_for_every_bad_one():
    conn = duckdb.connect(":memory:")
    store.migrate(conn)

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.lists(st.one_of(good_line, junk_line), min_size=1, max_size=10))
    def check(lines):
        data = b"\n".join(lines) + b"\n"
        parsed = feedback.parse_file(data)
        res = feedback.ingest_bytes(conn, data, "fuzz.jsonl")
        assert res.rejected == len(parsed.rejects)
        if not res.already_seen:
            rows = conn.execute(
                "SELECT line_no, reason FROM feedback_rejects WHERE file_sha256 = ?", [res.sha256]
            ).fetchall()
            assert sorted(n for n, _ in rows) == sorted(r.line_no for r in parsed.rejects)
            assert all(reason for _, reason in rows)
        ids = {rec.feedback_id for _, rec in parsed.records}
        if ids:
            stored = conn.execute(
                "SELECT count(*) FROM feedback WHERE feedback_id IN (SELECT unnest(?))",
                [sorted(ids)],
            ).fetchone()[0]
            assert stored == len(ids)  # every good record is in the store (once)

    try:
        check()
    finally:
        conn.close()
