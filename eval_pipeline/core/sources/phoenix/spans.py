"""Phoenix spans (the ``GET .../spans`` shape) to traces, rejects and skips.

Each span is classified once:

- a *trace* when it is a span of a wanted kind (default: root LLM spans) whose
  OpenInference attributes give a user query and an answer;
- a *reject* (``trace_rejects``, with the reason) when it should have been a trace but
  cannot be: ERROR status, no output, no user turn, non-text content only, a value larger
  than ``max_chars``;
- a *skip* (counted per reason in ``phoenix_span_skips``) when it is not what the pipeline
  evaluates: another span kind (TOOL, CHAIN, ...) or a child span when only roots are wanted.

The attributes are read by ``core.sources.openinference``; this module adds what the REST
shape carries around them (ids, times, status, kind, parent).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval_pipeline.core.sources import genai, openinference, span_parts, trace_parts
from eval_pipeline.core.sources.phoenix.client import project_path
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig

EXCERPT_CHARS = 200  # like the inbox source's trace_rejects excerpts


@dataclass
class TraceRow:
    trace_id: str
    span_id: str
    ts: dt.datetime
    user_query: str
    assistant_response: str
    segment: str | None
    model: str | None
    prompt_version: str | None
    user_id: str | None
    metadata: dict
    parts: trace_parts.TraceParts = field(default_factory=trace_parts.TraceParts)


@dataclass
class Outcome:
    kind: str  # "trace" | "reject" | "skip"
    reason: str = ""
    row: TraceRow | None = None


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _error_detail(span: Mapping[str, Any]) -> str:
    message = str(span.get("status_message") or "").strip()
    if not message:
        for event in span.get("events") or []:
            if isinstance(event, Mapping) and event.get("name") == "exception":
                attrs = event.get("attributes") or {}
                message = str(attrs.get("exception.message") or "").strip()
                if message:
                    break
    return " ".join(message.split())[:120] or "no message"


def _attributes(span: Mapping[str, Any]) -> Any:
    """The span's attributes, with GenAI conventions read as OpenInference (core.sources.genai)."""
    attrs = span.get("attributes") or {}
    if not isinstance(attrs, Mapping) or not genai.is_genai(attrs):
        return attrs
    events = [
        (str(e.get("name") or ""), e.get("attributes") or {})
        for e in span.get("events") or []
        if isinstance(e, Mapping) and isinstance(e.get("attributes") or {}, Mapping)
    ]
    return genai.as_openinference(openinference.flatten_attributes(attrs), events)


def classify_span(span: Mapping[str, Any], cfg: PhoenixConfig) -> Outcome:
    """Turn one span (GET .../spans shape) into a trace row, a reject or a skip."""
    return _classify(span, cfg, cfg.trace_rules())


def _classify(
    span: Mapping[str, Any],
    cfg: PhoenixConfig,
    rules: openinference.TraceRules,
    extras: span_parts.TraceExtras | None = None,
) -> Outcome:
    attrs = _attributes(span)
    kind = openinference.span_kind(span.get("span_kind"))
    if kind == "UNKNOWN" and isinstance(
        attrs, Mapping
    ):  # a GenAI-conventions span: its kind is in its attributes
        kind = openinference.span_kind(attrs.get("openinference.span.kind"))
    skip = openinference.skip_reason(kind, span.get("parent_id"), rules)
    if skip is not None:
        return Outcome("skip", skip)
    context = span.get("context") or {}
    span_id = context.get("span_id") if isinstance(context, Mapping) else None
    trace_id = context.get("trace_id") if isinstance(context, Mapping) else None
    if not isinstance(span_id, str) or not isinstance(trace_id, str) or not span_id:
        return Outcome("reject", "malformed span (no context.span_id / trace_id)")
    ts = _parse_time(span.get("start_time"))
    if ts is None:
        return Outcome("reject", f"bad start_time ({span.get('start_time')!r})")
    if str(span.get("status_code") or "").upper() == "ERROR":
        return Outcome("reject", f"span status ERROR ({_error_detail(span)})")
    fields = openinference.parse_attributes(attrs, rules)
    if isinstance(fields, openinference.Reject):
        return Outcome("reject", fields.reason)
    end = _parse_time(span.get("end_time"))
    metadata: dict[str, Any] = {
        "phoenix_project": cfg.project,
        "span_id": span_id,
        "otel_trace_id": trace_id,
        "span_name": span.get("name"),
        "span_kind": kind,
        **fields.conversation,
    }
    if end is not None:
        metadata["latency_ms"] = round((end - ts).total_seconds() * 1000, 3)
    metadata.update(fields.details)
    own = span_parts.own_parts(attrs)
    parts, cut = trace_parts.fit(
        (extras or span_parts.TraceExtras()).parts_for(trace_id, own), rules.max_chars
    )
    if cut:
        metadata["truncated_parts"] = cut
    row = TraceRow(
        trace_id=trace_id,
        span_id=span_id,
        ts=ts,
        user_query=fields.user_query,
        assistant_response=fields.assistant_response,
        segment=fields.segment,
        model=fields.model,
        prompt_version=fields.prompt_version,
        user_id=fields.user_id,
        metadata=metadata,
        parts=parts,
    )
    return Outcome("trace", row=row)


