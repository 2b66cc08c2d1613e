"""Retrieved context, conversations and tool calls in the inbox: stored in one shape, every
malformed or oversize part rejected with a reason, the SQL classifier and the Python check
(``trace_parts.from_record``) giving the same answer on every case."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.sources import trace_parts
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.inbox_fast import FastPass
from eval_pipeline.core.sources.ingest import ingest_day

DAY = dt.date(2026, 10, 5)
MAX_CHARS = 50


def base(i: int, **parts) -> dict:
    return {
        "trace_id": f"t{i}",
        "timestamp": "2026-10-05T10:00:00Z",
        "user_query": "How long does delivery take?",
        "assistant_response": "Standard delivery takes 5-7 business days.",
        **parts,
    }


DOCS = [
    {"id": "kb-1", "text": "Standard delivery takes 5-7 business days.", "score": 0.91},
    {"id": 7, "content": "Express takes 2-3 days."},
    {"text": "Returns are free."},
]
TURNS = [
    {"role": "system", "content": "You are a support bot."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "How long does delivery take?"},
]
CALLS = [
    {"name": "lookup_order", "arguments": {"order": "#123"}, "result": "shipped"},
    {"name": "eta", "arguments": '{"order": "#123"}'},
]

# (parts, expected stored columns or the reject reason)
GOOD = [
    ({}, {"context": None, "conversation": None, "tool_calls": None}),
    (
        {"context": "Delivery: 5-7 days."},
        {"context": [{"id": None, "text": "Delivery: 5-7 days.", "score": None}]},
    ),
    ({"context": "   "}, {"context": []}),
    ({"context": None, "retrieved_documents": None}, {"context": None}),
    ({"retrieved_documents": []}, {"context": []}),
    (
        {"retrieved_documents": DOCS},
        {
            "context": [
                {"id": "kb-1", "text": DOCS[0]["text"], "score": 0.91},
                {"id": "7", "text": "Express takes 2-3 days.", "score": None},
                {"id": None, "text": "Returns are free.", "score": None},
            ]
        },
    ),
    (  # every document with a text string: the classifier's quick path
        {"retrieved_documents": [{"id": "a", "text": "x", "score": 1}, {"id": None, "text": "y"}]},
        {
            "context": [
                {"id": "a", "text": "x", "score": 1.0},
                {"id": None, "text": "y", "score": None},
            ]
        },
    ),
    ({"conversation": TURNS}, {"conversation": TURNS}),
    ({"conversation": [{"role": "user", "content": "", "extra": 1}]}, {}),
    (
        {"tool_calls": CALLS},
        {
            "tool_calls": [
                {"name": "lookup_order", "arguments": {"order": "#123"}, "result": "shipped"},
                {"name": "eta", "arguments": '{"order": "#123"}', "result": None},
            ]
        },
    ),
    ({"tool_calls": []}, {"tool_calls": []}),
    # an object's size is its compact JSON text: 50 characters here, at the cap
    ({"tool_calls": [{"name": "f", "arguments": {"q": "x" * 42}}]}, {}),
]
BAD = [
    ({"context": "a", "retrieved_documents": []}, "ambiguous context: give context or"),
    ({"context": 5}, "wrong type: context must be a string"),
    ({"context": ["a"]}, "wrong type: context must be a string"),
    ({"context": "x" * 51}, "value too large (context 51 chars > 50)"),
    ({"retrieved_documents": "doc"}, "wrong type: retrieved_documents must be a list"),
    ({"retrieved_documents": {"text": "a"}}, "wrong type: retrieved_documents must be a list"),
    ({"retrieved_documents": [{"text": "a"}, "b"]}, "bad retrieved_documents: item 2 must be"),
    ({"retrieved_documents": [{"id": 1}]}, "bad retrieved_documents: item 1 must be"),
    ({"retrieved_documents": [{"text": 3}]}, "bad retrieved_documents: item 1 must be"),
    ({"retrieved_documents": [{"text": "a", "score": "high"}]}, "bad retrieved_documents: item 1"),
    ({"retrieved_documents": [{"text": "a", "id": [1]}]}, "bad retrieved_documents: item 1"),
    ({"retrieved_documents": [{"text": "a", "score": True}]}, "bad retrieved_documents: item 1"),
    (
        {"retrieved_documents": [{"text": "a"}] * (trace_parts.MAX_DOCUMENTS + 1)},
        f"value too large (retrieved_documents {trace_parts.MAX_DOCUMENTS + 1} items",
    ),
    (
        {"retrieved_documents": [{"text": "a"}, {"text": "y" * 60}]},
        "value too large (retrieved_documents item 2 60 chars > 50)",
    ),
    ({"conversation": "hi"}, "wrong type: conversation must be a list"),
    ({"conversation": [{"role": "user"}]}, "bad conversation: item 1 must be"),
    ({"conversation": [{"role": " ", "content": "a"}]}, "bad conversation: item 1 must be"),
    ({"conversation": [{"role": "user", "content": ["a"]}]}, "bad conversation: item 1"),
    (
        {"conversation": [{"role": "user", "content": "z" * 51}]},
        "value too large (conversation item 1 51 chars > 50)",
    ),
    (
        {"conversation": [{"role": "user", "content": "a"}] * (trace_parts.MAX_TURNS + 1)},
        "value too large (conversation",
    ),
    ({"tool_calls": {"name": "x"}}, "wrong type: tool_calls must be a list"),
    # a good part does not hide a bad one after it
    (
        {"retrieved_documents": DOCS, "conversation": TURNS, "tool_calls": [{"name": 1}]},
        "bad tool_calls: item 1 must be",
    ),
    ({"context": "fine", "conversation": [{"role": "user"}]}, "bad conversation: item 1"),
    ({"tool_calls": [{"arguments": {}}]}, "bad tool_calls: item 1 must be"),
    ({"tool_calls": [{"name": ""}]}, "bad tool_calls: item 1 must be"),
    (
        {"tool_calls": [{"name": "f", "result": "r" * 51}]},
        "value too large (tool_calls item 1 result 51 chars > 50)",
    ),
    (
        {"tool_calls": [{"name": "f", "arguments": {"q": "x" * 43}}]},
        "value too large (tool_calls item 1 arguments 51 chars > 50)",
    ),
    (
        {"tool_calls": [{"name": "f", "arguments": "a" * 51}]},
        "value too large (tool_calls item 1 arguments 51 chars > 50)",
    ),
]


@pytest.fixture
def ingested(tmp_path):
    """Every case as one line of one day's file, ingested; rows and rejects by trace id."""
    cases = GOOD + BAD
    lines = [json.dumps(base(i, **parts)) for i, (parts, _) in enumerate(cases)]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / f"{DAY}.jsonl").write_text("\n".join(lines) + "\n")
    with store.connect(tmp_path / "t.duckdb") as conn:
        ingest_day(conn, InboxSource(inbox, max_chars=MAX_CHARS, settle_seconds=0), DAY)
        rows = conn.execute(
            "SELECT trace_id, context, conversation, tool_calls FROM raw_traces"
        ).fetchall()
        rejects = conn.execute("SELECT line_no, reason FROM trace_rejects").fetchall()
    stored = {
        tid: dict(
            zip(
                trace_parts.PART_COLUMNS,
                [None if v is None else json.loads(v) for v in vs],
                strict=True,
            )
        )
        for tid, *vs in rows
    }
    return cases, stored, {line - 1: reason for line, reason in rejects}


