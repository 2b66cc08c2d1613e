"""Several judge criteria in an A/B run: every judge-graded answer is scored on each
criterion it is judged on, and each criterion is its own paired comparison.

A case's criteria are the ones it names (``"criteria": [...]`` in the cases file), else
the judge's configured criteria that apply to it (those whose inputs it has). With one
criterion configured and none named, nothing here runs and the A/B run is what it always
was. Every criterion's comparison of every challenger joins the run's one Holm family
(:func:`eval_pipeline.core.ab.stats.holm_adjust`), so looking at more criteria does not
buy more false wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from eval_pipeline.core.ab.results import JUDGE_GRADER, CaseScore
from eval_pipeline.core.judge.base import (
    Judge,
    JudgeRequest,
    Judgment,
    applicable,
    judge_criteria,
    judge_versions,
    judgment_key,
)
from eval_pipeline.core.regression.case import Case


def is_multi(judge: Judge, cases: Sequence[Case]) -> bool:
    """Whether the run judges more than the judge's one criterion."""
    judged = [c for c in cases if c.grader_type == JUDGE_GRADER]
    return len(judge_versions(judge)) > 1 or any(c.criteria for c in judged)


def criteria_of(judge: Judge, case: Case, request: JudgeRequest) -> tuple[str, ...]:
    return case.criteria or tuple(applicable(judge, request))


def check_configured(judge: Judge, cases: Sequence[Case]) -> None:
    """Raise ValueError when cases name criteria the judge is not configured for."""
    have = judge_versions(judge)
    named = {n for c in cases if c.grader_type == JUDGE_GRADER for n in c.criteria}
    missing = sorted(named - set(have))
    if missing:
        raise ValueError(
            f"the cases name criteria the judge is not configured for: {', '.join(missing)} "
            "(add them to the judge's criteria, EVAL_JUDGE_CRITERIA)"
        )


def order(judge: Judge, rows: Sequence[CaseScore]) -> list[str]:
    """The criteria scored in a run: the judge's order, then any others the cases named."""
    seen = {r.criterion for r in rows if r.criterion}
    return [n for n in judge_versions(judge) if n in seen] + sorted(
        seen - set(judge_versions(judge))
    )


def score_by_criterion(
    judge: Judge, items: Sequence[tuple[CaseScore, Case, JudgeRequest]]
) -> tuple[list[list[CaseScore]], list[tuple[str, Judgment]], dict[str, str]]:
    """Per placeholder row, one row per criterion it is judged on; the fresh judgments by
    key, and each key's criterion (for the judgments cache). Identical requests (A and B
    often answer alike) are judged once."""
    versions = judge_versions(judge)
    names = [criteria_of(judge, case, req) for _, case, req in items]
    unique: dict[tuple, tuple[JudgeRequest, tuple[str, ...]]] = {}
    for (_, _, req), ns in zip(items, names, strict=True):
        unique.setdefault((req.query, req.response, req.reference, ns), (req, ns))
    judged = dict(zip(unique, judge_criteria(judge, list(unique.values())), strict=True))
    out: list[list[CaseScore]] = []
    fresh: dict[str, Judgment] = {}
    key_criterion: dict[str, str] = {}
    for (row, _, req), ns in zip(items, names, strict=True):
        by_name = judged[(req.query, req.response, req.reference, ns)]
        rows = []
        for name in ns:
            j = by_name.get(name) or Judgment("error", None, "not judged")
            key = judgment_key(judge, req, versions.get(name))
            fresh.setdefault(key, j)
            key_criterion[key] = name
            r = replace(row, criterion=name, judgment_key=key)
            if j.state == "ok" and j.score is not None:
                r.state, r.score, r.reason = "ok", float(j.score), j.reason
            else:
                r.state = "judge_error"
                r.reason = f"judge {judge.name} gave no {name} score ({j.state}): {j.reason}"
            rows.append(r)
        out.append(rows)
    return out, list(fresh.items()), key_criterion
