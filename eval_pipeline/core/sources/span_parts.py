"""A trace's parts (``core/sources/trace_parts.py``) from OpenInference spans: pure, shared
by the Phoenix source and the OTLP receiver.

- The selected span's own attributes give the **conversation** (``llm.input_messages``:
  every turn the model saw, kept only when there is more than one user turn or an assistant
  or tool turn; a single question with its system prompt is what ``user_query`` already
  says) and the **tool calls** in it: each assistant message's
  ``message.tool_calls.M.tool_call.function.name`` / ``.arguments`` / ``.id``, with the
  result of the ``tool`` message that answers it (``message.tool_call_id``, else the next
  unanswered call), and the calls of ``llm.output_messages`` (no result yet).
- Other spans of the same OpenTelemetry trace: a RETRIEVER span's
  ``retrieval.documents.N.document.content`` / ``.id`` / ``.score`` become the trace's
  retrieved documents (every retriever of the trace, in start order), and a TOOL span
  (``tool.name``, ``input.value``, ``output.value``) a tool call with its result, used when
  the selected span itself shows none.

What a source sees of the other spans is up to it: the Phoenix source reads the day's
RETRIEVER and TOOL spans; the OTLP receiver sees the spans of one export request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eval_pipeline.core.sources.openinference import flatten_attributes, indexed
from eval_pipeline.core.sources.trace_parts import TraceParts

PART_SPAN_KINDS = ("RETRIEVER", "TOOL")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _decoded(value: Any) -> Any:
    """A JSON text as its value (tool arguments and results usually are JSON), else as is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _message_content(entry: Mapping[str, Any]) -> str:
    content = entry.get("message.content")
    if content is not None and not isinstance(content, list | dict):
        return _text(content) or ""
    texts = [
        _text(part.get("message_content.text")) or ""
        for part in indexed(entry, "message.contents")
        if str(part.get("message_content.type") or "text").lower() == "text"
    ]
    return "\n".join(t for t in texts if t)


def _calls_of(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for call in indexed(entry, "message.tool_calls"):
        name = _text(call.get("tool_call.function.name"))
        if not name or not name.strip():
            continue
        calls.append(
            {
                "id": _text(call.get("tool_call.id")),
                "name": name,
                "arguments": _decoded(call.get("tool_call.function.arguments")),
                "result": None,
            }
        )
    return calls


def own_parts(attributes: Mapping[str, Any]) -> TraceParts:
    """The conversation and tool calls in one span's own attributes."""
    attrs = flatten_attributes(attributes)
    entries = indexed(attrs, "llm.input_messages")
    turns: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for entry in entries:
        role = (_text(entry.get("message.role")) or "").strip() or "unknown"
        turns.append({"role": role, "content": _message_content(entry)})
        if role.lower() == "tool":
            result = _decoded(entry.get("message.content"))
            call_id = _text(entry.get("message.tool_call_id"))
            waiting = [c for c in calls if c["result"] is None]
            match = next((c for c in waiting if call_id and c["id"] == call_id), None)
            if match is None and waiting:
                match = waiting[0]
            if match is not None:
                match["result"] = result if result is not None else ""
        calls.extend(_calls_of(entry))
    for entry in indexed(attrs, "llm.output_messages"):
        calls.extend(_calls_of(entry))
    users = sum(t["role"].lower() in ("user", "human") for t in turns)
    others = any(t["role"].lower() not in ("user", "human", "system", "developer") for t in turns)
    conversation = turns if (users > 1 or others) else None
    tool_calls = [{k: c[k] for k in ("name", "arguments", "result")} for c in calls] or None
    return TraceParts(conversation=conversation, tool_calls=tool_calls)


def retrieved_documents(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A RETRIEVER span's documents, in their order."""
    attrs = flatten_attributes(attributes)
    docs = []
    for entry in indexed(attrs, "retrieval.documents"):
        text = _text(entry.get("document.content"))
        if text is None:
            continue
        score = entry.get("document.score")
        doc_id = entry.get("document.id")
        docs.append(
            {
                "id": None if doc_id is None else _text(doc_id),
                "text": text,
                "score": float(score)
                if isinstance(score, int | float) and not isinstance(score, bool)
                else None,
            }
        )
    return docs


def tool_span_call(attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """A TOOL span as one call: its name, arguments (input) and result (output)."""
    attrs = flatten_attributes(attributes)
    name = _text(attrs.get("tool.name"))
    if not name or not name.strip():
        return None
    return {
        "name": name,
        "arguments": _decoded(attrs.get("input.value")),
        "result": _decoded(attrs.get("output.value")),
    }


@dataclass
class TraceExtras:
    """Documents and tool calls found in the other spans, by OpenTelemetry trace id."""

    documents: dict[str, list[tuple[Any, list[dict[str, Any]]]]] = field(default_factory=dict)
    tool_calls: dict[str, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)

    def add(self, kind: str, trace_id: str, start: Any, attributes: Any) -> None:
        """Take what a RETRIEVER or TOOL span says (other kinds, bad attributes: nothing)."""
        if not trace_id or not isinstance(attributes, Mapping):
            return
        if kind == "RETRIEVER":
            self.documents.setdefault(trace_id, []).append((start, retrieved_documents(attributes)))
        elif kind == "TOOL" and (call := tool_span_call(attributes)) is not None:
            self.tool_calls.setdefault(trace_id, []).append((start, call))

    def parts_for(self, trace_id: str, own: TraceParts) -> TraceParts:
        """The trace's parts: its span's own, with documents and tool calls from the others."""
        context = own.context
        if trace_id in self.documents:
            found = sorted(self.documents[trace_id], key=lambda x: _order(x[0]))
            context = [doc for _, docs in found for doc in docs]
        tool_calls = own.tool_calls
        if tool_calls is None and trace_id in self.tool_calls:
            found_calls = sorted(self.tool_calls[trace_id], key=lambda x: _order(x[0]))
            tool_calls = [call for _, call in found_calls]
        return TraceParts(context=context, conversation=own.conversation, tool_calls=tool_calls)


def _order(start: Any) -> tuple[int, str]:
    # Start times come as epoch nanoseconds (OTLP) or ISO text (Phoenix); None sorts first.
    if isinstance(start, int | float):
        return (1, f"{start:030.0f}")
    return (0 if start is None else 1, str(start or ""))
