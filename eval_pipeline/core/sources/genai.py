"""OpenTelemetry GenAI semantic conventions (``gen_ai.*``) read as OpenInference.

The OpenInference parser (``core.sources.openinference``) is the one place that turns span
attributes into a trace. A span written with the GenAI conventions instead (the official
``opentelemetry-instrumentation-openai-v2`` and others) is first *translated* here into
the OpenInference attribute names it means, so the same parser, with the same rejects,
reads both. Nothing is overwritten: an OpenInference attribute already on the span wins.

What is translated:

- the span kind: a GenAI inference operation (``gen_ai.operation.name`` chat,
  text_completion, generate_content; or a ``gen_ai.request.model`` with no operation) is
  an LLM span;
- the model (``gen_ai.response.model``, else ``gen_ai.request.model``) to
  ``llm.model_name``; ``gen_ai.usage.input_tokens`` / ``output_tokens`` (and the older
  ``prompt_tokens`` / ``completion_tokens``) to ``llm.token_count.*``; the provider;
- messages, from whichever of the conventions' versions the span uses:
  ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON, parts) and
  ``gen_ai.system_instructions``; span events ``gen_ai.system.message``,
  ``gen_ai.user.message``, ``gen_ai.assistant.message``, ``gen_ai.tool.message`` and
  ``gen_ai.choice``; the indexed ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*``
  attributes; the ``gen_ai.content.prompt`` / ``gen_ai.content.completion`` events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

INFERENCE_OPERATIONS = ("chat", "text_completion", "generate_content", "completion")

# (GenAI attribute, OpenInference attribute), first present wins for each target.
_SCALARS = (
    ("gen_ai.response.model", "llm.model_name"),
    ("gen_ai.request.model", "llm.model_name"),
    ("gen_ai.usage.input_tokens", "llm.token_count.prompt"),
    ("gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    ("gen_ai.usage.output_tokens", "llm.token_count.completion"),
    ("gen_ai.usage.completion_tokens", "llm.token_count.completion"),
    ("gen_ai.provider.name", "llm.provider"),
    ("gen_ai.system", "llm.provider"),
    ("gen_ai.conversation.id", "session.id"),
)

_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def is_genai(attrs: Mapping[str, Any]) -> bool:
    return any(k[:7] == "gen_ai." for k in attrs)


def span_kind(attrs: Mapping[str, Any]) -> str | None:
    """LLM for a GenAI inference span, None when the GenAI attributes say nothing."""
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return "LLM" if str(operation).lower() in INFERENCE_OPERATIONS else None
    if attrs.get("gen_ai.request.model") is not None:
        return "LLM"
    return None


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parts_text(parts: Any) -> tuple[str | None, bool]:
    """The text of a GenAI message's parts, and whether it had a tool call."""
    if isinstance(parts, str):
        return parts, False
    texts, tool_call = [], False
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Mapping):
            continue
        kind = str(part.get("type") or "text").lower()
        text = part.get("content", part.get("text"))
        if kind == "text" and isinstance(text, str):
            texts.append(text)
        elif kind == "tool_call":
            tool_call = True
    return ("\n".join(texts) if texts else None), tool_call


def _tool_calls(msg: Mapping[str, Any]) -> list[tuple[Any, Any, Any]]:
    """(id, name, arguments) of a message's tool calls: ``tool_call`` parts (the newest
    conventions) or an OpenAI-style ``tool_calls`` list (event bodies)."""
    calls = []
    parts = msg.get("parts")
    for part in parts if isinstance(parts, list) else []:
        if isinstance(part, Mapping) and str(part.get("type") or "").lower() == "tool_call":
            calls.append((part.get("id"), part.get("name"), part.get("arguments")))
    listed = msg.get("tool_calls")
    for call in listed if isinstance(listed, list) else []:
        if isinstance(call, Mapping):
            fn = call.get("function") if isinstance(call.get("function"), Mapping) else call
            calls.append((call.get("id"), fn.get("name"), fn.get("arguments")))
    return calls


