"""Several criteria per trace for the LLM judge: one call per criterion, or all of a trace's
criteria in one call (``criteria_mode``), as a mixin of ``OpenAICompatibleJudge`` (llm.py).

In one-call mode the reply is one JSON object with an entry per criterion, read per
criterion (llm_parse.parse_criteria): a criterion missing or invalid in it is asked again in
one repair turn, then ``unparseable`` alone; a reply that is no judgment at all (an echo of
the prompt, no JSON) spoils every criterion of the call. The call's tokens are split evenly
over its criteria (the remainder to the first) and its HTTP requests count under the first,
so per-criterion sums add up to what was spent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from eval_pipeline.core.judge.base import CriteriaItem, JudgeRequest, Judgment, Progress
from eval_pipeline.core.judge.criteria import (
    Criterion,
    joint_messages,
    joint_schema,
    reply_format,
    request_inputs,
    untrusted_texts,
)
from eval_pipeline.core.judge.llm_chat import ChatCall, ChatFailed, RunStats
from eval_pipeline.core.judge.llm_parse import (
    EchoedPrompt,
    Fenced,
    InvalidJudgment,
    parse_criteria,
)
from eval_pipeline.core.judge.rubric import new_nonce

RAW_SEPARATOR = "\n----- repair attempt -----\n"

JOINT_REPAIR_PROMPT = (
    "Your reply could not be used for {names}: {problem}. Reply again with ONLY the JSON "
    "object {reply} and nothing else."
)


class CriteriaMixin:
    """The criteria methods of the LLM judge; the judge provides the attributes below."""

    criteria: tuple[Criterion, ...]
    joint: bool
    last_stats: RunStats
    _chat: Any
    _run_sync: Any
    _batch: Any
    _judge_one: Any
    _scrub: Any
    _deadline_reason: Any

    def judge_criteria(
        self, items: Sequence[CriteriaItem], progress: Progress | None = None
    ) -> list[dict[str, Judgment]]:
        """Per (request, criteria named), a judgment for each of those criteria: one call per
        criterion, or one call per request in one-call mode. Never raises for a bad call."""
        if not any(names for _, names in items):
            return [{} for _ in items]
        return self._run_sync(lambda: self.ajudge_criteria(items, progress))

    async def ajudge_criteria(
        self, items: Sequence[CriteriaItem], progress: Progress | None = None
    ) -> list[dict[str, Judgment]]:
        by_name = {c.name: c for c in self.criteria}
        unknown = {n for _, names in items for n in names} - set(by_name)
        if unknown:
            raise ValueError(f"the judge is not configured for {', '.join(sorted(unknown))}")
        # The units of work: (item, criteria) -> one call (plus a repair turn) each.
        units = [
            (i, (by_name[n],))
            for i, (_, names) in enumerate(items)
            for n in (() if self.joint else names)
        ] + [
            (i, tuple(by_name[n] for n in names))
            for i, (_, names) in enumerate(items)
            if names and self.joint
        ]
        stats = RunStats(judgments=sum(len(names) for _, names in items))
        self.last_stats = stats

        async def one(client, slots, unit):
            i, crits = unit
            if not self.joint:
                return {
                    crits[0].name: await self._judge_one(
                        client, slots, items[i][0], stats, crits[0]
                    )
                }
            return await self._judge_joint(client, slots, items[i][0], stats, crits)

        def failed(unit, exc):
            return {
                c.name: Judgment("error", None, self._scrub(f"internal: {exc!r}")) for c in unit[1]
            }

        results = await self._batch(units, one, failed, progress, stats)
        out: list[dict[str, Judgment]] = [{} for _ in items]
        for (i, _), judged in zip(units, results, strict=True):
            out[i].update(judged)
        for judged in out:
            for j in judged.values():
                stats.outcomes[j.state] += 1
        return out

    async def _judge_joint(
        self,
        client: httpx.AsyncClient,
        slots: asyncio.Semaphore,
        req: JudgeRequest,
        stats: RunStats,
        criteria: tuple[Criterion, ...],
    ) -> dict[str, Judgment]:
        """Several criteria of one request in one call. A criterion missing or invalid in the
        reply is unparseable alone (after one repair turn that asks again); a reply that is
        no judgment at all (an echo, no JSON) spoils every criterion of the call."""
        call = ChatCall()
        nonce = new_nonce()
        inputs = request_inputs(req)
        messages = joint_messages(criteria, inputs, nonce)
        fenced = Fenced(nonce, untrusted_texts(inputs))
        scales = {c.name: c.scale for c in criteria}
        schema = joint_schema(criteria)
        call.timer = asyncio.timeout(None)
        raw: str | None = None
        ended: dict[str, tuple[str, int | None, str]] = {}  # criterion -> state, score, reason

        def finish(rest: tuple[str, str]) -> dict[str, Judgment]:
            """Every criterion's judgment; those not ended yet end as ``rest``."""
            latency = (time.monotonic() - call.started) * 1000.0 if call.started else None
            # The call's tokens are split evenly over its criteria (the remainder to the
            # first) and its requests count under the first, so sums stay exact.
            k = len(criteria)
            out = {}
            for idx, c in enumerate(criteria):
                state, score, reason = ended.get(c.name, (rest[0], None, rest[1]))
                out[c.name] = Judgment(
                    state,  # type: ignore[arg-type]
                    score,
                    self._scrub(reason),
                    raw_output=None if raw is None else self._scrub(raw),
                    prompt_tokens=_share(call.prompt_tokens, k, idx),
                    completion_tokens=_share(call.completion_tokens, k, idx),
                    latency_ms=latency,
                    attempts=call.attempts if idx == 0 else 0,
                )
            return out

        def take(parsed: dict) -> list[str]:
            """Record the valid criteria; the names still to judge."""
            for name, got in parsed.items():
                if not isinstance(got, InvalidJudgment):
                    ended[name] = ("ok", got[0], got[1])
            return [n for n, got in parsed.items() if isinstance(got, InvalidJudgment)]

        phase = ""
        try:
            async with call.timer:
                first = await self._chat.complete(client, slots, messages, call, stats, schema)
                raw = first
                try:
                    parsed: dict = parse_criteria(first, scales, fenced)
                except EchoedPrompt as exc:
                    return finish(("unparseable", f"invalid_output: {exc}"))
                except InvalidJudgment as exc:
                    parsed = dict.fromkeys(scales, exc)
                bad = take(parsed)
                if not bad:
                    return finish(("ok", ""))
                problems = {n: str(parsed[n]) for n in bad}
                stats.repairs += 1
                phase = " (during the repair turn)"
                prompt = JOINT_REPAIR_PROMPT.format(
                    names=", ".join(bad),
                    problem="; ".join(dict.fromkeys(problems.values())),
                    reply=reply_format(tuple(c for c in criteria if c.name in bad)),
                )
                repair = [
                    *messages,
                    {"role": "assistant", "content": first},
                    {"role": "user", "content": prompt},
                ]
                second = await self._chat.complete(client, slots, repair, call, stats, schema)
                raw = f"{first}{RAW_SEPARATOR}{second}"
                try:
                    again: dict = parse_criteria(second, {n: scales[n] for n in bad}, fenced)
                except InvalidJudgment as exc:
                    again = dict.fromkeys(bad, exc)
                take(again)
                for name in bad:
                    if name not in ended:
                        reason = f"invalid_output: {problems[name]}; after one repair attempt: "
                        ended[name] = ("unparseable", None, reason + str(again[name]))
                return finish(("ok", ""))
        except TimeoutError:
            return finish(("error", self._deadline_reason(call) + phase))
        except ChatFailed as exc:
            return finish(("error", exc.reason + phase))


def _share(total: int | None, parts: int, index: int) -> int | None:
    """Part ``index`` of ``total`` split into ``parts`` integers (the remainder to part 0)."""
    if total is None:
        return None
    return total // parts + (total % parts if index == 0 else 0)