def _excerpt(span: Mapping[str, Any]) -> str:
    attrs = span.get("attributes") if isinstance(span.get("attributes"), Mapping) else {}
    context = span.get("context") if isinstance(span.get("context"), Mapping) else {}
    small = {
        "span_id": context.get("span_id"),
        "name": span.get("name"),
        "kind": span.get("span_kind"),
        "start": span.get("start_time"),
        "status": span.get("status_code"),
        "input": str(attrs.get("input.value", ""))[:60],
        "output": str(attrs.get("output.value", ""))[:40],
    }
    return json.dumps(small, default=str)[:EXCERPT_CHARS]


def _extras(spans: list[Mapping[str, Any]]) -> span_parts.TraceExtras:
    """Retrieved documents and tool calls of the day's RETRIEVER and TOOL spans."""
    extras = span_parts.TraceExtras()
    seen: set[Any] = set()  # a span in both queries (a root retriever) counts once
    for span in spans:
        kind = openinference.span_kind(span.get("span_kind"))
        context = span.get("context")
        if kind not in span_parts.PART_SPAN_KINDS or not isinstance(context, Mapping):
            continue
        if context.get("span_id") in seen:
            continue
        seen.add(context.get("span_id"))
        try:
            extras.add(
                kind, context.get("trace_id"), span.get("start_time"), span.get("attributes")
            )
        except Exception:  # a parser bug must cost the part, not the day
            continue
    return extras


@dataclass
class ClassifiedDay:
    traces: list[TraceRow]
    rejects: list[tuple[str, str, str]]  # (location, reason, excerpt)
    skips: Counter


def classify_spans(
    spans: list[Mapping[str, Any]],
    cfg: PhoenixConfig,
    part_spans: Sequence[Mapping[str, Any]] = (),
) -> ClassifiedDay:
    """Classify a day's spans; a trace with several selected spans gets one row per span.

    ``part_spans`` (the day's RETRIEVER and TOOL spans) give the traces their retrieved
    documents and tool calls, as do such spans among ``spans``.

    The row's trace_id is the OTel trace id when the trace has one selected span that day
    (the usual case with root spans), else ``<trace id>:<span id>`` for each of them, so
    raw_traces' (day, trace_id) key holds and every LLM call is judged.
    """
    traces: list[TraceRow] = []
    rejects: list[tuple[str, str, str]] = []
    skips: Counter = Counter()
    seen_spans: set[str] = set()
    base = f"{cfg.safe_url()}{project_path(cfg.project)}/spans"
    rules = cfg.trace_rules()
    extras = _extras([*spans, *part_spans])
    for span in spans:
        try:
            outcome = _classify(span, cfg, rules, extras)
        except Exception as exc:  # a parser bug must cost one span, not the day
            outcome = Outcome("reject", f"unreadable span ({type(exc).__name__}: {exc})")
        context = span.get("context") if isinstance(span.get("context"), Mapping) else {}
        span_id = str(context.get("span_id") or "")
        location = f"{base}?span_id={span_id}" if span_id else base
        if outcome.kind == "skip":
            skips[outcome.reason] += 1
        elif outcome.kind == "reject":
            rejects.append((location, outcome.reason, _excerpt(span)))
        elif outcome.row is not None:
            if outcome.row.span_id in seen_spans:
                rejects.append((location, "duplicate span id", _excerpt(span)))
                continue
            seen_spans.add(outcome.row.span_id)
            traces.append(outcome.row)
    per_trace = Counter(t.trace_id for t in traces)
    for t in traces:
        if per_trace[t.trace_id] > 1:
            t.trace_id = f"{t.trace_id}:{t.span_id}"
    return ClassifiedDay(traces, rejects, skips)
