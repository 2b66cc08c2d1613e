"""A trace's parts besides its last question and answer: retrieved context, the conversation
before the answer, the agent's tool calls. One contract for every source.

Stored in ``raw_traces`` (``context``, ``conversation``, ``tool_calls``, JSON) in one shape:

- ``context``: ``[{"id": str | null, "text": str, "score": float | null}]`` in retrieval
  order. The inbox takes either ``context`` (one string: one document without id; a blank
  string: no documents) or ``retrieved_documents`` (a list of objects with ``text`` or
  ``content``, and optional ``id`` and ``score``), not both.
- ``conversation``: ``[{"role": str, "content": str}]``, oldest first: the turns the model
  saw before it answered (they may end with the user's last turn, the trace's query).
- ``tool_calls``: ``[{"name": str, "arguments": any JSON, "result": any JSON}]`` in call
  order; ``result`` is null when unknown.

NULL means the source did not say; an empty list means it said there was nothing.

Limits: at most ``MAX_DOCUMENTS`` documents, ``MAX_TURNS`` turns, ``MAX_TOOL_CALLS`` calls,
and every text (a document, a turn, a call's arguments or result) at most ``max_chars`` (the
inbox's cap on a query or an answer). The inbox *rejects* a line over a limit or with a
malformed part, with a reason (the SQL below, spliced into the line classifier of
``inbox_sql``). Span sources cannot fix what an app sent, so they *cut* to the limits
(``fit``) and name what was cut. ``from_record`` is the same check in Python, for records
that never pass through the inbox SQL; the tests hold the two to the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

MAX_DOCUMENTS = 50
MAX_TURNS = 100
MAX_TOOL_CALLS = 50
PART_COLUMNS = ("context", "conversation", "tool_calls")
# The inbox fields read for the parts, in this order (the classifier's json_extract paths).
INBOX_PATHS = ("$.context", "$.retrieved_documents", "$.conversation", "$.tool_calls")


@dataclass(frozen=True)
class TraceParts:
    context: list[dict[str, Any]] | None = None
    conversation: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def columns(self) -> dict[str, str | None]:
        """The three store columns as JSON text (None stays NULL)."""
        return {
            name: None if value is None else json.dumps(value, ensure_ascii=False)
            for name, value in (
                ("context", self.context),
                ("conversation", self.conversation),
                ("tool_calls", self.tool_calls),
            )
        }

    def record_fields(self) -> dict[str, Any]:
        """The parts as inbox record fields (what a span source writes), absent when None."""
        out: dict[str, Any] = {}
        if self.context is not None:
            out["retrieved_documents"] = self.context
        if self.conversation is not None:
            out["conversation"] = self.conversation
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        return out


# --- Python: validate a record's parts ---------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_size(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    # Compact, as DuckDB writes JSON: the SQL check measures the same text.
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _documents(record: Mapping[str, Any], max_chars: int) -> list[dict[str, Any]] | str | None:
    context, docs = record.get("context"), record.get("retrieved_documents")
    if context is not None and docs is not None:
        return "ambiguous context: give context or retrieved_documents, not both"
    if context is not None:
        if not isinstance(context, str):
            return "wrong type: context must be a string"
        if len(context) > max_chars:
            return f"value too large (context {len(context)} chars > {max_chars})"
        return [{"id": None, "text": context, "score": None}] if context.strip() else []
    if docs is None:
        return None
    if not isinstance(docs, list):
        return "wrong type: retrieved_documents must be a list"
    if len(docs) > MAX_DOCUMENTS:
        return f"value too large (retrieved_documents {len(docs)} items > {MAX_DOCUMENTS})"
    out = []
    for i, doc in enumerate(docs, 1):
        text = doc.get("text") if isinstance(doc, Mapping) else None
        if isinstance(doc, Mapping) and text is None:
            text = doc.get("content")
        if (
            not isinstance(doc, Mapping)
            or not isinstance(text, str)
            or not (doc.get("id") is None or isinstance(doc["id"], str) or _is_int(doc["id"]))
            or not (doc.get("score") is None or _is_number(doc["score"]))
        ):
            return f"bad retrieved_documents: item {i} {_DOC_SHAPE}"
        if len(text) > max_chars:
            return f"value too large (retrieved_documents item {i} {len(text)} chars > {max_chars})"
        doc_id = doc.get("id")
        score = doc.get("score")
        out.append(
            {
                "id": None if doc_id is None else str(doc_id),
                "text": text,
                "score": None if score is None else float(score),
            }
        )
    return out


_DOC_SHAPE = (
    "must be an object with a text (or content) string, an optional id (string or "
    "integer) and an optional numeric score"
)
_TURN_SHAPE = "must be an object with a non-empty role string and a content string"
_CALL_SHAPE = "must be an object with a non-empty name string (arguments and result optional)"


def _turns(value: Any, max_chars: int) -> list[dict[str, Any]] | str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        return "wrong type: conversation must be a list"
    if len(value) > MAX_TURNS:
        return f"value too large (conversation {len(value)} items > {MAX_TURNS})"
    out = []
    for i, turn in enumerate(value, 1):
        if (
            not isinstance(turn, Mapping)
            or not isinstance(turn.get("role"), str)
            or not turn["role"].strip()
            or not isinstance(turn.get("content"), str)
        ):
            return f"bad conversation: item {i} {_TURN_SHAPE}"
        if len(turn["content"]) > max_chars:
            return (
                f"value too large (conversation item {i} {len(turn['content'])} chars "
                f"> {max_chars})"
            )
        out.append({"role": turn["role"], "content": turn["content"]})
    return out


def _calls(value: Any, max_chars: int) -> list[dict[str, Any]] | str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        return "wrong type: tool_calls must be a list"
    if len(value) > MAX_TOOL_CALLS:
        return f"value too large (tool_calls {len(value)} items > {MAX_TOOL_CALLS})"
    out = []
    for i, call in enumerate(value, 1):
        if (
            not isinstance(call, Mapping)
            or not isinstance(call.get("name"), str)
            or not call["name"].strip()
        ):
            return f"bad tool_calls: item {i} {_CALL_SHAPE}"
        for key in ("arguments", "result"):
            if (size := _text_size(call.get(key))) > max_chars:
                return f"value too large (tool_calls item {i} {key} {size} chars > {max_chars})"
        out.append(
            {"name": call["name"], "arguments": call.get("arguments"), "result": call.get("result")}
        )
    return out


def from_record(record: Mapping[str, Any], max_chars: int) -> TraceParts | str:
    """The parts of one inbox-format record, or the reason it is rejected."""
    context = _documents(record, max_chars)
    if isinstance(context, str):
        return context
    conversation = _turns(record.get("conversation"), max_chars)
    if isinstance(conversation, str):
        return conversation
    tool_calls = _calls(record.get("tool_calls"), max_chars)
    if isinstance(tool_calls, str):
        return tool_calls
    return TraceParts(context, conversation, tool_calls)


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars]


def _cut_json(value: Any, max_chars: int) -> Any:
    """A value over the cap becomes its JSON text, cut (a span's part is kept, not lost)."""
    if _text_size(value) <= max_chars:
        return value
    return _cut(value if isinstance(value, str) else json.dumps(value), max_chars)


def fit(parts: TraceParts, max_chars: int) -> tuple[TraceParts, list[str]]:
    """Parts cut to the limits, and the names of those that were cut (for span sources)."""
    cut: list[str] = []
    context, conversation, tool_calls = parts.context, parts.conversation, parts.tool_calls
    if context is not None:
        kept = [{**d, "text": _cut(d["text"], max_chars)} for d in context[:MAX_DOCUMENTS]]
        if len(context) > MAX_DOCUMENTS or kept != context[:MAX_DOCUMENTS]:
            cut.append("context")
        context = kept
    if conversation is not None:
        # The newest turns matter most to the judge: keep the end of a long conversation.
        tail = conversation[-MAX_TURNS:]
        kept = [{**t, "content": _cut(t["content"], max_chars)} for t in tail]
        if len(conversation) > MAX_TURNS or kept != tail:
            cut.append("conversation")
        conversation = kept
    if tool_calls is not None:
        head = tool_calls[:MAX_TOOL_CALLS]
        kept = [
            {
                **c,
                "arguments": _cut_json(c.get("arguments"), max_chars),
                "result": _cut_json(c.get("result"), max_chars),
            }
            for c in head
        ]
        if len(tool_calls) > MAX_TOOL_CALLS or kept != head:
            cut.append("tool_calls")
        tool_calls = kept
    return replace(parts, context=context, conversation=conversation, tool_calls=tool_calls), cut


# --- SQL: the same checks in the inbox's line classifier ----------------------------------


def _items(x: str) -> str:
    return f"json_extract({x}, '$[*]')"


def _first_bad(x: str, ok: str) -> str:
    """1-based index of the first element of JSON array ``x`` for which ``ok(e)`` fails."""
    return f"list_position(list_transform({_items(x)}, lambda e: coalesce({ok}, false)), false)"


def _max_len(x: str, text: str) -> str:
    return f"list_max(list_transform({_items(x)}, lambda e: length(coalesce({text}, ''))))"


def _over(x: str, text: str) -> str:
    """Index of the first element whose text is over $max_chars."""
    return (
        f"list_position(list_transform({_items(x)}, "
        f"lambda e: length(coalesce({text}, '')) > $max_chars), true)"
    )


_DOC_TEXT = "coalesce(e ->> '$.text', e ->> '$.content')"


def _typed(paths: list[str], check: str) -> str:
    """``check`` over ``t``, the JSON types at ``paths`` of element ``e``: one parse of the
    element for all of them (the one-element list binds ``t``)."""
    listed = ", ".join(f"'{p}'" for p in paths)
    return f"list_transform([json_type(e, [{listed}])], lambda t: {check})[1]"


# An element that is not an object has no types at these paths, so it fails every check.
_DOC_OK = _typed(
    ["$.text", "$.content", "$.id", "$.score"],
    "(t[1] = 'VARCHAR' OR (coalesce(t[1], 'NULL') = 'NULL' AND t[2] = 'VARCHAR'))"
    " AND coalesce(t[3], 'NULL') IN ('NULL', 'VARCHAR', 'BIGINT', 'UBIGINT')"
    " AND coalesce(t[4], 'NULL') IN ('NULL', 'BIGINT', 'UBIGINT', 'DOUBLE')",
)
_TURN_OK = _typed(
    ["$.role", "$.content"],
    "t[1] = 'VARCHAR' AND t[2] = 'VARCHAR' AND trim(e ->> '$.role') <> ''",
)
_CALL_OK = "json_type(e, '$.name') = 'VARCHAR' AND trim(e ->> '$.name') <> ''"


def _list_checks(x: str, field: str, limit: int, ok: str, shape: str, texts: list[str]) -> str:
    """WHEN lines for a list field. The elements are parsed once: the one-element list
    binds them to ``items`` for every check."""
    checks = [
        f"WHEN len(items) > {limit} THEN 'value too large ({field} ' || len(items) "
        f"|| ' items > {limit})'",
        f"WHEN {_first_bad('items', ok)} > 0 THEN 'bad {field}: item ' || "
        f"{_first_bad('items', ok)} || ' {shape}'",
    ]
    for label, text in texts:
        checks.append(
            f"WHEN {_max_len('items', text)} > $max_chars THEN 'value too large ({field} item ' "
            f"|| {_over('items', text)} || '{label} ' || {_max_len('items', text)} "
            "|| ' chars > ' || $max_chars || ')'"
        )
    bound = f"list_transform([{_items(x)}], lambda items: CASE {' '.join(checks)} END)[1]"
    present = f"{x} IS NOT NULL AND {x} <> 'null'"
    return "\n".join(
        [
            f"WHEN {present} AND json_type({x}) <> 'ARRAY' THEN 'wrong type: {field} must be a list'",
            f"WHEN {present} AND NOT coalesce({_fast_ok(x, field, limit)}, false) "
            f"AND {bound} IS NOT NULL THEN {bound}",
        ]
    )


def _strings(x: str, path: str) -> str:
    """Whether every element of array ``x`` has a string at ``path``: one parse of the array
    (a wildcard path skips the elements without it, so the counts must match)."""
    return (
        f"(len(json_type({x}, '$[*].{path}')) = json_array_length({x}) "
        f"AND list_distinct(json_type({x}, '$[*].{path}')) = ['VARCHAR'])"
    )


def _fast_ok(x: str, field: str, limit: int) -> str:
    """A cheap test that a list is good, passed by the usual good list: parsed once, with no
    per-element lambda. It never passes a list the element checks would reject (a list whose
    whole JSON text is within the cap has no text over it); a list it does not pass gets the
    element checks, which find the first bad item or let it through."""
    common = f"json_array_length({x}) <= {limit} AND strlen({x}) <= $max_chars"
    if field == "retrieved_documents":
        return (
            f"({common} AND {_strings(x, 'text')} AND list_has_all("
            f"['NULL', 'VARCHAR', 'BIGINT', 'UBIGINT'], json_type({x}, '$[*].id')) AND list_has_all("
            f"['NULL', 'BIGINT', 'UBIGINT', 'DOUBLE'], json_type({x}, '$[*].score')))"
        )
    key = "role" if field == "conversation" else "name"
    named = (
        f"NOT list_contains(list_transform(json_extract_string({x}, '$[*].{key}'), "
        "lambda r: trim(r)), '')"
    )
    contents = f" AND {_strings(x, 'content')}" if field == "conversation" else ""
    return f"({common} AND {_strings(x, key)}{contents} AND {named})"


def reject_sql(ctx: str, docs: str, conv: str, calls: str) -> str:
    """One ``WHEN ... THEN reason`` line for the classifier's CASE, over the extracted JSON
    values of the four inbox fields (``INBOX_PATHS``); ``$max_chars`` is the value cap.

    A line without any of the fields pays for four NULL tests and nothing else.
    """
    reason = problem_sql(ctx, docs, conv, calls)
    any_part = " OR ".join(f"{x} IS NOT NULL" for x in (ctx, docs, conv, calls))
    return f"WHEN ({any_part}) AND ({reason}) IS NOT NULL THEN ({reason})"


def problem_sql(ctx: str, docs: str, conv: str, calls: str) -> str:
    """The fields' reject reason as one SQL expression, NULL when they are fine (the inbox's
    fast path needs only whether there is one; the classifier names it)."""
    present = "IS NOT NULL AND {0} <> 'null'"
    both = f"{ctx} {present.format(ctx)} AND {docs} {present.format(docs)}"
    reason = "\n".join(
        [
            "CASE",
            f"WHEN {both} THEN 'ambiguous context: give context or retrieved_documents, not both'",
            f"WHEN {ctx} {present.format(ctx)} AND json_type({ctx}) <> 'VARCHAR' "
            "THEN 'wrong type: context must be a string'",
            f"WHEN {ctx} {present.format(ctx)} AND length({ctx} ->> '$') > $max_chars "
            f"THEN 'value too large (context ' || length({ctx} ->> '$') || ' chars > ' "
            "|| $max_chars || ')'",
            _list_checks(
                docs, "retrieved_documents", MAX_DOCUMENTS, _DOC_OK, _DOC_SHAPE, [("", _DOC_TEXT)]
            ),
            _list_checks(
                conv, "conversation", MAX_TURNS, _TURN_OK, _TURN_SHAPE, [("", "e ->> '$.content'")]
            ),
            _list_checks(
                calls,
                "tool_calls",
                MAX_TOOL_CALLS,
                _CALL_OK,
                _CALL_SHAPE,
                [(" arguments", "e ->> '$.arguments'"), (" result", "e ->> '$.result'")],
            ),
            "END",
        ]
    )
    return reason


def columns_sql(ctx: str, docs: str, conv: str, calls: str) -> str:
    """The three normalised columns (``... AS context, ... AS conversation, ...``)."""
    present = "{0} IS NOT NULL AND {0} <> 'null'"
    doc = (
        "json_object('id', e ->> '$.id', 'text', coalesce(e ->> '$.text', e ->> '$.content'), "
        "'score', try_cast(e ->> '$.score' AS DOUBLE))"
    )
    return f"""
    CASE WHEN {present.format(ctx)} THEN
            CASE WHEN trim({ctx} ->> '$') = '' THEN '[]'::JSON
                 ELSE json_array(json_object('id', NULL, 'text', {ctx} ->> '$', 'score', NULL))
            END
         WHEN {present.format(docs)} THEN
            to_json(list_transform({_items(docs)}, lambda e: {doc}))
    END AS context,
    CASE WHEN {present.format(conv)} THEN to_json(list_transform({_items(conv)},
        lambda e: json_object('role', e ->> '$.role', 'content', e ->> '$.content')))
    END AS conversation,
    CASE WHEN {present.format(calls)} THEN to_json(list_transform({_items(calls)},
        lambda e: json_object('name', e ->> '$.name', 'arguments', e -> '$.arguments',
                              'result', e -> '$.result')))
    END AS tool_calls"""