def _tool_response(msg: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """(call id, result) of a tool message: a ``tool_call_response`` part, or an event body's
    ``id`` and ``content``."""
    parts = msg.get("parts")
    for part in parts if isinstance(parts, list) else []:
        if isinstance(part, Mapping) and str(part.get("type") or "") == "tool_call_response":
            return part.get("id"), part.get("response")
    if str(msg.get("role") or "") == "tool" and msg.get("id") is not None:
        return msg.get("id"), None
    return None


def _put_message(out: dict[str, Any], prefix: str, i: int, msg: Mapping[str, Any]) -> None:
    """One message (role, text, tool calls, tool result) as OpenInference indexed attributes."""
    head = f"{prefix}.{i}.message"
    out[f"{head}.role"] = str(msg.get("role") or "")
    # The newest conventions carry ``parts``; event bodies and older shapes ``content``.
    content = msg["parts"] if "parts" in msg else msg.get("content")
    text, tool_call = (None, False) if content is None else _parts_text(content)
    response = _tool_response(msg)
    if response is not None:
        call_id, result = response
        if call_id is not None:
            out[f"{head}.tool_call_id"] = str(call_id)
        if text is None and result is not None:
            text = result if isinstance(result, str) else json.dumps(result)
    if text is not None:
        out[f"{head}.content"] = text
    calls = _tool_calls(msg)
    if not calls and (tool_call or msg.get("tool_calls")):
        calls = [(None, None, None)]  # a tool call the span does not detail
    for j, (call_id, name, arguments) in enumerate(calls):
        base = f"{head}.tool_calls.{j}.tool_call"
        out[f"{base}.id"] = "" if call_id is None else str(call_id)
        if name:
            out[f"{base}.function.name"] = str(name)
        if arguments is not None:
            out[f"{base}.function.arguments"] = (
                arguments if isinstance(arguments, str) else json.dumps(arguments)
            )


def _messages_from_attr(value: Any) -> list[Mapping[str, Any]]:
    decoded = _loads(value)
    if isinstance(decoded, list):
        return [m for m in decoded if isinstance(m, Mapping)]
    return []


def _system_message(value: Any) -> Mapping[str, Any] | None:
    decoded = _loads(value)
    if isinstance(decoded, str):
        return {"role": "system", "content": decoded}
    if isinstance(decoded, list):
        return {"role": "system", "parts": decoded}
    return None


def _event_messages(
    events: Iterable[tuple[str, Mapping[str, Any]]],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    inputs: list[Mapping[str, Any]] = []
    outputs: list[Mapping[str, Any]] = []
    for name, attrs in events:
        if name in _EVENT_ROLES:
            body = _loads(attrs.get("content", attrs.get("body")))
            msg = dict(body) if isinstance(body, Mapping) else {"content": body}
            msg.setdefault("role", _EVENT_ROLES[name])
            if attrs.get("gen_ai.tool.calls") or attrs.get("tool_calls"):
                msg["tool_calls"] = True
            inputs.append(msg)
        elif name == "gen_ai.choice":
            body = _loads(attrs.get("message", attrs.get("body")))
            msg = dict(body) if isinstance(body, Mapping) else {"content": body}
            msg.setdefault("role", "assistant")
            outputs.append(msg)
        elif name == "gen_ai.content.prompt":
            inputs.extend(_messages_from_attr(attrs.get("gen_ai.prompt")))
        elif name == "gen_ai.content.completion":
            outputs.extend(_messages_from_attr(attrs.get("gen_ai.completion")))
    return inputs, outputs


def _indexed_legacy(attrs: Mapping[str, Any], prefix: str) -> list[Mapping[str, Any]]:
    groups: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for key, value in attrs.items():
        if key.startswith(head):
            index, _, rest = key[len(head) :].partition(".")
            if index.isdigit() and rest in ("role", "content"):
                groups.setdefault(int(index), {})[rest] = value
    return [groups[i] for i in sorted(groups)]


def as_openinference(
    attrs: Mapping[str, Any], events: Iterable[tuple[str, Mapping[str, Any]]] = ()
) -> dict[str, Any]:
    """The span's attributes with the OpenInference names its GenAI attributes mean added.

    ``attrs`` is flat (dot paths); ``events`` are (name, flat attributes) pairs. A span
    without GenAI attributes or events comes back unchanged (as a new dict).
    """
    out = dict(attrs)
    events = list(events)
    if not is_genai(attrs) and not any(n.startswith("gen_ai.") for n, _ in events):
        return out
    for source, target in _SCALARS:
        if target not in out and attrs.get(source) is not None:
            out[target] = attrs[source]
    if "openinference.span.kind" not in out and (kind := span_kind(attrs)) is not None:
        out["openinference.span.kind"] = kind
    has_input = any(k.startswith("llm.input_messages.") for k in out)
    has_output = any(k.startswith("llm.output_messages.") for k in out)
    inputs = _messages_from_attr(attrs.get("gen_ai.input.messages"))
    outputs = _messages_from_attr(attrs.get("gen_ai.output.messages"))
    if inputs and (system := _system_message(attrs.get("gen_ai.system_instructions"))):
        inputs = [system, *inputs]
    if not inputs or not outputs:
        ev_in, ev_out = _event_messages(events)
        inputs = inputs or ev_in
        outputs = outputs or ev_out
    inputs = inputs or _indexed_legacy(attrs, "gen_ai.prompt")
    outputs = outputs or _indexed_legacy(attrs, "gen_ai.completion")
    if not has_input:
        for i, msg in enumerate(inputs):
            _put_message(out, "llm.input_messages", i, msg)
    if not has_output:
        for i, msg in enumerate(outputs):
            _put_message(out, "llm.output_messages", i, msg)
    return out
