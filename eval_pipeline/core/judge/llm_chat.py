"""One chat completion against an OpenAI-compatible ``/v1/chat/completions`` endpoint, as
the LLM judge makes it: structured output with step-down, retries through the shared policy,
and every fault turned into a reason that starts with its kind.

- 429, 5xx, timeouts, connection errors and malformed protocol replies (a body that is not
  JSON, JSON without ``choices``) are retried by the shared retry policy (core/http.py:
  full-jitter back-off, ``Retry-After`` as the floor). When the budget or the judgment's
  deadline is spent: :class:`ChatFailed` with a reason that starts with its kind
  (``rate_limited:``, ``server_error:``, ``timeout:``, ``connection:``, ``bad_response:``,
  ``http_error:``).
- The server is asked for structured output (``response_format`` json_schema). A 400/422
  while it is sent (or a 5xx whose error names ``response_format``, as llama-cpp-python
  answers) steps down to ``json_object`` + schema (llama-cpp-python's dialect), then
  to no ``response_format``; the step-down is remembered by the endpoint, so a server
  that rejects it costs one extra call per step, not one per judgment.
- Error text is scrubbed of the API key (and key shapes) before it is cut short.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from eval_pipeline.core.http import GaveUp, Retryable, excerpt, parse_retry_after
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig

JUDGMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}
PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["first", "second", "tie"]},
        "reason": {"type": "string"},
    },
    "required": ["winner", "reason"],
    "additionalProperties": False,
}
# Structured-output dialects, most specific first; a server that rejects one gets the next.
RESPONSE_FORMATS: tuple[str, ...] = ("json_schema", "json_object", "none")


class ChatFailed(Exception):
    """The chat call failed for good; ``reason`` starts with its kind (see llm.py)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _FormatRejected(Exception):
    """The server refused the response_format sent: step down to the next dialect."""


@dataclass
class ChatCall:
    """Running totals of one judgment's HTTP calls (a judgment may make several)."""

    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    last_problem: str = ""
    started: float | None = None  # monotonic time of the first request
    deadline: float = math.inf
    timer: Any = None  # the asyncio.Timeout that enforces the deadline

    def add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name in ("prompt_tokens", "completion_tokens"):
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, (getattr(self, name) or 0) + value)


@dataclass
class RunStats:
    """What the last judge_many call cost: HTTP calls, retries, format step-downs."""

    judgments: int = 0
    http_calls: int = 0
    retries: int = 0
    repairs: int = 0
    format_fallbacks: int = 0
    wall_seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)


