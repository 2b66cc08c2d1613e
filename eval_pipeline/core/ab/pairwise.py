"""Pairwise judging: the judge sees both answers to a case, in both orders.

A judge that reads two answers together can prefer whichever comes first; asking in both
orders exposes that (an order-inconsistent pick counts as a tie, see
:func:`eval_pipeline.core.ab.stats.aggregate_pairwise`). A judge that cannot compare two
answers is wrapped in :class:`ScoreDerivedPairwiseJudge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eval_pipeline.core.ab.results import JUDGE_GRADER
from eval_pipeline.core.judge.base import (
    Judge,
    JudgeRequest,
    Judgment,
    PairPick,
    PairRequest,
    judgment_key,
)
from eval_pipeline.core.regression.case import Case, input_text, reference_text
from eval_pipeline.core.regression.runners import Call


def judge_dedup(judge: Judge, requests: Sequence[JudgeRequest]) -> list[Judgment]:
    """Judge each distinct (query, response, reference) once: A and B often answer alike."""
    keys = [judgment_key(judge, r) for r in requests]
    todo: dict[str, JudgeRequest] = {}
    for k, r in zip(keys, requests, strict=True):
        todo.setdefault(k, r)
    fresh = judge.judge_many(list(todo.values())) if todo else []
    if len(fresh) != len(todo):
        raise RuntimeError(f"judge returned {len(fresh)} judgments for {len(todo)} requests")
    by_key = dict(zip(todo, fresh, strict=True))
    return [by_key[k] for k in keys]


class PairwiseJudge(Protocol):
    name: str

    def compare_many(self, requests: Sequence[PairRequest]) -> list[PairPick]:
        """One pick per request, in order. Never raises for a single bad call."""
        ...


@dataclass
class ScoreDerivedPairwiseJudge:
    """A pairwise judge built from a single-answer judge: scores both answers, prefers the
    higher score. It cannot have a position bias (consistency is 100% by construction);
    reports name it so nobody mistakes it for a judge that reads both answers together."""

    judge: Judge

    @property
    def name(self) -> str:
        return f"score-derived({self.judge.name})"

    def compare_many(self, requests: Sequence[PairRequest]) -> list[PairPick]:
        singles = []
        for r in requests:
            singles.append(JudgeRequest(r.query, r.first, r.reference))
            singles.append(JudgeRequest(r.query, r.second, r.reference))
        judged = judge_dedup(self.judge, singles)
        picks = []
        for i in range(len(requests)):
            j1, j2 = judged[2 * i], judged[2 * i + 1]
            if j1.state != "ok" or j2.state != "ok":
                picks.append(PairPick(None, f"a single judgment failed: {j1.reason} / {j2.reason}"))
            elif j1.score > j2.score:
                picks.append(PairPick("first", f"scores {j1.score} vs {j2.score}"))
            elif j2.score > j1.score:
                picks.append(PairPick("second", f"scores {j1.score} vs {j2.score}"))
            else:
                picks.append(PairPick("tie", f"both scored {j1.score}"))
        return picks


def pairwise_judge_for(judge: Judge) -> PairwiseJudge:
    """The judge itself when it can compare two answers (``compare_many``), else a
    score-derived one."""
    if callable(getattr(judge, "compare_many", None)):
        return judge  # type: ignore[return-value]
    return ScoreDerivedPairwiseJudge(judge)


def run_pairwise(
    cases: Sequence[Case],
    calls: dict[str, list[Call]],
    base: str,
    other: str,
    pjudge: PairwiseJudge,
) -> tuple[list[tuple[str | None, str | None]], list[dict[str, Any]]]:
    """Both orders for every open-ended case with two answers; picks mapped back to A/B."""
    items = []
    for case, ca, cb in zip(cases, calls[base], calls[other], strict=True):
        if case.grader_type != JUDGE_GRADER:
            continue
        items.append((case, ca, cb))
    requests = []
    for case, ca, cb in items:
        if ca.ok and cb.ok:
            q, ref = input_text(case.input), reference_text(case.expected)
            requests.append(PairRequest(q, ca.output, cb.output, ref))
            requests.append(PairRequest(q, cb.output, ca.output, ref))
    picks = iter(pjudge.compare_many(requests) if requests else [])
    verdicts, rows = [], []
    to_ab = {"first": "A", "second": "B", "tie": "tie"}
    to_ba = {"first": "B", "second": "A", "tie": "tie"}
    for case, ca, cb in items:
        if not (ca.ok and cb.ok):
            rows.append(
                dict(case_id=case.id, variant=other, pick_ab=None, pick_ba=None,
                     outcome="failed", reason="a call failed; not judged")
            )  # fmt: skip
            verdicts.append((None, None))
            continue
        p1, p2 = next(picks), next(picks)
        v1 = to_ab[p1.pick] if p1.pick else None
        v2 = to_ba[p2.pick] if p2.pick else None
        verdicts.append((v1, v2))
        if v1 is None or v2 is None:
            outcome = "failed"
        elif v1 != v2:
            outcome = "inconsistent"
        else:
            outcome = v1
        rows.append(
            dict(case_id=case.id, variant=other, pick_ab=v1, pick_ba=v2, outcome=outcome,
                 reason=f"A first: {p1.reason} | B first: {p2.reason}")
        )  # fmt: skip
    return verdicts, rows
