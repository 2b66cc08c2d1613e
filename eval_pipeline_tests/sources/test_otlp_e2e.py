"""End to end with clients nobody here wrote: an ``openai`` app instrumented with
OpenInference or with the OpenTelemetry GenAI instrumentation, exporting with the
OpenTelemetry SDK's OTLP/HTTP exporter to `eval-pipeline otlp serve`, talking to the fake
OpenAI server; then the drift loop's ``raw_traces`` asset ingests the day from the inbox."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.defs import drift_loop
from eval_pipeline_tests.drift.drift_fixtures import DRIFT_RESOURCES
from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault, completion_body
from eval_pipeline_tests.sources.otlp_receiver import Receiver

APP = Path(__file__).with_name("otlp_app.py")
DAY_S = 86_400

ANSWERS = {
    "What is the capital of France?": "Paris is the capital of France.",
    "And what should I eat there?": "Try a croissant and steak frites.",
    "What is the weather in Paris?": "It is 18 degrees in Paris.",
}


def responder(body: dict) -> str:
    last_user = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
    return ANSWERS[last_user]


def tool_call_body(request: dict) -> dict:
    body = completion_body(request, "")
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


def run_app(flavour: str, receiver: Receiver, fake: FakeOpenAIServer) -> dict[str, int]:
    """Runs the app; returns the prompt tokens the fake server reported, by user query."""
    fake.responder = responder
    fake.latency = 0.05  # every call takes at least 50 ms: the spans' latency shows it
    # Calls in order: turn 1, turn 2, the tool call, its answer, a failure.
    tool_json = tool_call_body({"model": f"gpt-{flavour}", "messages": []})
    fake.script("ok", "ok", Fault.json(tool_json), "ok", Fault.status(500))
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"Authorization=Bearer%20{receiver.token}",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
        "APP_CLOCK_SHIFT_S": str(DAY_S),
    }
    done = subprocess.run(
        [sys.executable, str(APP), flavour, fake.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert fake.calls == 5
    prompt_tokens = {}
    for req in fake.chat_requests:
        if req.fault == "content":
            query = [m for m in req.json["messages"] if m.get("role") == "user"][-1]["content"]
            prompt_tokens[query] = completion_body(req.json, "")["usage"]["prompt_tokens"]
    return prompt_tokens


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["openinference", "genai"])
def test_instrumented_app_to_receiver_to_drift_assets(flavour, tmp_path):
    inbox = settings.trace_inbox()
    receiver = Receiver(
        inbox,
        "--publish-seconds",
        "0.2",
        "--segment-attr",
        "metadata.segment",
        "--segment-attr",
        "app.segment",
        log_path=tmp_path / "receiver.log",
    )
    with FakeOpenAIServer() as fake, receiver:
        prompt_tokens = run_app(flavour, receiver, fake)
        health = receiver.health()
    # Five LLM spans: three traces, the tool-call turn (no text answer) and the 500 rejected.
    assert health["spans_received"] == 5, health
    assert health["records_written"] == 3, health
    assert health["rejected"] == {"non-text content": 1, "span status ERROR": 1}, health
    assert health["statuses"] == {"200": health["requests"]}, health

    day = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=DAY_S)).date()
    assert sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) == [
        day.isoformat()
    ]
    result = dg.materialize(
        [drift_loop.raw_traces],
        resources=DRIFT_RESOURCES,
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day.isoformat(),
    )
    assert result.success
    meta = result.asset_materializations_for_node("raw_traces")[0].metadata
    assert meta["rows_ingested"].value == 3 and meta["rows_rejected"].value == 0

    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = conn.execute(
            "SELECT user_query, assistant_response, model, segment, prompt_version, user_id, "
            "metadata, ts FROM raw_traces ORDER BY ts"
        ).fetchall()
        parts = {
            q: (None if c is None else json.loads(c), None if t is None else json.loads(t))
            for q, c, t in conn.execute(
                "SELECT user_query, conversation, tool_calls FROM raw_traces"
            ).fetchall()
        }
    by_query = {r[0]: r for r in rows}
    assert set(by_query) == set(ANSWERS)
    for query, answer in ANSWERS.items():
        _, response, model, segment, prompt_version, user_id, metadata, ts = by_query[query]
        meta = json.loads(metadata)
        assert response == answer
        assert model == f"gpt-{flavour}"
        assert segment == "travel"  # a resource attribute, by --segment-attr
        assert ts.date() == day
        # Tokens as the fake server counted them, latency from the span.
        assert meta["prompt_tokens"] == prompt_tokens[query]
        assert meta["completion_tokens"] == len(answer) // 4
        assert 50 <= meta["latency_ms"] < 30_000
        assert meta["service_name"] == f"travel-{flavour}"
        if flavour == "openinference":
            assert (prompt_version, user_id, meta["session_id"]) == ("v3", "user-7", "sess-1")
    turn2 = json.loads(by_query["And what should I eat there?"][6])
    assert turn2["user_turns"] == 2  # the last user turn of a multi-turn input
    tool_answer = json.loads(by_query["What is the weather in Paris?"][6])
    assert tool_answer["input_messages"] == 3  # user, assistant tool call, tool result
    # The trace's parts: the conversation of the second turn, the tool call with its result.
    assert parts["What is the capital of France?"] == (None, None)  # one question: no parts
    conversation, tool_calls = parts["And what should I eat there?"]
    assert [t["role"] for t in conversation] == ["system", "user", "assistant", "user"]
    assert conversation[2]["content"] == ANSWERS["What is the capital of France?"]
    assert tool_calls is None
    conversation, tool_calls = parts["What is the weather in Paris?"]
    assert [t["role"] for t in conversation] == ["user", "assistant", "tool"]
    assert tool_calls == [
        {"name": "get_weather", "arguments": {"city": "Paris"}, "result": {"c": 18}}
    ]
