"""The LLM judge: any OpenAI-compatible ``/v1/chat/completions`` endpoint, over async httpx.

One ``judge_many`` call opens ONE ``httpx.AsyncClient`` (connection pool sized to the
concurrency, keep-alive) and runs the judgments concurrently under a semaphore (default 16).
The semaphore is held only while a request is in flight, not while a judgment waits out a
back-off, so rate-limited judgments do not starve the others and the server never sees more
than ``concurrency`` requests at once.

Faults and how a judgment ends (see ``Judgment`` in judging.py):

- 429, 5xx, timeouts, connection errors and malformed protocol replies (a body that is not
  JSON, JSON without ``choices``) are retried up to ``max_retries`` times by the shared
  retry policy (core/http.py: full-jitter back-off, ``Retry-After`` as the floor). Every
  judgment also has an overall deadline, starting with its first request. When the budget or the
  deadline is spent: ``error`` with a reason that starts with its kind (``rate_limited:``,
  ``server_error:``, ``timeout:``, ``connection:``, ``bad_response:``, ``http_error:``,
  ``deadline:``), so failure counts by kind can be read back from the store.
- The server is asked for structured output (``response_format`` json_schema). A 400/422
  while it is sent (or a 5xx whose error names ``response_format``, as llama-cpp-python
  answers) steps down to ``json_object`` + schema (llama-cpp-python's dialect), then
  to no ``response_format``; the step-down is remembered by the judge instance, so a server
  that rejects it costs one extra call per step, not one per judgment.
- The answer is read by llm_parse.py (tolerant about where the object is, strict about what
  it says, refusing any echo of the fenced untrusted text). If invalid, ONE repair turn
  shows the model its answer and the problem. Still invalid, or an echo of the prompt:
  ``unparseable`` with every raw answer kept and the problem named. A failure is never
  turned into a score.

The API key goes into the client's Authorization header and nowhere else: not in reprs,
reasons, logs or metadata. Every error text and raw answer that is stored or shown goes
through the one scrubber (core/http.py) before it is cut short.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from eval_pipeline.core.http import GaveUp, Retryable, excerpt, parse_retry_after, scrub
from eval_pipeline.core.judge.base import JudgeRequest, Judgment, PairPick, PairRequest, Progress
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline.core.judge.llm_parse import (
    EchoedPrompt,
    Fenced,
    InvalidJudgment,
    parse_judgment,
    parse_pick,
)
from eval_pipeline.core.judge.rubric import (
    PAIRWISE_VERSION,
    Rubric,
    load_rubric,
    new_nonce,
    pairwise_messages,
)

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
PAIRWISE_REPAIR_PROMPT = (
    "Your reply could not be used: {problem}. Reply again with ONLY the JSON object "
    '{{"winner": "first" | "second" | "tie", "reason": "<one short sentence>"}}.'
)
# Structured-output dialects, most specific first; a server that rejects one gets the next.
RESPONSE_FORMATS: tuple[str, ...] = ("json_schema", "json_object", "none")
REPAIR_PROMPT = (
    "Your reply could not be used: {problem}. Reply again with ONLY the JSON object "
    '{{"score": <integer 1-5>, "reason": "<one short sentence>"}} and nothing else.'
)
_RAW_SEPARATOR = "\n----- repair attempt -----\n"


# --- the judge ------------------------------------------------------------------------------


class _Fatal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _FormatRejected(Exception):
    pass


@dataclass
class _Call:
    """Running totals of one judgment's HTTP calls."""

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


