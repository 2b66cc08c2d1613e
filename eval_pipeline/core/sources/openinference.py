"""OpenInference spans to traces: a pure parser (no HTTP, no store).

An LLM span that follows the OpenInference semantic conventions carries its chat in
attributes: ``llm.input_messages.N.message.role`` / ``.content`` (or ``.contents.M``
parts for multimodal input), ``llm.output_messages.N...``, and the generic
``input.value`` / ``output.value`` (JSON or text, typed by ``*.mime_type``). This module
turns such an attribute dict, flattened (dot paths, as Phoenix's REST API returns them) or
nested (as an exported file has them), into the fields of one trace, or into the reason it
cannot be one. Every trace source that reads OpenInference spans uses it, so the rules are
the same wherever a span comes from:

- which spans are traces at all (``skip_reason``): a wanted span kind, and only root spans
  unless configured otherwise;
- the user query is the *last* user turn of the input conversation, the answer is the
  assistant output (``last_user_turn``, ``rebuild_conversation``);
- rejects, each with a reason: no user turn, no output, non-text content only, an empty
  user turn, a value larger than ``max_chars``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SPAN_KINDS = (
    "LLM", "CHAIN", "TOOL", "RETRIEVER", "EMBEDDING", "AGENT", "RERANKER", "GUARDRAIL",
    "EVALUATOR", "DECISION", "UNKNOWN",
)  # fmt: skip

# Attributes copied into a trace's metadata when present: (attribute, metadata key).
DETAIL_ATTRS = (
    ("session.id", "session_id"),
    ("llm.token_count.prompt", "prompt_tokens"),
    ("llm.token_count.completion", "completion_tokens"),
    ("llm.provider", "provider"),
    ("tag.tags", "tags"),
)


@dataclass(frozen=True)
class TraceRules:
    """Which spans are traces, where a trace's fields are read from, how large they may be."""

    span_kinds: tuple[str, ...] = ("LLM",)
    root_only: bool = True
    segment_attrs: tuple[str, ...] = ("metadata.segment",)
    model_attrs: tuple[str, ...] = ("llm.model_name",)
    prompt_version_attrs: tuple[str, ...] = (
        "metadata.prompt_version",
        "llm.prompt_template.version",
    )
    user_id_attrs: tuple[str, ...] = ("user.id",)
    max_chars: int = 100_000


def span_kind(value: Any) -> str:
    """The OpenInference span kind, upper case; UNKNOWN when the span has none."""
    return str(value or "UNKNOWN").upper()


def skip_reason(kind: str, parent_id: Any, rules: TraceRules) -> str | None:
    """Why a span is not one the pipeline evaluates (a child or an unwanted kind), or None."""
    if rules.root_only and parent_id:
        return "not a root span"
    if kind not in rules.span_kinds:
        return f"span kind {kind}"
    return None


# --- rebuilding messages from OpenInference attributes -----------------------------------


@dataclass
class Message:
    role: str | None
    text: str | None  # None when the message carries no text at all
    non_text: tuple[str, ...] = ()  # e.g. ("image",), ("tool_call",)


def flatten_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Dot-path keys, as Phoenix's REST API returns them, whatever shape came in.

    Phoenix flattens nested attributes including list indices
    (``llm.input_messages.1.message.content``); lists of scalars stay lists. Nested input
    (e.g. from an exported file) is flattened the same way so one parser handles both.
    """
    # Already flat (the usual case: OTLP and Phoenix's REST API send dot paths): a copy.
    if not any(isinstance(v, Mapping | list) for v in attrs.values()):
        return dict(attrs)
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = value

    walk("", attrs)
    return out


def indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``prefix.N.rest`` keys grouped by N (in numeric order) as {rest: value}."""
    groups: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for key, value in attrs.items():
        if not key.startswith(head):
            continue
        index, _, rest = key[len(head) :].partition(".")
        if index.isdigit() and rest:
            groups.setdefault(int(index), {})[rest] = value
    return [groups[i] for i in sorted(groups)]


