"""What the judge sees of a trace besides its last question and answer: the conversation
before it, the tool calls the assistant made and their results, the retrieved documents.

Every piece of untrusted text (a turn, a tool's name, arguments and result, a document's id
and text) is fenced on its own with the rubric's ``fence`` (``core/judge/rubric.py``: the
per-call nonce, runs of ``<``/``>`` spaced out), so nothing inside can close a fence or pass
for the prompt. Labels and every line outside the fences are written here from fixed words
and numbers only: a role the app sent becomes one of a fixed set of labels.

Each part has a size limit (``ViewLimits``). A text over its limit is cut and followed,
outside its fence, by ``[truncated: ...]``; items over the count limit are left out with a
``[truncated: N more ...]`` line: the judge always sees that it saw less. The conversation
keeps its newest turns (the end is what the answer answers); documents and tool calls keep
their first ones (retrieval rank, call order).

The parts come as stored in ``raw_traces`` (JSON text) or as lists (see
``core/sources/trace_parts.py`` for the shapes); a part that is absent (None) renders as
nothing, an empty list as a line saying there was none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eval_pipeline.core.judge.rubric import fence

TRUNCATED = "[truncated"
_NAME_CHARS = 200  # a tool name or a document id
_ROLES = {
    "system": "SYSTEM",
    "developer": "SYSTEM",
    "user": "USER",
    "human": "USER",
    "assistant": "ASSISTANT",
    "model": "ASSISTANT",
    "ai": "ASSISTANT",
    "tool": "TOOL",
    "function": "TOOL",
}


@dataclass(frozen=True)
class ViewLimits:
    """Characters per text and items per part shown to the judge."""

    turn_chars: int = 2_000
    turns: int = 12  # earlier turns shown, newest kept
    document_chars: int = 3_000
    documents: int = 8
    tool_chars: int = 1_500  # per arguments and per result
    tool_calls: int = 12

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ViewLimits.{name} must be a positive integer, got {value!r}")


def load_part(value: Any) -> list[Any] | None:
    """A stored part (JSON text, as DuckDB returns it) or a list, as a list; None stays None.

    Anything else (text that is not a JSON list) is shown to no one: None.
    """
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return None
        return decoded if isinstance(decoded, list) else None
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _cut(text: str, limit: int) -> tuple[str, str]:
    """(text cut to ``limit``, the marker line after its fence or "")."""
    if len(text) <= limit:
        return text, ""
    return text[:limit], f"\n{TRUNCATED}: the first {limit} of {len(text)} characters shown]"


def _fenced(label: str, text: str, limit: int, nonce: str) -> str:
    shown, marker = _cut(text, limit)
    return fence(label, shown, nonce) + marker


def _left_out(count: int, what: str, where: str) -> str:
    return f"{TRUNCATED}: {count} {what} not shown ({where})]" if count > 0 else ""


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def render_conversation(
    conversation: Any, query: str, *, nonce: str, limits: ViewLimits = ViewLimits()
) -> str:
    """The turns before the last question, oldest first, each fenced; "" when there are none.

    The last user turn is left out when it is the trace's query (that one is shown in focus,
    with the answer, by the rubric).
    """
    turns = [t for t in load_part(conversation) or [] if isinstance(t, Mapping)]
    last_is_query = (
        turns
        and str(turns[-1].get("role", "")).lower() in ("user", "human")
        and _same_text(_as_text(turns[-1].get("content")), query)
    )
    if last_is_query:
        turns = turns[:-1]
    if not turns:
        return ""
    hidden = max(0, len(turns) - limits.turns)
    shown = turns[hidden:]
    lines = [
        "The conversation before the last question (oldest first). Judge the last answer in "
        "its light; earlier turns are context, not the thing judged."
    ]
    if hidden:
        lines.append(_left_out(hidden, "earlier turns", "the oldest"))
    for i, turn in enumerate(shown, start=hidden + 1):
        role = _ROLES.get(str(turn.get("role", "")).strip().lower(), "OTHER")
        lines.append(
            _fenced(f"TURN {i} {role}", _as_text(turn.get("content")), limits.turn_chars, nonce)
        )
    return "\n\n".join(lines)


def render_tool_calls(tool_calls: Any, *, nonce: str, limits: ViewLimits = ViewLimits()) -> str:
    """The assistant's tool calls in call order, each name, arguments and result fenced."""
    calls = load_part(tool_calls)
    if calls is None:
        return ""
    calls = [c for c in calls if isinstance(c, Mapping)]
    if not calls:
        return "The assistant called no tools for this answer."
    lines = ["The tools the assistant called for this answer, in order, with their results."]
    for i, call in enumerate(calls[: limits.tool_calls], start=1):
        lines.append(f"Tool call {i}:")
        lines.append(_fenced(f"TOOL {i} NAME", _as_text(call.get("name")), _NAME_CHARS, nonce))
        lines.append(
            _fenced(
                f"TOOL {i} ARGUMENTS", _as_text(call.get("arguments")), limits.tool_chars, nonce
            )
        )
        if call.get("result") is None:
            lines.append(f"(no result recorded for tool call {i})")
        else:
            lines.append(
                _fenced(f"TOOL {i} RESULT", _as_text(call["result"]), limits.tool_chars, nonce)
            )
    if len(calls) > limits.tool_calls:
        lines.append(_left_out(len(calls) - limits.tool_calls, "more tool calls", "the last"))
    return "\n\n".join(lines)


