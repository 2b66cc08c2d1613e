"""OTLP trace requests built with the official protobuf messages, for the receiver's tests."""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def llm_attrs(query: str, answer: str, model: str = "gpt-test", **extra: Any) -> dict:
    return {
        "openinference.span.kind": "LLM",
        "llm.model_name": model,
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": query,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": answer,
        "llm.token_count.prompt": 10,
        "llm.token_count.completion": 5,
        **extra,
    }


def span(
    attrs: dict[str, Any],
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent: bytes = b"",
    start_ns: int | None = None,
    duration_ns: int = 250_000_000,
    error: str | None = None,
    name: str = "ChatCompletion",
) -> Span:
    start = start_ns if start_ns is not None else time.time_ns() - 86_400 * 10**9
    s = Span(
        trace_id=trace_id or os.urandom(16),
        span_id=span_id or os.urandom(8),
        parent_span_id=parent,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=kvs(attrs),
    )
    if error is not None:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    return s


def request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    rs = ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])
    rs.resource.attributes.extend(kvs(resource or {"service.name": "test-app"}))
    return ExportTraceServiceRequest(resource_spans=[rs])
