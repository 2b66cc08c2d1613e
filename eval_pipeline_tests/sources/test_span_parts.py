"""A trace's parts from real spans: an ``openai`` app instrumented with OpenInference (a
multi-turn chat, a tool call and its result) and a RAG step whose RETRIEVER span is written
with the OpenTelemetry SDK and OpenInference's attribute names; the spans are encoded by the
SDK's OTLP encoder, decoded and mapped by the receiver, and ingested from the inbox into
``raw_traces``. The Phoenix source gets the same parts from Phoenix-shaped spans."""

from __future__ import annotations

import datetime as dt
import json
import os

import httpx
import openai
import pytest
from openinference.instrumentation.openai import OpenAIInstrumentor
from openinference.semconv.trace import (
    DocumentAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as GenAIInstrumentor
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eval_pipeline.core import store
from eval_pipeline.core.sources import span_parts
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import ingest_day
from eval_pipeline.core.sources.openinference import TraceRules
from eval_pipeline.core.sources.otlp import decode
from eval_pipeline.core.sources.otlp.mapping import map_spans
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.source import PhoenixSource
from eval_pipeline.core.sources.phoenix.spans import classify_spans
from eval_pipeline.defs.resources import TraceSourceResource
from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault
from eval_pipeline_tests.sources.phoenix_samples import Script, llm_span
from eval_pipeline_tests.sources.test_otlp_e2e import tool_call_body

SYSTEM = "You are a support bot."
DOCS = [
    ("kb-ship-1", "Standard delivery takes 5-7 business days.", 0.92),
    ("kb-ship-2", "Express delivery is offered at checkout and takes 2-3 days.", 0.71),
]
ANSWERS = {
    "Hi, I have a question.": "Sure, what is it?",
    "How long does delivery take?": "Standard delivery takes 5-7 business days.",
    "What is the weather in Paris?": "It is 18 degrees in Paris.",
}


def responder(body: dict) -> str:
    last = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
    return ANSWERS[last]


GENAI_ENV = {
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
}


@pytest.fixture(scope="module", params=["openinference", "genai"])
def exported(request):
    """The finished spans of the app's calls (real instrumentation, real client), with
    OpenInference's instrumentation or the OpenTelemetry GenAI one."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("rag-app")
    saved = {k: os.environ.get(k) for k in GENAI_ENV}
    if request.param == "genai":
        os.environ.update(GENAI_ENV)
        instrumentor = GenAIInstrumentor()
    else:
        instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with FakeOpenAIServer() as fake:
            fake.responder = responder
            fake.script("ok", Fault.json(tool_call_body({"model": "m", "messages": []})), "ok")
            client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
            kind = SpanAttributes.OPENINFERENCE_SPAN_KIND
            # A RAG turn: a chain, its retriever, then the LLM call on the retrieved text.
            with tracer.start_as_current_span(
                "answer", attributes={kind: OpenInferenceSpanKindValues.CHAIN.value}
            ):
                retriever = {kind: OpenInferenceSpanKindValues.RETRIEVER.value}
                for i, (doc_id, text, score) in enumerate(DOCS):
                    head = f"{SpanAttributes.RETRIEVAL_DOCUMENTS}.{i}"
                    retriever[f"{head}.{DocumentAttributes.DOCUMENT_ID}"] = doc_id
                    retriever[f"{head}.{DocumentAttributes.DOCUMENT_CONTENT}"] = text
                    retriever[f"{head}.{DocumentAttributes.DOCUMENT_SCORE}"] = score
                with tracer.start_as_current_span("retrieve", attributes=retriever):
                    pass
                history = [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "Hi, I have a question."},
                    {"role": "assistant", "content": "Sure, what is it?"},
                    {"role": "user", "content": "How long does delivery take?"},
                ]
                client.chat.completions.create(model="m", messages=history)
            # An agent turn: a tool call, then the answer on its result.
            with tracer.start_as_current_span(
                "agent", attributes={kind: OpenInferenceSpanKindValues.AGENT.value}
            ):
                ask = [{"role": "user", "content": "What is the weather in Paris?"}]
                call = client.chat.completions.create(model="m", messages=ask)
                tool_call = call.choices[0].message.tool_calls[0]
                ask += [
                    call.choices[0].message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": tool_call.id, "content": '{"c": 18}'},
                ]
                client.chat.completions.create(model="m", messages=ask)
    finally:
        instrumentor.uninstrument()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    provider.shutdown()
    return exporter.get_finished_spans()


RULES = TraceRules(span_kinds=("LLM",), root_only=False)


def test_otlp_records_carry_the_documents_conversation_and_tool_calls(exported, tmp_path):
    body = encode_spans(exported).SerializeToString()
    request = decode.parse_request(body, "application/x-protobuf")
    mapped = map_spans(decode.iter_spans(request, 64_000), RULES)
    assert mapped.rejected == 1  # the tool-call request has no text answer
    records = [json.loads(r.line) for r in mapped.records]
    by_query = {r["user_query"]: r for r in records}
    assert set(by_query) == {"How long does delivery take?", "What is the weather in Paris?"}

    rag = by_query["How long does delivery take?"]
    assert rag["retrieved_documents"] == [
        {"id": doc_id, "text": text, "score": score} for doc_id, text, score in DOCS
    ]
    assert rag["conversation"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi, I have a question."},
        {"role": "assistant", "content": "Sure, what is it?"},
        {"role": "user", "content": "How long does delivery take?"},
    ]
    assert "tool_calls" not in rag

    agent = by_query["What is the weather in Paris?"]
    assert agent["tool_calls"] == [
        {"name": "get_weather", "arguments": {"city": "Paris"}, "result": {"c": 18}}
    ]
    assert [t["role"] for t in agent["conversation"]] == ["user", "assistant", "tool"]
    assert "retrieved_documents" not in agent  # no retriever in that trace

    # The receiver's lines go through the inbox like any other file.
    day = dt.date.fromisoformat(records[0]["timestamp"][:10])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / f"{day}.jsonl").write_text("".join(r.line + "\n" for r in mapped.records))
    with store.connect(tmp_path / "t.duckdb") as conn:
        res = ingest_day(conn, InboxSource(inbox, settle_seconds=0), day)
        assert (res.rows_ingested, res.rows_rejected) == (2, 0)
        rows = conn.execute(
            "SELECT user_query, context, conversation, tool_calls FROM raw_traces ORDER BY 1"
        ).fetchall()
    stored = {q: [None if v is None else json.loads(v) for v in vs] for q, *vs in rows}
    assert stored["How long does delivery take?"][0] == rag["retrieved_documents"]
    assert stored["What is the weather in Paris?"][2] == agent["tool_calls"]


def test_a_single_question_is_not_stored_as_a_conversation():
    attrs = {
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": SYSTEM,
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Where is my order?",
    }
    assert span_parts.own_parts(attrs).conversation is None


def test_tool_results_match_calls_by_id_else_in_order_and_tool_spans_fill_in():
    attrs = {
        "llm.input_messages.0.message.role": "assistant",
        "llm.input_messages.0.message.tool_calls.0.tool_call.id": "a",
        "llm.input_messages.0.message.tool_calls.0.tool_call.function.name": "first",
        "llm.input_messages.0.message.tool_calls.1.tool_call.id": "b",
        "llm.input_messages.0.message.tool_calls.1.tool_call.function.name": "second",
        "llm.input_messages.1.message.role": "tool",
        "llm.input_messages.1.message.tool_call_id": "b",
        "llm.input_messages.1.message.content": "for b",
        "llm.input_messages.2.message.role": "tool",
        "llm.input_messages.2.message.content": "for the next one",
    }
    calls = span_parts.own_parts(attrs).tool_calls
    assert [(c["name"], c["result"]) for c in calls] == [
        ("first", "for the next one"),
        ("second", "for b"),
    ]
    extras = span_parts.TraceExtras()
    extras.add(
        "TOOL", "t1", 2, {"tool.name": "lookup", "input.value": '{"q": 1}', "output.value": "x"}
    )
    extras.add("TOOL", "t1", 1, {"tool.name": "search", "output.value": "y"})
    extras.add("TOOL", "t1", 3, {"input.value": "no name: not a call"})
    extras.add("RETRIEVER", "t1", 1, {"retrieval.documents.0.document.id": "d"})  # no content
    parts = extras.parts_for("t1", span_parts.own_parts({}))
    assert [(c["name"], c["arguments"]) for c in parts.tool_calls] == [
        ("search", None),
        ("lookup", {"q": 1}),
    ]
    assert parts.context == []  # a retriever ran and returned nothing usable
    assert extras.parts_for("other", span_parts.own_parts({})).context is None


def phoenix_retriever(
    trace_id: str, span_id: str, docs: list[tuple[str, str, float]], start: str
) -> dict:
    attrs = {}
    for i, (doc_id, text, score) in enumerate(docs):
        attrs[f"retrieval.documents.{i}.document.id"] = doc_id
        attrs[f"retrieval.documents.{i}.document.content"] = text
        attrs[f"retrieval.documents.{i}.document.score"] = score
    return llm_span(
        attrs,
        name="retrieve",
        span_kind="RETRIEVER",
        parent_id="c" * 16,
        start_time=start,
        context={"trace_id": trace_id, "span_id": span_id},
    )


def test_phoenix_source_reads_the_days_retriever_spans_into_the_context(tmp_path):
    trace = llm_span(
        {"input.value": "How long does delivery take?", "output.value": DOCS[0][1]},
        context={"trace_id": "a" * 32, "span_id": "b" * 16},
    )
    part_spans = [
        phoenix_retriever("a" * 32, "1" * 16, DOCS[1:], "2026-03-01T10:00:00.500+00:00"),
        phoenix_retriever("a" * 32, "2" * 16, DOCS[:1], "2026-03-01T10:00:00.200+00:00"),
        # another trace's retriever
        phoenix_retriever("f" * 32, "3" * 16, DOCS, "2026-03-01T10:00:00.300+00:00"),
    ]

    def handler(request, n):
        kinds = request.url.params.get_list("span_kind")
        data = part_spans if kinds else [trace]
        return httpx.Response(200, json={"data": data, "next_cursor": None})

    script = Script(handler)
    cfg = PhoenixConfig(base_url="http://phx.test", project="p")
    src = PhoenixSource(cfg, transport=httpx.MockTransport(script))
    day = dt.date(2026, 3, 1)
    with store.connect(tmp_path / "db.duckdb") as conn:
        res = ingest_day(conn, src, day)
        context = conn.execute("SELECT context FROM raw_traces").fetchone()[0]
    assert res.rows_ingested == 1
    # Retrievers in start order; the other trace's documents are not this trace's.
    assert json.loads(context) == [{"id": i, "text": t, "score": s} for i, t, s in DOCS]
    part_query = script.requests[1].url.params
    assert part_query.get_list("span_kind") == ["RETRIEVER", "TOOL"]
    assert part_query.get("parent_id") is None
    # A span in both lists (a root retriever is in the root query too) counts once.
    twice = classify_spans([trace, part_spans[0]], cfg, part_spans)
    assert len(twice.traces[0].parts.context) == len(DOCS)
    # Without the part kinds, no second query and no context.
    off = classify_spans([trace], PhoenixConfig(part_kinds=()))
    assert off.traces[0].parts.context is None
    assert PhoenixConfig.from_env({"EVAL_PHOENIX_PART_KINDS": "none"}).part_kinds == ()
    resource = TraceSourceResource(kind="phoenix", phoenix_part_kinds=[])
    assert resource.phoenix_config().part_kinds == ()
    assert TraceSourceResource(kind="phoenix").phoenix_config().part_kinds == ("RETRIEVER", "TOOL")
    with pytest.raises(ValueError, match="part_kinds"):
        PhoenixConfig(part_kinds=("LLM",))