class ChatEndpoint:
    """The judge's endpoint: one per judge, shared by its concurrent judgments."""

    def __init__(
        self,
        config: LLMJudgeConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._format_index = 0 if config.structured_output else len(RESPONSE_FORMATS) - 1
        self._format_lock = threading.Lock()
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._policy = config.retry_policy()

    @property
    def response_format(self) -> str:
        """The structured-output dialect in use: json_schema, json_object or none."""
        return RESPONSE_FORMATS[self._format_index]

    def open_client(self) -> httpx.AsyncClient:
        """ONE pooled client for a batch: keep-alive, a connection per concurrency slot."""
        cfg = self.config
        headers = {"Accept": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        limits = httpx.Limits(
            max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
        )
        timeout = httpx.Timeout(
            cfg.read_timeout, connect=cfg.connect_timeout, pool=cfg.connect_timeout
        )
        return httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout,
            limits=limits,
        )

    async def complete(
        self,
        client: httpx.AsyncClient,
        slots: asyncio.Semaphore,
        messages: list[dict[str, str]],
        call: ChatCall,
        stats: RunStats,
        schema: dict[str, Any] = JUDGMENT_SCHEMA,
    ) -> str:
        """The assistant content of one chat completion, with retries; raises ChatFailed."""
        cfg = self.config

        async def attempt() -> str:
            while True:
                fmt_index = self._format_index
                try:
                    # The slot is held only while a request is in flight, never in a wait.
                    async with slots:
                        if call.started is None:
                            call.started = time.monotonic()
                            call.deadline = call.started + cfg.deadline
                            loop_deadline = asyncio.get_running_loop().time() + cfg.deadline
                            call.timer.reschedule(loop_deadline)
                        return await self._post(client, messages, call, fmt_index, stats, schema)
                except _FormatRejected:
                    with self._format_lock:
                        if self._format_index == fmt_index:
                            self._format_index = min(fmt_index + 1, len(RESPONSE_FORMATS) - 1)
                            stats.format_fallbacks += 1
                    # Not a fault of the server's health: no retry budget spent.

        def on_retry(exc: Retryable, wait: float) -> None:
            call.last_problem = exc.reason
            stats.retries += 1

        try:
            return await self._policy.arun(
                attempt,
                sleep=self._sleep,
                rng=self._rng,
                deadline_at=lambda: call.deadline,
                on_retry=on_retry,
            )
        except GaveUp as exc:
            call.last_problem = exc.reason
            if exc.deadline:
                raise ChatFailed(
                    f"{exc.reason}; the next retry (in {exc.next_wait or 0:.1f}s) would pass the "
                    f"{cfg.deadline:g}s deadline, gave up after {call.attempts} attempt(s)"
                ) from None
            raise ChatFailed(f"{exc.reason}; gave up after {call.attempts} attempt(s)") from None

    async def _post(
        self,
        client: httpx.AsyncClient,
        messages: list[dict[str, str]],
        call: ChatCall,
        fmt_index: int,
        stats: RunStats,
        schema: dict[str, Any] = JUDGMENT_SCHEMA,
    ) -> str:
        cfg = self.config
        fmt = RESPONSE_FORMATS[fmt_index]
        name = "judgment" if schema is JUDGMENT_SCHEMA else "pairwise_verdict"
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": messages,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
        }
        if fmt == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "strict": True, "schema": schema},
            }
        elif fmt == "json_object":
            body["response_format"] = {"type": "json_object", "schema": schema}
        call.attempts += 1
        stats.http_calls += 1
        try:
            resp = await client.post("chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise Retryable(f"timeout: {type(exc).__name__} from {self._where()}") from None
        except httpx.TransportError as exc:
            raise Retryable(
                f"connection: {self._short(f'{type(exc).__name__}: {exc}')} ({self._where()})"
            ) from None
        status = resp.status_code
        if status == 429:
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            hint = f", Retry-After {retry_after:g}s" if retry_after is not None else ""
            raise Retryable(f"rate_limited: HTTP 429{hint}", retry_after)
        if "response_format" in body and self._rejects_format(status, resp):
            raise _FormatRejected()
        if self._policy.retryable_status(status):
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            raise Retryable(f"server_error: HTTP {status}: {self._error_text(resp)}", retry_after)
        if status >= 400:
            raise ChatFailed(f"http_error: HTTP {status}: {self._error_text(resp)}")
        try:
            data = resp.json()
        except ValueError:
            raise Retryable(
                f"bad_response: HTTP {status} body is not JSON: {self._short(resp.text)!r}"
            ) from None
        if isinstance(data, dict):
            call.add_usage(data.get("usage"))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
            raise Retryable(
                f"bad_response: no choices[0].message.content in the reply (keys: {keys})"
            ) from None
        if content is not None and not isinstance(content, str):
            content = json.dumps(content)
        return content or ""

    # --- helpers -----------------------------------------------------------------------------

    def _rejects_format(self, status: int, resp: httpx.Response) -> bool:
        # 400/422 while response_format is sent: the usual "unsupported parameter" answer.
        # llama-cpp-python answers its validation error on an unknown response_format type
        # with a 500 naming the parameter, so a 5xx that names it counts as well.
        if status in (400, 422):
            return True
        return status >= 500 and "response_format" in resp.text

    def _where(self) -> str:
        return httpx.URL(self.config.base_url).host or "the server"

    def _short(self, text: str, limit: int = 200) -> str:
        """Scrubbed first, then cut: a key straddling the cut must not survive."""
        return excerpt(text, [self.config.api_key], limit)

    def _error_text(self, resp: httpx.Response) -> str:
        try:
            data = resp.json()
            message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        except (ValueError, AttributeError):
            message = None
        return self._short(str(message) if message else resp.text or resp.reason_phrase)