def _text_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def _message_from_attrs(entry: Mapping[str, Any]) -> Message:
    role = _text_of(entry.get("message.role"))
    texts: list[str] = []
    non_text: list[str] = []
    content = entry.get("message.content")
    if isinstance(content, list | dict):  # an unflattened content list
        text, kinds = _parts_text(content if isinstance(content, list) else [content])
        if text is not None:
            texts.append(text)
        non_text.extend(kinds)
    elif (text := _text_of(content)) is not None:
        texts.append(text)
    for part in indexed(entry, "message.contents"):
        kind = str(part.get("message_content.type") or "text").lower()
        text = _text_of(part.get("message_content.text"))
        if kind == "text" and text is not None:
            texts.append(text)
        else:
            non_text.append(kind if kind != "text" else "empty text part")
    if any(k.startswith("message.tool_calls.") for k in entry):
        non_text.append("tool_call")
    return Message(role, "\n".join(texts) if texts else None, tuple(non_text))


def _parts_text(parts: list) -> tuple[str | None, list[str]]:
    """Text of an OpenAI-style content list ([{"type": "text", "text": ...}, ...])."""
    texts, kinds = [], []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping):
            kind = str(part.get("type") or "text").lower()
            text = part.get("text")
            if kind in ("text", "input_text", "output_text") and isinstance(text, str):
                texts.append(text)
            else:
                kinds.append(kind)
    return ("\n".join(texts) if texts else None), kinds


def _message_from_json(obj: Mapping[str, Any]) -> Message:
    role = _text_of(obj.get("role"))
    content = obj.get("content")
    non_text: list[str] = []
    if isinstance(content, list):
        text, kinds = _parts_text(content)
        non_text.extend(kinds)
    else:
        text = _text_of(content)
    if obj.get("tool_calls") or obj.get("function_call"):
        non_text.append("tool_call")
    return Message(role, text, tuple(non_text))


_TEXT_KEYS = ("query", "question", "input", "prompt", "text", "content", "message")
_ANSWER_KEYS = ("output", "answer", "response", "text", "content", "completion", "result")


def _json_value(value: Any, mime: Any) -> Any:
    """A JSON value if ``value`` is JSON (by MIME type or by its look), else the text."""
    if not isinstance(value, str):
        return value
    looks_json = value.lstrip()[:1] in ("{", "[", '"')
    if "json" in str(mime or "").lower() or looks_json:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _messages_from_value(value: Any) -> list[Message] | None:
    """Messages from a decoded input.value: a chat request, a message list, or a text."""
    if isinstance(value, str):
        return [Message("user", value)]
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        if any("role" in m for m in value):
            return [_message_from_json(m) for m in value]
        return None
    if isinstance(value, Mapping):
        messages = value.get("messages")
        if isinstance(messages, list) and all(isinstance(m, Mapping) for m in messages):
            return [_message_from_json(m) for m in messages]
        for key in _TEXT_KEYS:
            if isinstance(value.get(key), str):
                return [Message("user", value[key])]
    return None


def _answer_from_value(value: Any) -> Message | None:
    """The answer in a decoded output.value: text, a chat completion, a message, a dict."""
    if isinstance(value, str):
        return Message("assistant", value)
    if isinstance(value, Mapping):
        choices = value.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            message = choices[0].get("message")
            if isinstance(message, Mapping):
                return _message_from_json(message)
            if isinstance(choices[0].get("text"), str):
                return Message("assistant", choices[0]["text"])
        messages = value.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], Mapping):
            return _message_from_json(messages[-1])
        if "role" in value and "content" in value:
            return _message_from_json(value)
        for key in _ANSWER_KEYS:
            if isinstance(value.get(key), str):
                return Message("assistant", value[key])
    if isinstance(value, list) and value and isinstance(value[-1], Mapping):
        return _message_from_json(value[-1])
    return None


@dataclass
class Conversation:
    """What a span says was asked and answered."""

    messages: list[Message]  # the input conversation, oldest first
    answer: Message | None  # None: the span has no output at all
    input_from: str  # "llm.input_messages", "input.value" or "none"
    output_from: str