class OpenAICompatibleJudge:
    """Judge protocol implementation for an OpenAI-compatible chat endpoint."""

    name = "openai"

    def __init__(
        self,
        config: LLMJudgeConfig,
        rubric: Rubric | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.rubric = rubric or load_rubric(config.rubric)
        self.model: str | None = config.model
        self.rubric_version = self.rubric.version
        self._format_index = 0 if config.structured_output else len(RESPONSE_FORMATS) - 1
        self._format_lock = threading.Lock()
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._policy = config.retry_policy()
        self.last_stats = RunStats()

    @property
    def pairwise_name(self) -> str:
        """How reports name this judge when it compares two answers side by side."""
        return f"{self.name}:{self.model} ({PAIRWISE_VERSION})"

    def __repr__(self) -> str:  # the config's repr already hides the key
        return f"OpenAICompatibleJudge({self.config!r}, rubric={self.rubric_version!r})"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **explicit: Any) -> OpenAICompatibleJudge:
        """The judge from explicit settings, then EVAL_JUDGE_* variables, then defaults."""
        return cls(LLMJudgeConfig.from_env(dict(os.environ if env is None else env), **explicit))

    @property
    def response_format(self) -> str:
        """The structured-output dialect in use: json_schema, json_object or none."""
        return RESPONSE_FORMATS[self._format_index]

    def cost_estimate(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Money for the given tokens at the configured prices; None when no price is set."""
        pp, pc = self.config.price_prompt_per_1k, self.config.price_completion_per_1k
        if pp is None and pc is None:
            return None
        return prompt_tokens / 1000 * (pp or 0.0) + completion_tokens / 1000 * (pc or 0.0)

    # --- public API ---------------------------------------------------------------------

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Progress | None = None
    ) -> list[Judgment]:
        """One judgment per request, in order. Never raises for a single bad call."""
        if not requests:
            return []
        return self._run_sync(lambda: self.ajudge_many(requests, progress))

    def compare_many(
        self, requests: Sequence[PairRequest], progress: Progress | None = None
    ) -> list[PairPick]:
        """Side by side: which of two answers is better, one pick per request, in order.

        The A/B test's pairwise option asks every pair in both orders. A failed comparison
        is a pick of None with the reason, never a guess.
        """
        if not requests:
            return []
        return self._run_sync(lambda: self.acompare_many(requests, progress))

    @staticmethod
    def _run_sync(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro_factory())
        # Called from inside an event loop (a notebook, an async app): run in a thread.
        box: dict[str, Any] = {}

        def runner() -> None:
            try:
                box["out"] = asyncio.run(coro_factory())
            except BaseException as exc:  # re-raised in the caller's thread
                box["exc"] = exc

        worker = threading.Thread(target=runner, name="llm-judge")
        worker.start()
        worker.join()
        if "exc" in box:
            raise box["exc"]
        return box["out"]

    async def ajudge_many(
        self, requests: Sequence[JudgeRequest], progress: Progress | None = None
    ) -> list[Judgment]:
        stats = RunStats(judgments=len(requests))
        self.last_stats = stats
        out = await self._batch(
            requests,
            lambda client, slots, req: self._judge_one(client, slots, req, stats),
            lambda exc: Judgment("error", None, self._scrub(f"internal: {exc!r}")),
            progress,
            stats,
        )
        for j in out:
            stats.outcomes[j.state] += 1
        return out

    async def acompare_many(
        self, requests: Sequence[PairRequest], progress: Progress | None = None
    ) -> list[PairPick]:
        stats = RunStats(judgments=len(requests))
        self.last_stats = stats
        return await self._batch(
            requests,
            lambda client, slots, req: self._compare_one(client, slots, req, stats),
            lambda exc: PairPick(None, self._scrub(f"internal: {exc!r}")),
            progress,
            stats,
        )

    async def _batch(
        self,
        items: Sequence[Any],
        one_fn: Callable[[httpx.AsyncClient, asyncio.Semaphore, Any], Awaitable[Any]],
        on_error: Callable[[Exception], Any],
        progress: Progress | None,
        stats: RunStats,
    ) -> list[Any]:
        """Run one_fn over the items concurrently on ONE client, at most `concurrency` at once."""
        cfg = self.config
        started = time.monotonic()
        headers = {"Accept": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        limits = httpx.Limits(
            max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
        )
        timeout = httpx.Timeout(
            cfg.read_timeout, connect=cfg.connect_timeout, pool=cfg.connect_timeout
        )
        slots = asyncio.Semaphore(cfg.concurrency)
        done = 0
        every = max(1, len(items) // 10)

        async with httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout,
            limits=limits,
        ) as client:

            async def one(item: Any) -> Any:
                nonlocal done
                try:
                    result = await one_fn(client, slots, item)
                except Exception as exc:  # a bug here must not lose the other items
                    result = on_error(exc)
                done += 1
                if progress and (done % every == 0 or done == len(items)):
                    progress(done, len(items))
                return result

            out = await asyncio.gather(*(one(x) for x in items))
        stats.wall_seconds = time.monotonic() - started
        return list(out)

    async def _compare_one(
        self,
        client: httpx.AsyncClient,
        slots: asyncio.Semaphore,
        req: PairRequest,
        stats: RunStats,
    ) -> PairPick:
        call = _Call()
        nonce = new_nonce()
        messages = pairwise_messages(req.query, req.first, req.second, req.reference, nonce=nonce)
        fenced = Fenced(nonce, (req.query, req.first, req.second, req.reference or ""))
        call.timer = asyncio.timeout(None)
        try:
            async with call.timer:
                first = await self._complete(client, slots, messages, call, stats, PAIRWISE_SCHEMA)
                try:
                    return PairPick(*parse_pick(first, fenced))
                except EchoedPrompt as exc:
                    return PairPick(None, self._scrub(f"invalid_output: {exc}"))
                except InvalidJudgment as exc:
                    problem = str(exc)
                stats.repairs += 1
                repair = [
                    *messages,
                    {"role": "assistant", "content": first},
                    {"role": "user", "content": PAIRWISE_REPAIR_PROMPT.format(problem=problem)},
                ]
                second = await self._complete(client, slots, repair, call, stats, PAIRWISE_SCHEMA)
                try:
                    return PairPick(*parse_pick(second, fenced))
                except InvalidJudgment as exc:
                    reason = f"invalid_output: {problem}; after one repair attempt: {exc}"
                    return PairPick(None, self._scrub(reason))
        except TimeoutError:
            return PairPick(None, self._scrub(self._deadline_reason(call)))
        except _Fatal as exc:
            return PairPick(None, self._scrub(exc.reason))

    # --- one judgment ----------------------------------------------------------------------

    async def _judge_one(
        self,
        client: httpx.AsyncClient,
        slots: asyncio.Semaphore,
        req: JudgeRequest,
        stats: RunStats,
    ) -> Judgment:
        call = _Call()
        # A fresh nonce per call labels the fences: untrusted text cannot guess it to close
        # its fence. It is not in the judgment key, so the cache still hits on a re-run.
        nonce = new_nonce()
        messages = self.rubric.messages(req.query, req.response, req.reference, nonce=nonce)
        fenced = Fenced(nonce, (req.query, req.response, req.reference or ""))
        # The deadline (and the latency) start with the first request, not while the
        # judgment queues for a slot: a big batch must not time out in the queue.
        call.timer = asyncio.timeout(None)
        raw: str | None = None
        phase = ""

        def finish(state: str, score: int | None, reason: str) -> Judgment:
            latency = (time.monotonic() - call.started) * 1000.0 if call.started else None
            return Judgment(
                state,  # type: ignore[arg-type]
                score,
                self._scrub(reason),
                raw_output=None if raw is None else self._scrub(raw),
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                latency_ms=latency,
                attempts=call.attempts,
            )

        try:
            async with call.timer:
                first = await self._complete(client, slots, messages, call, stats)
                raw = first
                try:
                    score, reason = parse_judgment(first, fenced)
                    return finish("ok", score, reason)
                except EchoedPrompt as exc:
                    # No repair turn: it would show the model the injected text once more.
                    return finish("unparseable", None, f"invalid_output: {exc}")
                except InvalidJudgment as exc:
                    problem = str(exc)
                # One repair turn: show the model its answer and what was wrong with it.
                stats.repairs += 1
                phase = " (during the repair turn)"
                repair = [
                    *messages,
                    {"role": "assistant", "content": first},
                    {"role": "user", "content": REPAIR_PROMPT.format(problem=problem)},
                ]
                second = await self._complete(client, slots, repair, call, stats)
                raw = f"{first}{_RAW_SEPARATOR}{second}"
                try:
                    score, reason = parse_judgment(second, fenced)
                    return finish("ok", score, reason)
                except InvalidJudgment as exc:
                    return finish(
                        "unparseable",
                        None,
                        f"invalid_output: {problem}; after one repair attempt: {exc}",
                    )
        except TimeoutError:
            return finish("error", None, self._deadline_reason(call) + phase)
        except _Fatal as exc:
            return finish("error", None, exc.reason + phase)

    def _deadline_reason(self, call: _Call) -> str:
        last = f"; last problem: {call.last_problem}" if call.last_problem else ""
        return (
            f"deadline: no answer within {self.config.deadline:g}s "
            f"after {call.attempts} attempt(s){last}"
        )

    async def _complete(
        self,
        client: httpx.AsyncClient,
        slots: asyncio.Semaphore,
        messages: list[dict[str, str]],
        call: _Call,
        stats: RunStats,
        schema: dict[str, Any] = JUDGMENT_SCHEMA,
    ) -> str:
        """The assistant content of one chat completion, with retries; raises _Fatal."""
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
                raise _Fatal(
                    f"{exc.reason}; the next retry (in {exc.next_wait or 0:.1f}s) would pass the "
                    f"{cfg.deadline:g}s deadline, gave up after {call.attempts} attempt(s)"
                ) from None
            raise _Fatal(f"{exc.reason}; gave up after {call.attempts} attempt(s)") from None

    async def _post(
        self,
        client: httpx.AsyncClient,
        messages: list[dict[str, str]],
        call: _Call,
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
            raise _Fatal(f"http_error: HTTP {status}: {self._error_text(resp)}")
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

    def _scrub(self, text: str) -> str:
        return scrub(text, [self.config.api_key])
