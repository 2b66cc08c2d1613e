"""Against a real Phoenix: the day's RETRIEVER and TOOL spans (children of the trace's root
span) are read by the second span query and become the trace's retrieved documents and
tool calls in ``raw_traces``."""

from __future__ import annotations

import datetime as dt
import json
import secrets

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.sources.ingest import ingest_day
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.source import PhoenixSource, skipped_spans
from eval_pipeline_tests.sources.phoenix_fixtures import (
    make_span,
    phoenix_server,  # noqa: F401  (session fixture)
    seed_spans,
)

pytestmark = pytest.mark.phoenix
DAY = "2026-04-07"


def test_retriever_and_tool_children_become_the_roots_parts(phoenix_server, tmp_path):  # noqa: F811
    project = f"parts-{secrets.token_hex(4)}"
    trace_id = secrets.token_hex(16)
    root = make_span(
        f"{DAY}T10:00:00+00:00",
        {
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "How long does delivery take?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Standard delivery takes 5-7 days.",
        },
        trace_id=trace_id,
    )
    root_id = root["context"]["span_id"]
    retriever = make_span(
        f"{DAY}T10:00:00.100+00:00",
        {
            "retrieval.documents.0.document.id": "kb-1",
            "retrieval.documents.0.document.content": "Standard delivery takes 5-7 days.",
            "retrieval.documents.0.document.score": 0.9,
        },
        kind="RETRIEVER",
        name="retrieve",
        trace_id=trace_id,
        parent_id=root_id,
    )
    tool = make_span(
        f"{DAY}T10:00:00.200+00:00",
        {"tool.name": "eta", "input.value": '{"zone": 2}', "output.value": "5-7 days"},
        kind="TOOL",
        name="eta",
        trace_id=trace_id,
        parent_id=root_id,
    )
    other = make_span(  # another trace's retriever: not this trace's context
        f"{DAY}T11:00:00+00:00",
        {"retrieval.documents.0.document.content": "unrelated"},
        kind="RETRIEVER",
    )
    seed_spans(phoenix_server, project, [root, retriever, tool, other])
    cfg = PhoenixConfig(base_url=phoenix_server.base_url, project=project)
    day = dt.date.fromisoformat(DAY)
    with store.connect(tmp_path / "db.duckdb") as conn:
        res = ingest_day(conn, PhoenixSource(cfg), day)
        row = conn.execute("SELECT trace_id, context, tool_calls FROM raw_traces").fetchone()
        skips = skipped_spans(conn, day)
    assert res.rows_ingested == 1
    assert row[0] == trace_id
    assert json.loads(row[1]) == [
        {"id": "kb-1", "text": "Standard delivery takes 5-7 days.", "score": 0.9}
    ]
    assert json.loads(row[2]) == [{"name": "eta", "arguments": {"zone": 2}, "result": "5-7 days"}]
    # The other trace's retriever is a root span of another kind (skipped as before); the
    # children read for the parts are not counted as skipped.
    assert skips == {"span kind RETRIEVER": 1}
