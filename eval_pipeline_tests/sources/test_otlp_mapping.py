"""OTLP decoding and span mapping without a server: the GenAI conventions in each of their
shapes read through the one OpenInference parser (here and in the Phoenix source), OTLP/JSON
ids, gzip, attribute truncation, and the record written to the inbox."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from google.protobuf import json_format

from eval_pipeline.core.sources import genai
from eval_pipeline.core.sources.openinference import TraceRules
from eval_pipeline.core.sources.otlp import decode
from eval_pipeline.core.sources.otlp.mapping import map_span, map_spans
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.spans import classify_span
from eval_pipeline_tests.sources.otlp_requests import llm_attrs, request, span

RULES = TraceRules()


def flat(*spans, max_chars: int = 64_000, resource=None):
    return list(decode.iter_spans(request(*spans, resource=resource), max_chars))


def one(attrs, rules=RULES, **kw):
    (s,) = flat(span(attrs, **kw))
    return map_span(s, rules)


GENAI_BASE = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 7,
}


def test_genai_latest_conventions_message_attributes():
    attrs = {
        **GENAI_BASE,
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be brief"}]),
        "gen_ai.input.messages": json.dumps(
            [
                {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
                {"role": "assistant", "parts": [{"type": "text", "content": "hello"}]},
                {"role": "user", "parts": [{"type": "text", "content": "2+2?"}]},
            ]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "4"}]}]
        ),
    }
    kind, rec = one(attrs)
    assert kind == "trace", rec
    row = json.loads(rec.line)
    assert (row["user_query"], row["assistant_response"]) == ("2+2?", "4")
    assert row["model"] == "gpt-4o-2024-08-06"  # the response's model over the request's
    meta = row["metadata"]
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (12, 7)
    assert meta["user_turns"] == 2 and meta["input_messages"] == 4  # system first


def test_genai_span_events_and_legacy_indexed_attributes():
    s = span(GENAI_BASE)
    user = s.events.add(name="gen_ai.user.message")
    user.attributes.add(key="content").value.string_value = "capital of Peru?"
    choice = s.events.add(name="gen_ai.choice")
    choice.attributes.add(key="message").value.string_value = json.dumps(
        {"role": "assistant", "content": "Lima"}
    )
    (fs,) = flat(s)
    kind, rec = map_span(fs, RULES)
    assert kind == "trace", rec
    assert json.loads(rec.line)["user_query"] == "capital of Peru?"
    assert json.loads(rec.line)["assistant_response"] == "Lima"

    legacy = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-3.5",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "ping",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "pong",
    }
    kind, rec = one(legacy)
    assert kind == "trace" and json.loads(rec.line)["assistant_response"] == "pong"


def test_genai_tool_call_output_embeddings_and_errors():
    tool = {
        **GENAI_BASE,
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "weather?"}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "tool_call", "name": "get_weather"}]}]
        ),
    }
    assert one(tool) == ("reject", "non-text content (output has tool_call)")
    embeddings = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5"}
    assert one(embeddings) == ("skip", "span kind UNKNOWN")
    assert one({**tool, "error.type": "RateLimitError"}, error="") == (
        "reject",
        "span status ERROR (RateLimitError)",
    )


def test_openinference_attributes_win_over_genai_ones():
    attrs = {**llm_attrs("q", "a", model="oi-model"), **GENAI_BASE}
    out = genai.as_openinference(attrs)
    assert out["llm.model_name"] == "oi-model"
    assert out["llm.token_count.prompt"] == 10


def test_phoenix_source_reads_genai_spans_with_the_same_translation():
    phoenix_span = {
        "context": {"trace_id": "ab" * 16, "span_id": "cd" * 8},
        "span_kind": "UNKNOWN",
        "parent_id": None,
        "start_time": "2026-11-01T10:00:00+00:00",
        "end_time": "2026-11-01T10:00:01+00:00",
        "status_code": "OK",
        "attributes": {
            **GENAI_BASE,
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "q?"}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "a."}]}]
            ),
        },
    }
    outcome = classify_span(phoenix_span, PhoenixConfig(project="p"))
    assert outcome.kind == "trace", outcome.reason
    assert (outcome.row.user_query, outcome.row.model) == ("q?", "gpt-4o-2024-08-06")
    assert outcome.row.metadata["prompt_tokens"] == 12


def test_record_fields_metadata_json_and_child_span_ids():
    attrs = llm_attrs("q", "a", **{"metadata": json.dumps({"segment": "billing"}), "user.id": "u1"})
    kind, rec = one(attrs, duration_ns=1_500_000)
    row = json.loads(rec.line)
    assert row["segment"] == "billing" and row["user_id"] == "u1"
    assert row["metadata"]["latency_ms"] == 1.5
    assert row["metadata"]["service_name"] == "test-app"
    assert rec.key == f"{row['trace_id']}:{row['metadata']['span_id']}"

    parent = span(llm_attrs("root", "r"))
    child = span(llm_attrs("child", "c"), trace_id=parent.trace_id, parent=parent.span_id)
    mapped = map_spans(flat(parent, child), TraceRules(root_only=False))
    ids = [json.loads(r.line)["trace_id"] for r in mapped.records]
    assert ids == [f"{parent.trace_id.hex()}:{s.span_id.hex()}" for s in (parent, child)]
    assert map_spans(flat(parent, child), RULES).skips == {"not a root span": 1}


def test_segment_from_a_resource_attribute_span_attributes_win():
    rules = TraceRules(segment_attrs=("app.segment",))
    s = flat(span(llm_attrs("q", "a")), resource={"app.segment": "from-resource"})[0]
    assert json.loads(map_span(s, rules)[1].line)["segment"] == "from-resource"
    s = flat(
        span(llm_attrs("q", "a", **{"app.segment": "from-span"})),
        resource={"app.segment": "from-resource"},
    )[0]
    assert json.loads(map_span(s, rules)[1].line)["segment"] == "from-span"


def test_long_values_are_truncated_and_marked():
    (s,) = flat(span(llm_attrs("q" * 50, "a")), max_chars=10)
    assert s.attributes["llm.input_messages.0.message.content"] == (
        "q" * 10 + decode.TRUNCATION_MARK.format(n=50)
    )
    assert s.truncated == ["llm.input_messages.0.message.content"]


def test_json_ids_are_hex_and_bad_ones_are_rejected():
    body = json_format.MessageToDict(request(span(llm_attrs("q", "a"))))
    s = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    s["traceId"], s["spanId"] = "ab" * 16, "cd" * 8
    req = decode.parse_request(json.dumps(body).encode(), decode.JSON)
    assert req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex() == "ab" * 16
    s["spanId"] = "zz" * 8
    with pytest.raises(decode.BadRequest) as err:
        decode.parse_request(json.dumps(body).encode(), decode.JSON)
    assert err.value.status == 400 and "not hex" in err.value.reason
    s["spanId"] = "cd" * 4
    with pytest.raises(decode.BadRequest, match="8 bytes"):
        decode.parse_request(json.dumps(body).encode(), decode.JSON)
    with pytest.raises(decode.BadRequest):
        decode.parse_request(b"[1, 2]", decode.JSON)


def test_content_types_and_gzip():
    assert decode.media_type("application/json; charset=utf-8") == decode.JSON
    assert decode.media_type("Application/X-Protobuf") == decode.PROTOBUF
    assert decode.media_type("text/plain") is None and decode.media_type(None) is None
    raw = b"x" * 1000
    assert decode.decompress(gzip.compress(raw), "gzip", 1000) == raw
    with pytest.raises(decode.BadRequest) as err:
        decode.decompress(gzip.compress(raw), "gzip", 999)
    assert err.value.status == 413
    with pytest.raises(decode.BadRequest) as err:
        decode.decompress(gzip.compress(raw)[:-12], "gzip", 5000)
    assert err.value.status == 400


def test_a_span_from_a_clock_far_ahead_is_rejected_not_filed_under_a_future_day():
    ahead = 2 * 3600 * 10**9
    kind, reason = one(llm_attrs("q", "a"), start_ns=time.time_ns() + ahead)
    assert kind == "reject" and reason.startswith("start time in the future (")
    assert one(llm_attrs("q", "a"), start_ns=2**64 - 10**9)[0] == "reject"


def test_a_record_the_inbox_would_refuse_as_too_long_is_rejected_here():
    many = {f"metadata.note{i}": "n" * 60_000 for i in range(20)}  # each under the cut
    kind, reason = one(llm_attrs("q", "a", **many))
    assert kind == "reject" and reason.startswith("record too large (")


def test_hostile_json_bodies_are_400s():
    for body in (b"[" * 100_000, b'{"resourceSpans": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        with pytest.raises(decode.BadRequest) as err:
            decode.parse_request(body, decode.JSON)
        assert err.value.status == 400
    with pytest.raises(decode.BadRequest):
        decode.parse_request(b"\xff\xfe not utf-8", decode.JSON)
    with pytest.raises(decode.BadRequest):
        decode.parse_request(b'{"resourceSpans": 5}', decode.JSON)