def render_documents(context: Any, *, nonce: str, limits: ViewLimits = ViewLimits()) -> str:
    """The retrieved documents in retrieval order, each fenced with its id and score."""
    docs = load_part(context)
    if docs is None:
        return ""
    docs = [d for d in docs if isinstance(d, Mapping) and _as_text(d.get("text")).strip()]
    if not docs:
        return "No documents were retrieved for this question (the context is empty)."
    lines = ["The documents retrieved for this question, in retrieval order."]
    for i, doc in enumerate(docs[: limits.documents], start=1):
        score = doc.get("score")
        if isinstance(score, int | float) and not isinstance(score, bool):
            lines.append(f"Document {i} (retrieval score {float(score):.3g}):")
        else:
            lines.append(f"Document {i}:")
        if doc.get("id") is not None:
            lines.append(_fenced(f"DOCUMENT {i} ID", _as_text(doc["id"]), _NAME_CHARS, nonce))
        lines.append(
            _fenced(f"DOCUMENT {i}", _as_text(doc.get("text")), limits.document_chars, nonce)
        )
    if len(docs) > limits.documents:
        lines.append(_left_out(len(docs) - limits.documents, "more documents", "the lowest ranked"))
    return "\n\n".join(lines)


def render_parts(
    query: str,
    *,
    context: Any = None,
    conversation: Any = None,
    tool_calls: Any = None,
    nonce: str,
    limits: ViewLimits = ViewLimits(),
) -> dict[str, str]:
    """Every part rendered, by name (``conversation``, ``tool_calls``, ``context``), for a
    rubric's placeholders; an absent part is ""."""
    return {
        "conversation": render_conversation(conversation, query, nonce=nonce, limits=limits),
        "tool_calls": render_tool_calls(tool_calls, nonce=nonce, limits=limits),
        "context": render_documents(context, nonce=nonce, limits=limits),
    }


def render_trace(
    query: str,
    response: str,
    *,
    context: Any = None,
    conversation: Any = None,
    tool_calls: Any = None,
    nonce: str,
    limits: ViewLimits = ViewLimits(),
    focus_chars: int = 8_000,
) -> str:
    """The whole trace as one block: conversation, then the last turn in focus (question,
    tool calls, answer), then the retrieved documents. Parts that are absent are left out."""
    parts = render_parts(
        query,
        context=context,
        conversation=conversation,
        tool_calls=tool_calls,
        nonce=nonce,
        limits=limits,
    )
    blocks = [parts["conversation"]] if parts["conversation"] else []
    blocks.append("The last turn, the one to judge:")
    blocks.append(_fenced("USER QUESTION", query, focus_chars, nonce))
    if parts["tool_calls"]:
        blocks.append(parts["tool_calls"])
    blocks.append(_fenced("ASSISTANT ANSWER", response, focus_chars, nonce))
    if parts["context"]:
        blocks.append(parts["context"])
    return "\n\n".join(blocks)


def part_sizes(
    *, context: Any = None, conversation: Any = None, tool_calls: Any = None
) -> dict[str, int]:
    """Items per part (absent: 0), e.g. for a judge's accounting of what it was shown."""
    return {
        name: len(load_part(value) or [])
        for name, value in (
            ("context", context),
            ("conversation", conversation),
            ("tool_calls", tool_calls),
        )
    }


def has_parts(*, context: Any = None, conversation: Any = None, tool_calls: Any = None) -> bool:
    """Whether the trace carries any part at all (an empty list counts: it says something)."""
    return any(load_part(v) is not None for v in (context, conversation, tool_calls))


def parts_digest(*, context: Any = None, conversation: Any = None, tool_calls: Any = None) -> str:
    """A short stable hash of the parts as the judge would see them, for a cache key: two
    traces with the same question and answer but other documents are judged apart. An
    absent part and an empty one hash differently; the JSON text's spacing does not matter.
    """
    loaded = [load_part(v) for v in (context, conversation, tool_calls)]
    text = json.dumps(loaded, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
