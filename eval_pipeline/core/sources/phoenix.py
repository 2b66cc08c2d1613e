"""Arize Phoenix: a day's LLM spans in as traces, judge scores back out as span annotations.

Reading (``PhoenixSource``): ``GET /v1/projects/{project}/spans`` with ``start_time`` /
``end_time`` = ``[day, day + 1)`` (Phoenix compares them with the span's start time), paged
with the cursor until ``next_cursor`` is null. Each span is classified once:

- a *trace* when it is a span of a wanted kind (default: root LLM spans) whose
  OpenInference attributes give a user query and an answer;
- a *reject* (``trace_rejects``, with the reason) when it should have been a trace but
  cannot be: ERROR status, no output, no user turn, non-text content only, a value larger
  than ``max_chars``;
- a *skip* (counted per reason in ``phoenix_span_skips``) when it is not what the pipeline
  evaluates: another span kind (TOOL, CHAIN, ...) or a child span when only roots are wanted.

Phoenix answers the span query with 404 (plain text) when the project does not exist, which
includes a name no span has been sent to yet (projects are created on the first span); an
existing project answers 200 with an empty page for a day without spans. A 404 is followed by
``GET /v1/projects/{p}`` to be sure: 404 there means the project is unknown (a typo must never
read as a quiet day, so the day fails); 200 means the day is genuinely empty.

Connection errors, timeouts, 429 and 5xx are retried with exponential backoff (honouring
``Retry-After``); when the retries run out the day fails with ``SourceUnavailable``.

Writing back (``annotate_day``): every judgment of a Phoenix-sourced trace becomes a span
annotation (``POST /v1/span_annotations?sync=true``) named ``eval_pipeline.quality`` with an
``identifier`` made of judge name, model and rubric version. Phoenix upserts on
(span, name, identifier), so re-running a day updates the annotations in place, and a new
judge or rubric adds a new annotation next to the old one instead of overwriting it. The
delivery state of each annotation is kept in ``phoenix_annotations``; failures are retried
on the next run and never raise.

No store connection is open during network I/O: DuckDB allows one writing process, so a slow
Phoenix would otherwise block every other writer. Reading is ``PhoenixSource.prefetch(day)``
(HTTP + classification, kept in memory) before the caller opens the store, then
``stage_day`` (inserts only). Writing back is ``plan_annotations`` (short read) ->
``send_annotations`` (HTTP, no connection) -> ``record_annotations`` (short write).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import httpx
import pandas as pd

from eval_pipeline.core.http import parse_retry_after
from eval_pipeline.core.sources.inbox import SourceUnavailable, StageReport
from eval_pipeline.core.store import replace_rows

SOURCE_NAME = "phoenix"
DEFAULT_URL = "http://127.0.0.1:6006"
DEFAULT_PROJECT = "default"
ANNOTATION_NAME = "eval_pipeline.quality"
MAX_PAGE_SIZE = 1000  # Phoenix's own cap on `limit`
SPAN_KINDS = (
    "LLM", "CHAIN", "TOOL", "RETRIEVER", "EMBEDDING", "AGENT", "RERANKER", "GUARDRAIL",
    "EVALUATOR", "DECISION", "UNKNOWN",
)  # fmt: skip
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
EXCERPT_CHARS = 200  # like the inbox source's trace_rejects excerpts


# --- configuration ----------------------------------------------------------------------


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class PhoenixConfig:
    """Where Phoenix is and which spans are traces. ``from_env`` documents the variables."""

    base_url: str = DEFAULT_URL
    project: str = DEFAULT_PROJECT
    api_key: str | None = field(default=None, repr=False)  # a secret: never logged or stored
    span_kinds: tuple[str, ...] = ("LLM",)
    root_only: bool = True
    attribute_filters: tuple[tuple[str, Any], ...] = ()
    segment_attrs: tuple[str, ...] = ("metadata.segment",)
    model_attrs: tuple[str, ...] = ("llm.model_name",)
    prompt_version_attrs: tuple[str, ...] = (
        "metadata.prompt_version",
        "llm.prompt_template.version",
    )
    user_id_attrs: tuple[str, ...] = ("user.id",)
    page_size: int = MAX_PAGE_SIZE
    timeout_s: float = 30.0
    retries: int = 3  # attempts after the first one
    backoff_s: float = 0.5
    max_chars: int = 100_000
    annotation_name: str = ANNOTATION_NAME
    annotation_batch: int = 100
    annotation_max_attempts: int = 10

    def __post_init__(self) -> None:
        kinds = tuple(k.upper() for k in self.span_kinds)
        unknown = [k for k in kinds if k not in SPAN_KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown span kinds {unknown} (known: {', '.join(SPAN_KINDS)})")
        object.__setattr__(self, "span_kinds", kinds)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {self.page_size}")
        if any(c in self.project for c in "/?#") or not self.project:
            raise ValueError(f"invalid Phoenix project name {self.project!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> PhoenixConfig:
        """Settings from the environment; keyword overrides that are not None win.

        EVAL_PHOENIX_URL (or PHOENIX_BASE_URL; default http://127.0.0.1:6006),
        EVAL_PHOENIX_PROJECT (or PHOENIX_PROJECT_NAME; default "default"), PHOENIX_API_KEY
        (sent as a Bearer token), EVAL_PHOENIX_SPAN_KINDS (comma list, default LLM),
        EVAL_PHOENIX_ROOT_ONLY (default true), EVAL_PHOENIX_FILTERS (JSON object of
        attribute: value, matched by Phoenix), EVAL_PHOENIX_SEGMENT_ATTR / _MODEL_ATTR /
        _PROMPT_VERSION_ATTR / _USER_ID_ATTR (comma lists of attribute keys, first present
        wins), EVAL_PHOENIX_PAGE_SIZE, EVAL_PHOENIX_TIMEOUT (seconds), EVAL_PHOENIX_RETRIES,
        EVAL_PHOENIX_BACKOFF (first retry delay, seconds; doubles), EVAL_PHOENIX_MAX_CHARS,
        EVAL_PHOENIX_ANNOTATION_NAME.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def pick(key: str, *names: str, convert: Callable[[str], Any] = str) -> None:
            for name in names:
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    try:
                        values[key] = convert(raw.strip())
                    except ValueError as exc:
                        raise ValueError(f"bad value in ${name}: {exc}") from None
                    return

        pick("base_url", "EVAL_PHOENIX_URL", "PHOENIX_BASE_URL")
        pick("project", "EVAL_PHOENIX_PROJECT", "PHOENIX_PROJECT_NAME")
        pick("api_key", "EVAL_PHOENIX_API_KEY", "PHOENIX_API_KEY")
        pick("span_kinds", "EVAL_PHOENIX_SPAN_KINDS", convert=_split)
        pick("root_only", "EVAL_PHOENIX_ROOT_ONLY", convert=_bool)
        pick("attribute_filters", "EVAL_PHOENIX_FILTERS", convert=_filters_from_json)
        pick("segment_attrs", "EVAL_PHOENIX_SEGMENT_ATTR", convert=_split)
        pick("model_attrs", "EVAL_PHOENIX_MODEL_ATTR", convert=_split)
        pick("prompt_version_attrs", "EVAL_PHOENIX_PROMPT_VERSION_ATTR", convert=_split)
        pick("user_id_attrs", "EVAL_PHOENIX_USER_ID_ATTR", convert=_split)
        pick("page_size", "EVAL_PHOENIX_PAGE_SIZE", convert=int)
        pick("timeout_s", "EVAL_PHOENIX_TIMEOUT", convert=float)
        pick("retries", "EVAL_PHOENIX_RETRIES", convert=int)
        pick("backoff_s", "EVAL_PHOENIX_BACKOFF", convert=float)
        pick("max_chars", "EVAL_PHOENIX_MAX_CHARS", convert=int)
        pick("annotation_name", "EVAL_PHOENIX_ANNOTATION_NAME")
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "attribute_filters" and isinstance(value, Mapping):
                value = tuple(sorted(value.items()))
            elif isinstance(value, list):
                value = tuple(value)
            values[key] = value
        return cls(**values)

    def safe_url(self) -> str:
        """The base URL without any user:password part, for messages."""
        parts = urllib.parse.urlsplit(self.base_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _filters_from_json(raw: str) -> tuple[tuple[str, Any], ...]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("must be a JSON object of attribute: value")
    return tuple(sorted(obj.items()))


# --- HTTP -------------------------------------------------------------------------------


class PhoenixUnavailable(RuntimeError):
    """Phoenix could not be reached, or kept answering 5xx / 429 / timing out."""


class PhoenixClient:
    """A small httpx client with bounded retries. Never logs the API key."""

    def __init__(
        self,
        cfg: PhoenixConfig,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self._sleep = sleep
        headers = {"Accept": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._http = httpx.Client(
            base_url=cfg.base_url, timeout=cfg.timeout_s, headers=headers, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PhoenixClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Any = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """The response to the request, retried on connection errors, timeouts, 429 and 5xx.

        Any other status is returned for the caller to interpret. Raises PhoenixUnavailable
        when the retries are used up.
        """
        attempts = 1 + max(0, self.cfg.retries)
        problem = ""
        for attempt in range(attempts):
            wait = self.cfg.backoff_s * (2**attempt)
            try:
                resp = self._http.request(method, path, params=params, json=json_body)
            except httpx.TimeoutException as exc:
                problem = f"timed out after {self.cfg.timeout_s:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"could not connect ({type(exc).__name__}: {exc})"
            else:
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                problem = f"HTTP {resp.status_code}: {_body_excerpt(resp)}"
                wait = max(wait, parse_retry_after(resp.headers.get("retry-after")) or 0.0)
            if attempt + 1 < attempts:
                self._sleep(min(wait, 30.0))
        raise PhoenixUnavailable(
            f"Phoenix at {self.cfg.safe_url()} did not answer {what} after {attempts} "
            f"attempts: {problem}"
        )


def _body_excerpt(resp: httpx.Response, limit: int = 200) -> str:
    try:
        text = resp.text
    except Exception:  # undecodable body: the status says enough
        return "(unreadable body)"
    text = " ".join(text.split())
    return text[:limit] or "(empty body)"


def _project_path(project: str) -> str:
    return "/v1/projects/" + urllib.parse.quote(project, safe="")


# --- reading spans ----------------------------------------------------------------------


@dataclass
class FetchResult:
    spans: list[dict]
    pages: int
    project_exists: bool


def fetch_spans(client: PhoenixClient, day: dt.date) -> FetchResult:
    """Every span of the configured filter that started on ``day`` (UTC), all pages."""
    cfg = client.cfg
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    params: list[tuple[str, Any]] = [
        ("start_time", start.isoformat()),
        ("end_time", (start + dt.timedelta(days=1)).isoformat()),
        ("limit", cfg.page_size),
    ]
    if cfg.root_only:
        # Roots are at most one per trace, so all root kinds are fetched and the unwanted
        # ones counted as skipped (that count tells a user whose roots are CHAIN spans why
        # nothing came in). Child spans can be many per trace: filter those in Phoenix.
        params.append(("parent_id", "null"))
    else:
        params.extend(("span_kind", k) for k in cfg.span_kinds)
    for key, value in cfg.attribute_filters:
        # Phoenix JSON-parses the value: encode it so "2" stays a string, 2 a number.
        params.append(("attribute", f"{key}:{json.dumps(value)}"))
    path = _project_path(cfg.project) + "/spans"
    spans: list[dict] = []
    seen_cursors: set[str] = set()
    cursor: str | None = None
    pages = 0
    while True:
        page_params = params + ([("cursor", cursor)] if cursor else [])
        resp = client.request("GET", path, params=page_params, what=f"GET {path}")
        pages += 1
        if resp.status_code == 404 and pages == 1:
            return FetchResult([], pages, _check_project(client))
        if resp.status_code in (401, 403):
            raise PhoenixUnavailable(
                f"Phoenix at {cfg.safe_url()} refused the span query (HTTP "
                f"{resp.status_code}): set PHOENIX_API_KEY to a valid API key"
            )
        if resp.status_code != 200:
            raise PhoenixUnavailable(
                f"Phoenix at {cfg.safe_url()} answered HTTP {resp.status_code} to GET {path} "
                f"(page {pages}): {_body_excerpt(resp)}"
            )
        try:
            body = resp.json()
            data = body["data"]
            cursor = body.get("next_cursor")
        except (ValueError, KeyError, TypeError) as exc:
            raise PhoenixUnavailable(
                f"Phoenix at {cfg.safe_url()} sent an unreadable span page ({exc!r}): "
                f"{_body_excerpt(resp)}"
            ) from None
        if not isinstance(data, list):
            raise PhoenixUnavailable(f"Phoenix span page {pages}: 'data' is not a list")
        spans.extend(data)
        if not cursor:
            return FetchResult(spans, pages, True)
        if cursor in seen_cursors:
            raise PhoenixUnavailable(f"Phoenix returned the same cursor twice ({cursor!r})")
        seen_cursors.add(cursor)


def _check_project(client: PhoenixClient) -> bool:
    cfg = client.cfg
    path = _project_path(cfg.project)
    resp = client.request("GET", path, what=f"GET {path}")
    if resp.status_code == 200:
        return True
    if resp.status_code == 404:
        raise PhoenixUnavailable(
            f"Phoenix project {cfg.project!r} not found at {cfg.safe_url()} "
            f"({_body_excerpt(resp)}); set EVAL_PHOENIX_PROJECT to an existing project"
        )
    raise PhoenixUnavailable(
        f"Phoenix at {cfg.safe_url()} answered HTTP {resp.status_code} to GET {path}: "
        f"{_body_excerpt(resp)}"
    )


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


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
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
    for part in _indexed(entry, "message.contents"):
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
    messages = [_message_from_attrs(e) for e in _indexed(attrs, "llm.input_messages")]
    input_from = "llm.input_messages" if messages else "none"
    if not messages and attrs.get("input.value") is not None:
        decoded = _json_value(attrs["input.value"], attrs.get("input.mime_type"))
        messages = _messages_from_value(decoded) or []
        input_from = "input.value"
    outputs = [_message_from_attrs(e) for e in _indexed(attrs, "llm.output_messages")]
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


# --- spans to traces --------------------------------------------------------------------


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


@dataclass
class Outcome:
    kind: str  # "trace" | "reject" | "skip"
    reason: str = ""
    row: TraceRow | None = None


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


def classify_span(span: Mapping[str, Any], cfg: PhoenixConfig) -> Outcome:
    """Turn one span (GET .../spans shape) into a trace row, a reject or a skip."""
    kind = str(span.get("span_kind") or "UNKNOWN").upper()
    if cfg.root_only and span.get("parent_id"):
        return Outcome("skip", "not a root span")
    if kind not in cfg.span_kinds:
        return Outcome("skip", f"span kind {kind}")
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
    raw_attrs = span.get("attributes") or {}
    if not isinstance(raw_attrs, Mapping):
        return Outcome("reject", "malformed span (attributes is not an object)")
    attrs = flatten_attributes(raw_attrs)
    conv = rebuild_conversation(attrs)
    query_msg, user_turns = last_user_turn(conv.messages)
    if query_msg is None:
        what = "no input" if not conv.messages else "no user message in the input"
        return Outcome("reject", f"no user query ({what})")
    if query_msg.text is None:
        kinds = ", ".join(sorted(set(query_msg.non_text))) or "empty content"
        return Outcome("reject", f"non-text content (user turn has {kinds})")
    if conv.answer is None:
        return Outcome("reject", "no output (span has neither output messages nor output.value)")
    if conv.answer.text is None:
        kinds = ", ".join(sorted(set(conv.answer.non_text))) or "empty content"
        return Outcome("reject", f"non-text content (output has {kinds})")
    for label, text in (("user query", query_msg.text), ("answer", conv.answer.text)):
        if len(text) > cfg.max_chars:
            return Outcome(
                "reject", f"value too large ({label} {len(text)} chars > {cfg.max_chars})"
            )
    if not query_msg.text.strip():
        return Outcome("reject", "no user query (the last user turn is empty)")
    end = _parse_time(span.get("end_time"))
    meta_attrs = {k[len("metadata.") :]: v for k, v in attrs.items() if k.startswith("metadata.")}
    metadata: dict[str, Any] = {
        "phoenix_project": cfg.project,
        "span_id": span_id,
        "otel_trace_id": trace_id,
        "span_name": span.get("name"),
        "span_kind": kind,
        "user_turns": user_turns,
        "input_messages": len(conv.messages),
        "input_from": conv.input_from,
        "output_from": conv.output_from,
    }
    if end is not None:
        metadata["latency_ms"] = round((end - ts).total_seconds() * 1000, 3)
    for key, name in (
        ("session.id", "session_id"),
        ("llm.token_count.prompt", "prompt_tokens"),
        ("llm.token_count.completion", "completion_tokens"),
        ("llm.provider", "provider"),
        ("tag.tags", "tags"),
    ):
        if attrs.get(key) is not None:
            metadata[name] = attrs[key]
    if meta_attrs:
        metadata["metadata"] = meta_attrs
    row = TraceRow(
        trace_id=trace_id,
        span_id=span_id,
        ts=ts,
        user_query=query_msg.text,
        assistant_response=conv.answer.text,
        segment=_first_attr(attrs, cfg.segment_attrs),
        model=_first_attr(attrs, cfg.model_attrs),
        prompt_version=_first_attr(attrs, cfg.prompt_version_attrs),
        user_id=_first_attr(attrs, cfg.user_id_attrs),
        metadata=metadata,
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


@dataclass
class ClassifiedDay:
    traces: list[TraceRow]
    rejects: list[tuple[str, str, str]]  # (location, reason, excerpt)
    skips: Counter


def classify_spans(spans: list[Mapping[str, Any]], cfg: PhoenixConfig) -> ClassifiedDay:
    """Classify a day's spans; a trace with several selected spans gets one row per span.

    The row's trace_id is the OTel trace id when the trace has one selected span that day
    (the usual case with root spans), else ``<trace id>:<span id>`` for each of them, so
    raw_traces' (day, trace_id) key holds and every LLM call is judged.
    """
    traces: list[TraceRow] = []
    rejects: list[tuple[str, str, str]] = []
    skips: Counter = Counter()
    seen_spans: set[str] = set()
    base = f"{cfg.safe_url()}{_project_path(cfg.project)}/spans"
    for span in spans:
        try:
            outcome = classify_span(span, cfg)
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


@dataclass
class FetchedDay:
    """A day read from Phoenix and classified, held in memory until it is staged."""

    day: dt.date
    pages: int
    spans_read: int
    classified: ClassifiedDay


@dataclass
class PhoenixSource:
    """Reads a day of spans from a Phoenix project (see the module docstring).

    ``prefetch(day)`` does all the network work (and the classification) with no store
    connection; ``stage_day`` then only writes to the connection it is given. DuckDB lets
    one process write a file at a time, so holding the store open while Phoenix pages come
    in would block every other writer for as long as Phoenix is slow.
    """

    cfg: PhoenixConfig
    name: str = SOURCE_NAME
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    _fetched: FetchedDay | None = field(default=None, init=False, repr=False)

    def prefetch(self, day: dt.date) -> FetchedDay:
        """Read and classify the day's spans; kept (one day only) for ``stage_day``.

        Raises SourceUnavailable when Phoenix cannot be read: nothing is kept, so nothing
        of a half-read day can be staged.
        """
        self._fetched = None
        try:
            with PhoenixClient(self.cfg, self.transport, self.sleep) as client:
                fetched = fetch_spans(client, day)
        except PhoenixUnavailable as exc:
            raise SourceUnavailable(f"{day}: {exc}") from exc
        classified = classify_spans(fetched.spans, self.cfg)
        # Only the classified rows are kept: the raw span dicts are the bulk of the memory.
        self._fetched = FetchedDay(day, fetched.pages, len(fetched.spans), classified)
        return self._fetched

    def stage_day(self, conn: duckdb.DuckDBPyConnection, day: dt.date) -> StageReport:
        """Stage the prefetched day; a caller that did not prefetch gets the fetch here."""
        fetched = self._fetched
        if fetched is None or fetched.day != day:
            fetched = self.prefetch(day)
        self._fetched = None  # staged once: staging the day again reads Phoenix again
        classified = fetched.classified
        report = StageReport(source=self.name, files_read=fetched.pages)
        report.rows_seen = fetched.spans_read
        _stage(conn, self.name, classified)
        skipped = sum(classified.skips.values())
        _record_skips(conn, day, self.cfg.project, classified.skips)
        if not fetched.spans_read:
            report.notes.append(
                f"Phoenix project {self.cfg.project!r} exists; no spans started on {day} "
                f"(filters: {_describe_filters(self.cfg)})"
            )
        else:
            report.notes.append(
                f"{fetched.spans_read} spans read in {fetched.pages} pages: "
                f"{len(classified.traces)} traces, {len(classified.rejects)} rejected, "
                f"{skipped} skipped {dict(classified.skips)}"
            )
        return report


def _describe_filters(cfg: PhoenixConfig) -> str:
    parts = [f"kinds={','.join(cfg.span_kinds)}", f"root_only={cfg.root_only}"]
    parts.extend(f"{k}={v!r}" for k, v in cfg.attribute_filters)
    return " ".join(parts)


def _stage(conn: duckdb.DuckDBPyConnection, source: str, day: ClassifiedDay) -> None:
    if day.traces:
        frame = pd.DataFrame(
            {
                "trace_id": pd.Series([t.trace_id for t in day.traces], dtype=object),
                "ts": pd.Series([t.ts for t in day.traces], dtype="datetime64[us]"),
                "user_query": pd.Series([t.user_query for t in day.traces], dtype=object),
                "assistant_response": pd.Series(
                    [t.assistant_response for t in day.traces], dtype=object
                ),
                "segment": pd.Series([t.segment for t in day.traces], dtype=object),
                "model": pd.Series([t.model for t in day.traces], dtype=object),
                "prompt_version": pd.Series([t.prompt_version for t in day.traces], dtype=object),
                "user_id": pd.Series([t.user_id for t in day.traces], dtype=object),
                "metadata": pd.Series(
                    [json.dumps(t.metadata, default=str) for t in day.traces], dtype=object
                ),
                "source_ref": pd.Series([t.span_id for t in day.traces], dtype=object),
            }
        )
        conn.register("_phoenix_traces", frame)
        try:
            conn.execute(
                "INSERT INTO staged_traces SELECT trace_id, ts, user_query, assistant_response, "
                "segment, model, prompt_version, user_id, metadata::JSON, ?, source_ref "
                "FROM _phoenix_traces",
                [source],
            )
        finally:
            conn.unregister("_phoenix_traces")
    if day.rejects:
        conn.executemany(
            "INSERT INTO staged_rejects VALUES (?, ?, NULL, ?, ?)",
            [[source, loc, reason, excerpt] for loc, reason, excerpt in day.rejects],
        )


def _record_skips(
    conn: duckdb.DuckDBPyConnection, day: dt.date, project: str, skips: Counter
) -> None:
    frame = pd.DataFrame(
        {
            "partition_date": pd.Series([day] * len(skips), dtype=object),
            "project": pd.Series([project] * len(skips), dtype=object),
            "reason": pd.Series(list(skips), dtype=object),
            "spans": pd.Series(list(skips.values()), dtype="int64"),
        }
    )
    replace_rows(conn, "phoenix_span_skips", "partition_date = ?", [day], frame=frame)


def skipped_spans(conn: duckdb.DuckDBPyConnection, day: dt.date) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT reason, spans FROM phoenix_span_skips WHERE partition_date = ? "
            "ORDER BY spans DESC, reason",
            [day],
        ).fetchall()
    )


# --- writing judge scores back ----------------------------------------------------------


def annotation_identifier(judge_name: str, judge_model: str | None, rubric_version: str) -> str:
    """One annotation per judge setup: re-runs of the same judge upsert in place."""
    return f"{judge_name}|{judge_model or '-'}|{rubric_version}"


def score_label(state: str, score: int | None) -> str:
    """A categorical label for Phoenix's UI; 'bad' matches the drift report's bad share."""
    if state != "ok" or score is None:
        return "unparseable" if state == "unparseable" else "judge_error"
    if score >= 4:
        return "good"
    if score == 3:
        return "mixed"
    return "bad"


EXPLANATION_CHARS = 4000

_PENDING_SQL = """
SELECT s.partition_date, s.trace_id, t.source_ref AS span_id, s.judgment_key,
       j.state, j.score, j.reason, j.judge_name, j.judge_model, j.rubric_version
FROM judge_scores s
JOIN raw_traces t USING (partition_date, trace_id)
JOIN judgments j USING (judgment_key)
WHERE s.partition_date = ? AND t.source = ? AND t.source_ref IS NOT NULL
ORDER BY s.trace_id
"""

_RETRY_SQL = """
SELECT a.partition_date, a.trace_id, a.span_id, a.judgment_key,
       j.state, j.score, j.reason, j.judge_name, j.judge_model, j.rubric_version
FROM phoenix_annotations a JOIN judgments j USING (judgment_key)
WHERE a.status = 'failed' AND a.name = ? AND a.attempts < ?
ORDER BY a.partition_date, a.trace_id
LIMIT ?
"""


@dataclass
class AnnotationResult:
    day: dt.date
    name: str
    eligible: int = 0  # the day's judgments of Phoenix-sourced traces
    retried_earlier: int = 0  # failed annotations of earlier runs tried again
    sent: int = 0
    failed: int = 0
    still_failing_total: int = 0  # failed rows in the store after this run (all days)
    unreachable: bool = False
    errors: Counter = field(default_factory=Counter)
    identifiers: list[str] = field(default_factory=list)


@dataclass
class _Item:
    partition_date: dt.date
    trace_id: str
    span_id: str
    judgment_key: str
    state: str
    score: int | None
    label: str
    identifier: str
    payload: dict
    status: str = "failed"
    annotation_id: str | None = None
    http_status: int | None = None
    error: str | None = "not attempted"
    category: str = "not attempted"  # the error, grouped for reports


def _items(rows: list[tuple], name: str) -> list[_Item]:
    items = []
    for day, trace_id, span_id, key, state, score, reason, jname, jmodel, rubric in rows:
        score = None if score is None or (isinstance(score, float) and math.isnan(score)) else score
        identifier = annotation_identifier(jname, jmodel, rubric)
        label = score_label(state, score)
        payload = {
            "span_id": span_id,
            "name": name,
            "annotator_kind": "LLM",
            "result": {
                "label": label,
                "score": float(score) if score is not None else None,
                "explanation": (reason or "")[:EXPLANATION_CHARS] or None,
            },
            "metadata": {
                "source": "eval_pipeline",
                "judge": jname,
                "judge_model": jmodel,
                "rubric_version": rubric,
                "judgment_state": state,
                "judgment_key": key,
                "partition_date": str(day),
                "trace_id": trace_id,
            },
            "identifier": identifier,
        }
        items.append(_Item(day, trace_id, span_id, key, state, score, label, identifier, payload))
    return items


_MISSING_SPANS = re.compile(r"[0-9a-fA-F]{16}")


def _post_batch(client: PhoenixClient, batch: list[_Item]) -> None:
    """Post one batch; sets each item's status. Raises PhoenixUnavailable to stop the run."""
    pending = list(batch)
    while pending:
        resp = client.request(
            "POST",
            "/v1/span_annotations",
            params={"sync": "true"},
            json_body={"data": [i.payload for i in pending]},
            what="POST /v1/span_annotations",
        )
        if resp.status_code == 200:
            try:
                ids = [d.get("id") for d in resp.json().get("data", [])]
            except (ValueError, AttributeError):
                ids = []
            for n, item in enumerate(pending):
                item.status, item.http_status, item.error = "sent", 200, None
                # sync answers one id per annotation, in request order
                item.annotation_id = ids[n] if len(ids) == len(pending) else None
            return
        if resp.status_code in (401, 403):
            raise PhoenixUnavailable(
                f"Phoenix refused the annotations (HTTP {resp.status_code}): set "
                "PHOENIX_API_KEY to a key that may write annotations"
            )
        body = _body_excerpt(resp, 300)
        if resp.status_code == 404:
            # "Spans with IDs a, b do not exist.": mark those, send the rest again.
            missing = set(_MISSING_SPANS.findall(body))
            bad = [i for i in pending if i.span_id in missing]
            if bad:
                for item in bad:
                    item.status, item.http_status = "failed", 404
                    item.error = item.category = "span not found in Phoenix"
                pending = [i for i in pending if i.span_id not in missing]
                continue
        if len(pending) > 1:
            # Some item is unacceptable and the answer does not say which: one at a time.
            for item in pending:
                _post_batch(client, [item])
            return
        item = pending[0]
        item.status, item.http_status = "failed", resp.status_code
        item.error = f"HTTP {resp.status_code}: {body}"
        item.category = f"rejected by Phoenix (HTTP {resp.status_code})"
        return


def _record(conn: duckdb.DuckDBPyConnection, items: list[_Item], name: str) -> None:
    if not items:
        return
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    frame = pd.DataFrame(
        {
            "span_id": pd.Series([i.span_id for i in items], dtype=object),
            "name": name,
            "identifier": pd.Series([i.identifier for i in items], dtype=object),
            "partition_date": pd.Series([i.partition_date for i in items], dtype=object),
            "trace_id": pd.Series([i.trace_id for i in items], dtype=object),
            "judgment_key": pd.Series([i.judgment_key for i in items], dtype=object),
            "state": pd.Series([i.state for i in items], dtype=object),
            "score": pd.array([i.score for i in items], dtype="Float64"),
            "label": pd.Series([i.label for i in items], dtype=object),
            "status": pd.Series([i.status for i in items], dtype=object),
            "annotation_id": pd.Series([i.annotation_id for i in items], dtype=object),
            "http_status": pd.array([i.http_status for i in items], dtype="Int64"),
            "error": pd.Series([i.error for i in items], dtype=object),
        }
    )
    conn.register("_annotation_updates", frame)
    conn.execute("BEGIN TRANSACTION")
    try:
        # Keep the attempt count and first attempt of rows that already exist.
        conn.execute(
            """
            CREATE OR REPLACE TEMP TABLE _annotation_rows AS
            SELECT u.span_id, u.name, u.identifier, u.partition_date::DATE AS partition_date,
                   u.trace_id, u.judgment_key, u.state, u.score::DOUBLE AS score, u.label,
                   u.status, u.annotation_id, u.http_status::INTEGER AS http_status, u.error,
                   coalesce(a.attempts, 0) + 1 AS attempts,
                   coalesce(a.first_attempt_at, ?) AS first_attempt_at,
                   ?::TIMESTAMP AS last_attempt_at,
                   CASE WHEN u.status = 'sent' THEN ?::TIMESTAMP ELSE a.sent_at END AS sent_at
            FROM _annotation_updates u
            LEFT JOIN phoenix_annotations a USING (span_id, name, identifier)
            """,
            [now, now, now],
        )
        conn.execute(
            "DELETE FROM phoenix_annotations a USING _annotation_rows r WHERE "
            "a.span_id = r.span_id AND a.name = r.name AND a.identifier = r.identifier"
        )
        conn.execute(
            "INSERT INTO phoenix_annotations (span_id, name, identifier, partition_date, "
            "trace_id, judgment_key, state, score, label, status, annotation_id, http_status, "
            "error, attempts, first_attempt_at, last_attempt_at, sent_at) "
            "SELECT span_id, name, identifier, partition_date, trace_id, judgment_key, state, "
            "score, label, status, annotation_id, http_status, error, attempts, "
            "first_attempt_at, last_attempt_at, sent_at FROM _annotation_rows"
        )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.unregister("_annotation_updates")
        conn.execute("DROP TABLE IF EXISTS _annotation_rows")


def phoenix_judgments(conn: duckdb.DuckDBPyConnection, day: dt.date) -> int:
    """How many of the day's judgments belong to Phoenix-sourced traces."""
    return int(
        conn.execute(
            "SELECT count(*) FROM judge_scores s JOIN raw_traces t "
            "USING (partition_date, trace_id) WHERE s.partition_date = ? AND t.source = ?",
            [day, SOURCE_NAME],
        ).fetchone()[0]
    )


def pending_retries(conn: duckdb.DuckDBPyConnection, cfg: PhoenixConfig | None = None) -> int:
    """Failed annotations that the next run will try again (None: default settings)."""
    name = cfg.annotation_name if cfg else PhoenixConfig.annotation_name
    max_attempts = cfg.annotation_max_attempts if cfg else PhoenixConfig.annotation_max_attempts
    return int(
        conn.execute(
            "SELECT count(*) FROM phoenix_annotations WHERE status = 'failed' AND name = ? "
            "AND attempts < ?",
            [name, max_attempts],
        ).fetchone()[0]
    )


@dataclass
class AnnotationPlan:
    """What one run sends for a day, read from the store by ``plan_annotations``."""

    day: dt.date
    name: str
    today: list[_Item]  # the day's judgments of Phoenix-sourced traces
    earlier: list[_Item]  # failed annotations of earlier runs, tried again

    @property
    def items(self) -> list[_Item]:
        return self.earlier + self.today


@dataclass
class SendOutcome:
    """How the posting went as a whole; each item's own delivery state is on the item."""

    unreachable: bool = False
    attempted: bool = False


def plan_annotations(
    conn: duckdb.DuckDBPyConnection, cfg: PhoenixConfig, day: dt.date, *, retry_limit: int = 5000
) -> AnnotationPlan:
    """Phase 1 (store, read only): the day's judgments of Phoenix traces plus the earlier
    failed annotations to retry (up to ``retry_limit``, at most ``annotation_max_attempts``
    tries each)."""
    today = _items(conn.execute(_PENDING_SQL, [day, SOURCE_NAME]).fetchall(), cfg.annotation_name)
    # Failed annotations of any earlier run, including this day's spans that are no longer
    # in its sample; the day's current judgments are posted anyway and take precedence.
    current = {(i.span_id, i.identifier) for i in today}
    earlier = [
        i
        for i in _items(
            conn.execute(
                _RETRY_SQL, [cfg.annotation_name, cfg.annotation_max_attempts, retry_limit]
            ).fetchall(),
            cfg.annotation_name,
        )
        if (i.span_id, i.identifier) not in current
    ]
    return AnnotationPlan(day, cfg.annotation_name, today, earlier)


def send_annotations(
    cfg: PhoenixConfig,
    plan: AnnotationPlan,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendOutcome:
    """Phase 2 (network, no store): post the plan's annotations in batches, setting each
    item's delivery state. Never raises: every failure ends up on the items."""
    items = plan.items
    outcome = SendOutcome(attempted=bool(items))
    if not items:
        return outcome
    try:
        with PhoenixClient(cfg, transport, sleep) as client:
            for start in range(0, len(items), max(1, cfg.annotation_batch)):
                _post_batch(client, items[start : start + cfg.annotation_batch])
    except PhoenixUnavailable as exc:
        outcome.unreachable = True
        for item in items:
            if item.status != "sent" and item.category == "not attempted":
                item.error, item.category = str(exc), "Phoenix unreachable"
    except Exception as exc:  # the write-back must never fail the judging
        for item in items:
            if item.status != "sent" and item.category == "not attempted":
                item.error, item.category = f"unexpected error: {exc!r}", "unexpected error"
    return outcome


def record_annotations(
    conn: duckdb.DuckDBPyConnection, plan: AnnotationPlan, outcome: SendOutcome
) -> AnnotationResult:
    """Phase 3 (store, one transaction): each item's delivery state into
    ``phoenix_annotations``, and the run's figures."""
    result = AnnotationResult(day=plan.day, name=plan.name)
    result.eligible = len(plan.today)
    result.retried_earlier = len(plan.earlier)
    result.identifiers = sorted({i.identifier for i in plan.today})
    result.unreachable = outcome.unreachable
    items = plan.items
    if outcome.attempted:
        _record(conn, items, plan.name)
    for item in items:
        if item.status == "sent":
            result.sent += 1
        else:
            result.failed += 1
            result.errors[item.category] += 1
    result.still_failing_total = int(
        conn.execute(
            "SELECT count(*) FROM phoenix_annotations WHERE status = 'failed' AND name = ?",
            [plan.name],
        ).fetchone()[0]
    )
    return result


def annotate_day(
    conn: duckdb.DuckDBPyConnection,
    cfg: PhoenixConfig,
    day: dt.date,
    *,
    retry_limit: int = 5000,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> AnnotationResult:
    """Plan, send and record on one connection; never raises for HTTP.

    A convenience for callers that hold the store anyway (tests). The ``judge_annotations``
    asset runs the three phases itself so that no connection is open while posting.

    Every run posts all of the day's annotations again (Phoenix updates them in place, so
    this is idempotent and repairs annotations deleted in Phoenix) plus, first, the
    other annotations whose last attempt failed. Every outcome is recorded in
    ``phoenix_annotations``.
    """
    plan = plan_annotations(conn, cfg, day, retry_limit=retry_limit)
    outcome = send_annotations(cfg, plan, transport=transport, sleep=sleep)
    return record_annotations(conn, plan, outcome)