def test_good_parts_are_stored_in_one_shape(ingested):
    cases, stored, rejects = ingested
    for i, (parts, expected) in enumerate(GOOD):
        assert i not in rejects, (parts, rejects.get(i))
        for column, value in expected.items():
            assert stored[f"t{i}"][column] == value, (parts, column)


def test_every_malformed_or_oversize_part_is_rejected_with_its_reason(ingested):
    cases, stored, rejects = ingested
    for i, (parts, reason) in enumerate(BAD, start=len(GOOD)):
        assert f"t{i}" not in stored, parts
        assert rejects[i].startswith(reason), (parts, rejects[i])


def test_python_check_agrees_with_the_inbox_classifier(ingested):
    cases, stored, rejects = ingested
    for i, (parts, _) in enumerate(cases):
        got = trace_parts.from_record(base(i, **parts), MAX_CHARS)
        if i in rejects:
            assert got == rejects[i], parts
        else:
            assert isinstance(got, trace_parts.TraceParts), (parts, got)
            columns = {k: None if v is None else json.loads(v) for k, v in got.columns().items()}
            assert columns == stored[f"t{i}"], parts


def test_fit_cuts_span_parts_to_the_limits_and_names_them():
    many = trace_parts.TraceParts(
        context=[{"id": None, "text": "d" * 80, "score": None}] * (trace_parts.MAX_DOCUMENTS + 3),
        conversation=[
            {"role": "user", "content": str(i)} for i in range(trace_parts.MAX_TURNS + 2)
        ],
        tool_calls=[{"name": "f", "arguments": {"q": "a" * 90}, "result": "ok"}],
    )
    fitted, cut = trace_parts.fit(many, MAX_CHARS)
    assert cut == ["context", "conversation", "tool_calls"]
    assert len(fitted.context) == trace_parts.MAX_DOCUMENTS
    assert all(len(d["text"]) == MAX_CHARS for d in fitted.context)
    # the newest turns are kept
    assert fitted.conversation[-1]["content"] == str(trace_parts.MAX_TURNS + 1)
    assert len(fitted.conversation) == trace_parts.MAX_TURNS
    assert isinstance(fitted.tool_calls[0]["arguments"], str)
    assert len(fitted.tool_calls[0]["arguments"]) == MAX_CHARS
    assert isinstance(
        trace_parts.from_record(fitted.record_fields(), MAX_CHARS), trace_parts.TraceParts
    )
    small = trace_parts.TraceParts(context=[{"id": "a", "text": "b", "score": 1.0}])
    assert trace_parts.fit(small, MAX_CHARS) == (small, [])


