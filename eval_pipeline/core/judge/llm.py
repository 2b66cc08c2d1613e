"""The LLM judge: any OpenAI-compatible ``/v1/chat/completions`` endpoint, over async httpx.

One ``judge_many`` call opens ONE ``httpx.AsyncClient`` (connection pool sized to the
concurrency, keep-alive) and runs the judgments concurrently under a semaphore (default 16).
The semaphore is held only while a request is in flight, not while a judgment waits out a
back-off, so rate-limited judgments do not starve the others and the server never sees more
than ``concurrency`` requests at once.

How a judgment ends (see ``Judgment`` in base.py):

- One chat call (llm_chat.py) retries 429, 5xx, timeouts, connection errors and malformed
  replies through the shared retry policy and steps down the structured-output dialect a
  server refuses. When its budget is spent: ``error`` with a reason that starts with its
  kind (``rate_limited:``, ``server_error:``, ``timeout:``, ``connection:``,
  ``bad_response:``, ``http_error:``), so failure counts by kind can be read back from the
  store. Every judgment also has an overall deadline, starting with its first request and
  covering the repair turn (``deadline:``).
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
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import httpx

from eval_pipeline.core.http import scrub
from eval_pipeline.core.judge.base import (
    JudgeRequest,
    Judgment,
    PairPick,
    PairRequest,
    Progress,
)
from eval_pipeline.core.judge.criteria import (
    Criterion,
    joint_version,
    load_criteria,
    render_inputs,
    request_inputs,
    untrusted_texts,
)
from eval_pipeline.core.judge.llm_chat import (
    PAIRWISE_SCHEMA,
    ChatCall,
    ChatEndpoint,
    ChatFailed,
    RunStats,
)
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline.core.judge.llm_criteria import RAW_SEPARATOR, CriteriaMixin
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

PAIRWISE_REPAIR_PROMPT = (
    "Your reply could not be used: {problem}. Reply again with ONLY the JSON object "
    '{{"winner": "first" | "second" | "tie", "reason": "<one short sentence>"}}.'
)
REPAIR_PROMPT = (
    "Your reply could not be used: {problem}. Reply again with ONLY the JSON object "
    '{{"score": <integer {lo}-{hi}>, "reason": "<one short sentence>"}} and nothing else.'
)


# --- the judge ------------------------------------------------------------------------------


class OpenAICompatibleJudge(CriteriaMixin):
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
        criteria = load_criteria(config.criteria)
        if rubric is not None or config.rubric:
            # A rubric given the old way is the quality criterion's prompt.
            own = rubric or load_rubric(config.rubric)
            criteria = tuple(
                replace(c, rubric=own, version=own.version) if c.name == "quality" else c
                for c in criteria
            )
        self.criteria: tuple[Criterion, ...] = criteria
        self.mode = config.criteria_mode
        # One call per trace only means something with several criteria; with one, the
        # criterion's own prompt is used whatever the mode, so its keys do not change.
        self.joint = self.mode == "one-call" and len(criteria) > 1
        self.versions = {c.name: joint_version(c) if self.joint else c.version for c in criteria}
        self.rubric = criteria[0].rubric  # judge_many judges the first criterion
        self.model: str | None = config.model
        self.rubric_version = criteria[0].version
        self._chat = ChatEndpoint(config, sleep=sleep, rng=rng)
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
        return self._chat.response_format

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
            lambda _, exc: Judgment("error", None, self._scrub(f"internal: {exc!r}")),
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
            lambda _, exc: PairPick(None, self._scrub(f"internal: {exc!r}")),
            progress,
            stats,
        )

    async def _batch(
        self,
        items: Sequence[Any],
        one_fn: Callable[[httpx.AsyncClient, asyncio.Semaphore, Any], Awaitable[Any]],
        on_error: Callable[[Any, Exception], Any],
        progress: Progress | None,
        stats: RunStats,
    ) -> list[Any]:
        """Run one_fn over the items concurrently on ONE client, at most `concurrency` at once."""
        started = time.monotonic()
        slots = asyncio.Semaphore(self.config.concurrency)
        done = 0
        every = max(1, len(items) // 10)

        async with self._chat.open_client() as client:

            async def one(item: Any) -> Any:
                nonlocal done
                try:
                    result = await one_fn(client, slots, item)
                except Exception as exc:  # a bug here must not lose the other items
                    result = on_error(item, exc)
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
        call = ChatCall()
        nonce = new_nonce()
        messages = pairwise_messages(req.query, req.first, req.second, req.reference, nonce=nonce)
        fenced = Fenced(nonce, (req.query, req.first, req.second, req.reference or ""))
        call.timer = asyncio.timeout(None)
        try:
            async with call.timer:
                first = await self._chat.complete(
                    client, slots, messages, call, stats, PAIRWISE_SCHEMA
                )
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
                second = await self._chat.complete(
                    client, slots, repair, call, stats, PAIRWISE_SCHEMA
                )
                try:
                    return PairPick(*parse_pick(second, fenced))
                except InvalidJudgment as exc:
                    reason = f"invalid_output: {problem}; after one repair attempt: {exc}"
                    return PairPick(None, self._scrub(reason))
        except TimeoutError:
            return PairPick(None, self._scrub(self._deadline_reason(call)))
        except ChatFailed as exc:
            return PairPick(None, self._scrub(exc.reason))

    # --- one judgment ----------------------------------------------------------------------

    async def _judge_one(
        self,
        client: httpx.AsyncClient,
        slots: asyncio.Semaphore,
        req: JudgeRequest,
        stats: RunStats,
        criterion: Criterion | None = None,
    ) -> Judgment:
        crit = criterion or self.criteria[0]
        call = ChatCall()
        # A fresh nonce per call labels the fences: untrusted text cannot guess it to close
        # its fence. It is not in the judgment key, so the cache still hits on a re-run.
        nonce = new_nonce()
        inputs = request_inputs(req)
        messages = crit.rubric.render(inputs, nonce, render_inputs(inputs, nonce))
        fenced = Fenced(nonce, untrusted_texts(inputs))
        schema, scale = crit.schema(), crit.scale
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
                first = await self._chat.complete(client, slots, messages, call, stats, schema)
                raw = first
                try:
                    score, reason = parse_judgment(first, fenced, scale)
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
                    {
                        "role": "user",
                        "content": REPAIR_PROMPT.format(problem=problem, lo=scale[0], hi=scale[1]),
                    },
                ]
                second = await self._chat.complete(client, slots, repair, call, stats, schema)
                raw = f"{first}{RAW_SEPARATOR}{second}"
                try:
                    score, reason = parse_judgment(second, fenced, scale)
                    return finish("ok", score, reason)
                except InvalidJudgment as exc:
                    return finish(
                        "unparseable",
                        None,
                        f"invalid_output: {problem}; after one repair attempt: {exc}",
                    )
        except TimeoutError:
            return finish("error", None, self._deadline_reason(call) + phase)
        except ChatFailed as exc:
            return finish("error", None, exc.reason + phase)

    def _deadline_reason(self, call: ChatCall) -> str:
        last = f"; last problem: {call.last_problem}" if call.last_problem else ""
        return (
            f"deadline: no answer within {self.config.deadline:g}s "
            f"after {call.attempts} attempt(s){last}"
        )

    def _scrub(self, text: str) -> str:
        return scrub(text, [self.config.api_key])