def rebuild_conversation(attributes: Mapping[str, Any]) -> Conversation:
    """The input messages and the answer of a span, from its OpenInference attributes.

    ``llm.input_messages`` / ``llm.output_messages`` are preferred (they are the chat as the
    model saw it); ``input.value`` / ``output.value`` (JSON or text) are the fallback.
    """
    attrs = flatten_attributes(attributes)
    messages = [_message_from_attrs(e) for e in indexed(attrs, "llm.input_messages")]
    input_from = "llm.input_messages" if messages else "none"
    if not messages and attrs.get("input.value") is not None:
        decoded = _json_value(attrs["input.value"], attrs.get("input.mime_type"))
        messages = _messages_from_value(decoded) or []
        input_from = "input.value"
    outputs = [_message_from_attrs(e) for e in indexed(attrs, "llm.output_messages")]
    outputs = [m for m in outputs if (m.role or "assistant").lower() in ("assistant", "model")]
    answer: Message | None = None
    output_from = "none"
    if outputs:
        texts = [m.text for m in outputs if m.text is not None]
        kinds = tuple(k for m in outputs for k in m.non_text)
        answer = Message("assistant", "\n".join(texts) if texts else None, kinds)
        output_from = "llm.output_messages"
    if (answer is None or answer.text is None) and attrs.get("output.value") is not None:
        decoded = _json_value(attrs["output.value"], attrs.get("output.mime_type"))
        from_value = _answer_from_value(decoded)
        if from_value is not None and (answer is None or from_value.text is not None):
            answer, output_from = from_value, "output.value"
    return Conversation(messages, answer, input_from, output_from)


_USER_ROLES = ("user", "human")


def last_user_turn(messages: list[Message]) -> tuple[Message | None, int]:
    """The conversation's last user message and how many user turns there are in all.

    A single message without a role (a plain-text input) counts as the user's.
    """
    users = [m for m in messages if (m.role or "").lower() in _USER_ROLES]
    if not users and len(messages) == 1 and messages[0].role is None:
        users = messages
    return (users[-1] if users else None), len(users)


# --- attributes to a trace --------------------------------------------------------------


@dataclass
class TraceFields:
    """What a span's attributes give a trace; the caller adds the span's own identity."""

    user_query: str
    assistant_response: str
    segment: str | None
    model: str | None
    prompt_version: str | None
    user_id: str | None
    conversation: dict[str, Any]  # user_turns, input_messages, input_from, output_from
    details: dict[str, Any]  # DETAIL_ATTRS present, and the metadata.* attributes


@dataclass(frozen=True)
class Reject:
    reason: str


def _first_attr(attrs: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        text = str(value).strip()
        if text:
            return text
    return None


def parse_attributes(raw_attrs: Any, rules: TraceRules) -> TraceFields | Reject:
    """The trace in a span's OpenInference attributes, or why there is none.

    Untrusted input: anything that is not a usable chat turn and answer is a ``Reject``
    with a reason, never an exception.
    """
    if not isinstance(raw_attrs, Mapping):
        return Reject("malformed span (attributes is not an object)")
    attrs = flatten_attributes(raw_attrs)
    conv = rebuild_conversation(attrs)
    query_msg, user_turns = last_user_turn(conv.messages)
    if query_msg is None:
        what = "no input" if not conv.messages else "no user message in the input"
        return Reject(f"no user query ({what})")
    if query_msg.text is None:
        kinds = ", ".join(sorted(set(query_msg.non_text))) or "empty content"
        return Reject(f"non-text content (user turn has {kinds})")
    if conv.answer is None:
        return Reject("no output (span has neither output messages nor output.value)")
    if conv.answer.text is None:
        kinds = ", ".join(sorted(set(conv.answer.non_text))) or "empty content"
        return Reject(f"non-text content (output has {kinds})")
    for label, text in (("user query", query_msg.text), ("answer", conv.answer.text)):
        if len(text) > rules.max_chars:
            return Reject(f"value too large ({label} {len(text)} chars > {rules.max_chars})")
    if not query_msg.text.strip():
        return Reject("no user query (the last user turn is empty)")
    details = {name: attrs[key] for key, name in DETAIL_ATTRS if attrs.get(key) is not None}
    meta_attrs = {k[len("metadata.") :]: v for k, v in attrs.items() if k.startswith("metadata.")}
    if meta_attrs:
        details["metadata"] = meta_attrs
    return TraceFields(
        user_query=query_msg.text,
        assistant_response=conv.answer.text,
        segment=_first_attr(attrs, rules.segment_attrs),
        model=_first_attr(attrs, rules.model_attrs),
        prompt_version=_first_attr(attrs, rules.prompt_version_attrs),
        user_id=_first_attr(attrs, rules.user_id_attrs),
        conversation={
            "user_turns": user_turns,
            "input_messages": len(conv.messages),
            "input_from": conv.input_from,
            "output_from": conv.output_from,
        },
        details=details,
    )
