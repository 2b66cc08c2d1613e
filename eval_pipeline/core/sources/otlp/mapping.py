"""OTLP spans to trace-inbox records, with the same rules as the Phoenix source.

A span is a *trace* (one inbox line), a *reject* (counted in the response's
``partial_success.rejected_spans`` with the reasons) or a *skip* (not a span the pipeline
evaluates: another kind, a child span; accepted and counted, never an error). The
attributes are read by ``core.sources.openinference`` after ``core.sources.genai`` has
translated any GenAI conventions, so OpenInference and GenAI spans follow one set of rules.

The inbox schema has columns for the trace itself; what else a span says is kept in the
record's ``metadata``: ``latency_ms`` (end - start), ``prompt_tokens``,
``completion_tokens``, ``total_tokens``, ``span_id``, ``otel_trace_id``, the service name,
and the names of attributes that were cut to the size limit (``truncated_attributes``).

Trace ids: with root spans only (the default) a trace has at most one selected span, and
the record's ``trace_id`` is the OpenTelemetry trace id, as in the Phoenix source. With
child spans selected too, the receiver cannot know how many of a trace's spans are still
to come, so every record's id is ``<trace id>:<span id>``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from eval_pipeline.core.sources import genai, openinference, span_parts, trace_parts
from eval_pipeline.core.sources.inbox import DEFAULT_MAX_ROW_BYTES
from eval_pipeline.core.sources.otlp.decode import FlatSpan

STATUS_ERROR = 2
MAX_CLOCK_AHEAD_NS = 3600 * 10**9  # an hour of clock skew is tolerated
SOURCE_NAME = "otlp"


@dataclass
class Record:
    day: dt.date
    key: str  # "<trace id>:<span id>": what makes a retried span a duplicate
    line: str  # the inbox JSON line, no newline


@dataclass
class Mapped:
    records: list[Record] = field(default_factory=list)
    rejects: Counter = field(default_factory=Counter)  # reason (without detail) -> count
    skips: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first full reason

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())

    def message(self, limit: int = 5) -> str:
        parts = [
            f"{n} x {self.examples.get(reason, reason)}"
            for reason, n in self.rejects.most_common(limit)
        ]
        return "; ".join(parts)


def _error_detail(span: FlatSpan) -> str:
    message = span.status_message.strip()
    if not message:
        for name, attrs in span.events:
            if name == "exception" and str(attrs.get("exception.message") or "").strip():
                message = str(attrs["exception.message"]).strip()
                break
    if not message:
        message = str(span.attributes.get("error.type") or "")
    return " ".join(message.split())[:120] or "no message"


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=rest // 1000)
    return stamp.isoformat()


def _iso_or_raw(ns: int) -> str:
    try:
        return _iso(ns)
    except (OverflowError, OSError, ValueError):
        return str(ns)


def _span_attrs(span: FlatSpan) -> dict[str, Any]:
    # Resource attributes (service.name, deployment.environment, ...) are visible to the
    # configurable attribute lists (segment, user, ...); the span's own win.
    return genai.as_openinference({**span.resource, **span.attributes}, span.events)


def map_span(
    span: FlatSpan,
    rules: openinference.TraceRules,
    extras: span_parts.TraceExtras | None = None,
) -> tuple[str, Any]:
    """("trace", Record) | ("reject", reason) | ("skip", reason) for one span.

    ``extras``: documents and tool calls from the other spans of the same request.
    """
    attrs = _span_attrs(span)
    # OpenInference sends ``metadata`` as one JSON string attribute; Phoenix parses and
    # flattens it on ingest (metadata.prompt_version), so the receiver does the same.
    if isinstance(attrs.get("metadata"), str):
        try:
            parsed = json.loads(attrs["metadata"])
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            attrs["metadata"] = parsed
    kind = openinference.span_kind(attrs.get("openinference.span.kind"))
    skip = openinference.skip_reason(kind, span.parent_span_id, rules)
    if skip is not None:
        return "skip", skip
    if len(span.trace_id) != 32 or len(span.span_id) != 16 or span.trace_id == "0" * 32:
        return "reject", "malformed span (no trace_id / span_id)"
    if span.start_ns <= 0:
        return "reject", "malformed span (no start time)"
    if span.start_ns > time.time_ns() + MAX_CLOCK_AHEAD_NS:
        # A client clock far ahead would file records under days not yet run.
        return "reject", f"start time in the future ({_iso_or_raw(span.start_ns)})"
    if span.status_code == STATUS_ERROR:
        return "reject", f"span status ERROR ({_error_detail(span)})"
    fields = openinference.parse_attributes(attrs, rules)
    if isinstance(fields, openinference.Reject):
        return "reject", fields.reason
    try:
        start = _iso(span.start_ns)
    except (OverflowError, OSError, ValueError):
        return "reject", f"malformed span (start time {span.start_ns} out of range)"
    # span_id first: recovery finds a line's key without parsing the line (writer.py).
    metadata: dict[str, Any] = {
        "span_id": span.span_id,
        "otel_trace_id": span.trace_id,
        "span_name": span.name,
        "span_kind": kind,
        **fields.conversation,
    }
    if span.end_ns >= span.start_ns > 0:
        metadata["latency_ms"] = round((span.end_ns - span.start_ns) / 1e6, 3)
    metadata.update(fields.details)
    if (total := attrs.get("llm.token_count.total")) is not None:
        metadata["total_tokens"] = total
    if (service := span.resource.get("service.name")) is not None:
        metadata["service_name"] = service
    if span.truncated:
        metadata["truncated_attributes"] = sorted(set(span.truncated))
    trace_id = span.trace_id if rules.root_only else f"{span.trace_id}:{span.span_id}"
    record = {
        "trace_id": trace_id,
        "timestamp": start,
        "user_query": fields.user_query,
        "assistant_response": fields.assistant_response,
        "segment": fields.segment,
        "model": fields.model,
        "prompt_version": fields.prompt_version,
        "user_id": fields.user_id,
        "metadata": metadata,
    }
    own = span_parts.own_parts(attrs)
    parts, cut = trace_parts.fit(
        (extras or span_parts.TraceExtras()).parts_for(span.trace_id, own), rules.max_chars
    )
    if cut:
        metadata["truncated_parts"] = cut
    line = json.dumps({**record, **parts.record_fields()}, ensure_ascii=False, default=str)
    size = len(line.encode("utf-8"))
    if size >= DEFAULT_MAX_ROW_BYTES and parts.record_fields():
        # The parts made the line too large: the trace without them beats no trace.
        metadata["dropped_parts"] = sorted(parts.record_fields())
        line = json.dumps(record, ensure_ascii=False, default=str)
        size = len(line.encode("utf-8"))
    if size >= DEFAULT_MAX_ROW_BYTES:
        # The inbox source would reject the line later; say so now, to the sender.
        return "reject", f"record too large ({size} bytes >= {DEFAULT_MAX_ROW_BYTES})"
    day = dt.date.fromisoformat(start[:10])
    return "trace", Record(day, f"{span.trace_id}:{span.span_id}", line)


def _extras(spans: list[FlatSpan]) -> span_parts.TraceExtras:
    """Retrieved documents and tool calls of the request's RETRIEVER and TOOL spans."""
    extras = span_parts.TraceExtras()
    for span in spans:
        kind = str(span.attributes.get("openinference.span.kind") or "").upper()
        if kind in span_parts.PART_SPAN_KINDS:
            try:
                extras.add(kind, span.trace_id, span.start_ns, span.attributes)
            except Exception:  # a parser bug must cost the part, not the request
                continue
    return extras


def map_spans(spans: Any, rules: openinference.TraceRules) -> Mapped:
    out = Mapped()
    spans = list(spans)
    extras = _extras(spans)
    for span in spans:
        try:
            kind, value = map_span(span, rules, extras)
        except Exception as exc:  # a parser bug must cost one span, not the request
            kind, value = "reject", f"unreadable span ({type(exc).__name__}: {exc})"
        if kind == "trace":
            out.records.append(value)
        elif kind == "skip":
            out.skips[value] += 1
        else:
            short = value.split(" (", 1)[0]
            out.rejects[short] += 1
            out.examples.setdefault(short, value)
    return out
