"""Phoenix spans (REST shape, real samples captured from Phoenix 20.26.1) to traces,
rejects and skips: ids, times, status, kind and parent around the OpenInference parser."""

from __future__ import annotations

import datetime as dt

import pytest

from eval_pipeline.core.sources.openinference import rebuild_conversation
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.spans import classify_span, classify_spans
from eval_pipeline_tests.sources.phoenix_samples import llm_span, load

CFG = PhoenixConfig(project="p")


def test_sample_child_llm_span_rebuilt_but_skipped_when_roots_only():
    child, root = load("sample_spans.json")
    conv = rebuild_conversation(child["attributes"])
    assert [m.role for m in conv.messages] == ["system", "user"]
    assert conv.messages[1].text == "What is 0 + 0?"
    assert conv.answer.text == "I think it is 1."
    assert conv.input_from == "llm.input_messages"
    assert classify_span(child, CFG).kind == "skip"
    assert classify_span(child, CFG).reason == "not a root span"
    outcome = classify_span(child, PhoenixConfig(project="p", root_only=False))
    assert outcome.kind == "trace"
    assert outcome.row.user_query == "What is 0 + 0?"


def test_sample_root_llm_span_becomes_a_trace_with_attributes():
    _, root = load("sample_spans.json")
    outcome = classify_span(root, CFG)
    assert outcome.kind == "trace", outcome.reason
    row = outcome.row
    assert row.trace_id == "2c17e0ad977863c39fadb67223fae868"
    assert row.span_id == "054a48f5345fc4d5"
    assert row.user_query == "What is 5 + 5?"
    assert row.assistant_response == "5 + 5 = 10."
    assert row.model == "gpt-4o-mini"
    assert row.user_id == "user-1"
    assert row.segment is None  # no metadata.segment on this span
    assert row.ts == dt.datetime(2026, 11, 28, 5, 59, 25, 884892)
    assert row.metadata["metadata"] == {"case_id": 5, "tier": "test"}
    assert row.metadata["session_id"] == "session-2"
    assert row.metadata["prompt_tokens"] == 25
    assert row.metadata["latency_ms"] == pytest.approx(750.0)
    seg = classify_span(root, PhoenixConfig(project="p", segment_attrs=("metadata.tier",)))
    assert seg.row.segment == "test"


def test_sample_chain_root_is_skipped_and_error_span_rejected():
    chain, error = load("sample_span_chain_and_error.json")
    assert classify_span(chain, CFG).kind == "skip"
    assert classify_span(chain, CFG).reason == "span kind CHAIN"
    outcome = classify_span(error, CFG)
    assert outcome.kind == "reject"
    assert outcome.reason == "span status ERROR (rate limited (fake))"


def test_sample_page_all_root_llm_spans_are_traces():
    page = load("spans_page1_response.json")["data"]
    day = classify_spans(page, CFG)
    assert len(day.traces) == len(page) == 7
    assert not day.rejects and not day.skips
    for span, row in zip(page, day.traces, strict=True):
        assert row.span_id == span["context"]["span_id"]
        assert row.user_query == span["attributes"]["llm.input_messages.1.message.content"]
        assert row.assistant_response == span["attributes"]["output.value"]


def test_several_selected_spans_of_one_trace_get_distinct_ids():
    a = llm_span({"input.value": "q1", "output.value": "a1"})
    b = llm_span(
        {"input.value": "q2", "output.value": "a2"},
        context={"trace_id": "a" * 32, "span_id": "c" * 16},
        parent_id="d" * 16,
    )
    lone = llm_span(
        {"input.value": "q3", "output.value": "a3"},
        context={"trace_id": "e" * 32, "span_id": "f" * 16},
    )
    day = classify_spans([a, b, lone, a], PhoenixConfig(project="p", root_only=False))
    assert [t.trace_id for t in day.traces] == [
        "a" * 32 + ":" + "b" * 16,
        "a" * 32 + ":" + "c" * 16,
        "e" * 32,
    ]
    assert [r[1] for r in day.rejects] == ["duplicate span id"]


def test_a_parser_crash_costs_one_span_not_the_day():
    bad = llm_span({"input.value": "q", "output.value": "a"}, start_time=None)
    weird = llm_span({"input.value": "q", "output.value": "a"}, attributes=["not", "a", "dict"])
    day = classify_spans([bad, weird, llm_span({"input.value": "q", "output.value": "a."})], CFG)
    assert len(day.traces) == 1
    assert [r[1].split(" (")[0] for r in day.rejects] == ["bad start_time", "malformed span"]