def test_parquet_inbox_files_take_the_parts_as_columns(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / f"{DAY}.parquet"
    with store.connect(tmp_path / "t.duckdb") as conn:
        conn.execute(
            f"""COPY (SELECT 't1' AS trace_id, '2026-10-05T10:00:00Z' AS timestamp,
                  'q' AS user_query, 'a.' AS assistant_response,
                  [{{'id': 'kb-1', 'text': 'doc', 'score': 0.5}},
                   {{'id': NULL, 'text': 'two', 'score': NULL}}] AS retrieved_documents,
                  [{{'role': 'user', 'content': 'q'}}] AS conversation
            ) TO '{path}' (FORMAT parquet)"""
        )
        res = ingest_day(conn, InboxSource(inbox, settle_seconds=0), DAY)
        row = conn.execute("SELECT context, conversation, tool_calls FROM raw_traces").fetchone()
    assert (res.rows_ingested, res.rows_rejected) == (1, 0)
    assert json.loads(row[0]) == [
        {"id": "kb-1", "text": "doc", "score": 0.5},
        {"id": None, "text": "two", "score": None},
    ]
    assert json.loads(row[1]) == [{"role": "user", "content": "q"}] and row[2] is None


def _plain_and_gzip(tmp_path, data: str) -> dict:
    """The same lines ingested from a plain file (the fast path) and from a gzip file (the
    classifier only): each one's (rows with their parts, rejects)."""
    got = {}
    for name, file_name, body in (
        ("plain", f"{DAY}.jsonl", data.encode()),
        ("gz", f"{DAY}.jsonl.gz", gzip.compress(data.encode())),
    ):
        inbox = tmp_path / name
        inbox.mkdir()
        (inbox / file_name).write_bytes(body)
        with store.connect(tmp_path / f"{name}.duckdb") as conn:
            ingest_day(conn, InboxSource(inbox, max_chars=MAX_CHARS, settle_seconds=0), DAY)
            got[name] = (
                conn.execute(
                    "SELECT trace_id, context::VARCHAR, conversation::VARCHAR, "
                    "tool_calls::VARCHAR FROM raw_traces ORDER BY trace_id"
                ).fetchall(),
                conn.execute("SELECT line_no, reason FROM trace_rejects ORDER BY 1").fetchall(),
            )
    return got


def test_the_fast_path_and_the_line_classifier_agree_on_parts(tmp_path):
    # A plain file is parsed once by the fast path, which checks the parts with the
    # classifier's SQL; a gzip file goes through the classifier only. Same rows, same rejects.
    cases = GOOD + BAD
    data = "".join(json.dumps(base(i, **parts)) + "\n" for i, (parts, _) in enumerate(cases))
    got = _plain_and_gzip(tmp_path, data)
    assert got["plain"] == got["gz"]
    rows, rejects = got["plain"]
    assert len(rows) == len(GOOD) and len(rejects) == len(BAD)
    assert any(context is not None for _, context, _, _ in rows)


# Lines written by hand: shapes json.dumps never writes (escaped keys, numbers where strings
# go, strings that are themselves valid JSON), each either good or bad.
_Q = '"timestamp": "2026-10-05T10:00:00Z", "user_query": "q", "assistant_response": "a"'
EDGE_LINES = [
    '"retrieved\\u005fdocuments": "doc"',
    '"retrieved\\u005fdocuments": [{"text": "escaped key"}]',
    '"conversation": [{"role": "user", "content": "hi"}], "tool\\u005fcalls": 5',
    '"retrieved_documents": [{"id": "5", "text": "a"}, {"id": 5, "text": "b"}]',
    '"retrieved_documents": [{"id": 1.5, "text": "a"}]',
    '"retrieved_documents": [{"id": "1.5", "text": "a"}]',
    '"retrieved_documents": [{"id": 123456789012345678901234, "text": "a"}]',
    '"retrieved_documents": [{"id": "123456789012345678901234", "text": "a"}]',
    '"retrieved_documents": [{"text": "a", "score": "0.5"}]',
    '"retrieved_documents": [{"text": "a", "score": 1e2}, {"text": "b", "score": -0.25}]',
    '"retrieved_documents": [{"text": "42"}, {"text": "null"}, {"content": "[1]"}]',
    '"retrieved_documents": [{"text": null, "content": "c"}, {"text": "t", "content": 5}]',
    '"retrieved_documents": [null]',
    '"retrieved_documents": [[{"text": "a"}]]',
    '"retrieved_documents": [{"text": "caf\\u00e9 \\"quoted\\""}]',
    '"conversation": [{"role": "true", "content": "x"}]',
    '"conversation": [{"role": true, "content": "x"}]',
    '"conversation": [], "retrieved_documents": null',
    '"metadata": {"retrieved_documents": 1, "conversation": "x"}',
    '"tool_calls": [{"name": "f", "arguments": null, "result": 5}, {"name": "g", "result": false}]',
    '"tool_calls": [{"name": "f", "arguments": [1, {"a": "\\u00e9"}]}]',
    '"tool_calls": [{"name": "{}"}]',
    '"context": null, "retrieved_documents": [{"text": "a"}]',
    '"context": "caf\\u00e9"',
]


def test_the_fast_path_and_the_classifier_agree_on_hand_written_parts(tmp_path):
    data = "".join(f'{{"trace_id": "e{i}", {_Q}, {parts}}}\n' for i, parts in enumerate(EDGE_LINES))
    got = _plain_and_gzip(tmp_path, data)
    assert got["plain"] == got["gz"]
    rows, rejects = got["plain"]
    assert len(rows) + len(rejects) == len(EDGE_LINES)
    assert {line for line, _ in rejects} == {1, 3, 5, 7, 9, 13, 14, 17}


def test_the_fast_path_accepts_usual_parts_without_the_classifier(tmp_path):
    # The usual lines with documents, turns and tool calls are parsed once: none is left for
    # the line classifier.
    lines = [
        base(0, retrieved_documents=DOCS),
        base(1, conversation=TURNS, tool_calls=CALLS),
        base(2, context="Delivery: 5-7 days."),
        base(3, retrieved_documents=DOCS, conversation=TURNS),
    ]
    path = tmp_path / f"{DAY}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    start = dt.datetime.combine(DAY, dt.time())
    params = {
        "start": start,
        "end": start + dt.timedelta(days=1),
        "max_row_bytes": 1 << 20,
        "max_chars": MAX_CHARS,
        "day": DAY,
    }
    with store.connect(tmp_path / "f.duckdb") as conn:
        fast = FastPass(conn, params, "jsonl", 200)
        fast.setup()
        assert fast.map_lines(path, True, 1 << 21, 8 << 20)
        assert fast.parse(path)
        assert fast.counts(path) == (len(lines), 0)
        assert conn.execute("SELECT count(*) FROM raw_traces WHERE source = 'jsonl'").fetchone()[
            0
        ] == len(lines)
