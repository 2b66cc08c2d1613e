"""A small chat app instrumented the way teams do it, run as its own process by the OTLP tests.

    python otlp_app.py openinference|genai OPENAI_BASE_URL

It uses the ``openai`` client, instrumented by ``openinference-instrumentation-openai`` or
by the OpenTelemetry GenAI instrumentation (``opentelemetry-instrumentation-openai-v2``),
and exports with ``opentelemetry-sdk``'s BatchSpanProcessor and the OTLP/HTTP protobuf
exporter, configured by the standard variables (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_HEADERS``). It has: a two-turn conversation, a tool call and
its answer, and a call that fails with a 500 (the test scripts the fake server's answers).

``APP_CLOCK_SHIFT_S`` moves the SDK's clock back: the drift loop's partitions end at the
last complete UTC day, so the test's app runs "yesterday".
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import openai
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SYSTEM = "You are a concise travel assistant."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def main() -> int:
    flavour, base_url = sys.argv[1], sys.argv[2]
    shift_ns = int(float(os.environ.get("APP_CLOCK_SHIFT_S", "0")) * 1e9)
    if shift_ns:
        sdk_trace.time_ns = lambda: time.time_ns() - shift_ns
    resource = Resource.create({"service.name": f"travel-{flavour}", "app.segment": "travel"})
    provider = sdk_trace.TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if flavour == "openinference":
        from openinference.instrumentation import using_attributes
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        context = using_attributes(
            session_id="sess-1", user_id="user-7", metadata={"prompt_version": "v3"}
        )
    else:
        from contextlib import nullcontext

        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        context = nullcontext()
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    model = f"gpt-{flavour}"
    with context:
        history = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What is the capital of France?"},
        ]
        first = client.chat.completions.create(model=model, messages=history)
        history += [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And what should I eat there?"},
        ]
        client.chat.completions.create(model=model, messages=history)
        ask = [{"role": "user", "content": "What is the weather in Paris?"}]
        call = client.chat.completions.create(model=model, messages=ask, tools=TOOLS)
        tool_call = call.choices[0].message.tool_calls[0]
        ask += [
            call.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tool_call.id, "content": json.dumps({"c": 18})},
        ]
        client.chat.completions.create(model=model, messages=ask, tools=TOOLS)
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Book me a flight"}]
            )
    provider.shutdown()  # flushes the batch processor: every span is exported
    return 0


if __name__ == "__main__":
    sys.exit(main())
