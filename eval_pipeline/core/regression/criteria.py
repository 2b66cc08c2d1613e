"""Judge criteria in the golden set: a judge-graded case may name the criteria it is judged
on (``"criteria": ["correctness", "safety"]``); each is scored on its own and the case
passes only when every one of them reaches its threshold.

A case without ``criteria`` is judged as before (one score, the judge's first criterion).
The case's expected answer is the judge's reference, which is what ``correctness`` needs;
a criterion needing an input a golden case cannot carry (retrieved context, tool calls) is
refused when the golden file is loaded, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval_pipeline.core.judge.base import JudgeRequest, judge_criteria, judge_versions
from eval_pipeline.core.judge.criteria import load_criterion
from eval_pipeline.core.judge.rubric import RubricError
from eval_pipeline.core.regression.case import Case, input_text, reference_text

DEFAULT_THRESHOLD = 4
# What a golden case can give the judge: the question, the answer, the expected answer.
CASE_INPUTS = frozenset({"query", "response", "reference"})


@dataclass(frozen=True)
class CriterionGrade:
    criterion: str
    outcome: str  # pass | fail | error
    score: int | None
    threshold: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "score": self.score,
            "threshold": self.threshold,
            "reason": self.reason,
        }


def threshold_for(params: dict[str, Any], criterion: str) -> float:
    """A criterion's pass threshold: ``threshold`` is one number for all, or a mapping by
    criterion name (criteria it omits take the default)."""
    t = params.get("threshold", DEFAULT_THRESHOLD)
    return t.get(criterion, DEFAULT_THRESHOLD) if isinstance(t, dict) else t


def _valid_threshold(t: Any) -> bool:
    return isinstance(t, int | float) and not isinstance(t, bool) and 1 <= t <= 5


def validate(case: Case, params: dict[str, Any]) -> None:
    """Raise ValueError naming what is wrong with a judge case's criteria and thresholds."""
    t = params.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(t, dict):
        if not case.criteria:
            raise ValueError("judge grader: a threshold per criterion needs a criteria list")
        unknown = set(t) - set(case.criteria)
        if unknown:
            raise ValueError(f"judge grader: threshold for unnamed criteria {sorted(unknown)}")
        if not all(_valid_threshold(v) for v in t.values()):
            raise ValueError("judge grader: every threshold must be a number from 1 to 5")
    elif not _valid_threshold(t):
        raise ValueError("judge grader: threshold must be a number from 1 to 5")
    for name in case.criteria:
        try:
            crit = load_criterion(name)
        except RubricError as exc:
            raise ValueError(f"criteria: {exc}") from None
        missing = [n for n in crit.needs if n not in CASE_INPUTS]
        if missing:
            raise ValueError(
                f"criteria: {name!r} needs {', '.join(missing)}, which a golden case cannot carry"
            )
        if "reference" in crit.needs and case.expected is None:
            raise ValueError(f"criteria: {name!r} needs the expected answer (expected is null)")


def parse_names(value: Any) -> tuple[str, ...]:
    """The ``criteria`` field of a golden case: a non-empty list of distinct names."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError("criteria must be a non-empty list of criterion names")
    names = tuple(v.strip() for v in value)
    if len(set(names)) != len(names):
        raise ValueError(f"criteria named twice: {', '.join(names)}")
    return names


def needed(cases: Sequence[Case]) -> list[str]:
    """Every criterion the judge cases name, in first-seen order."""
    return list(dict.fromkeys(n for c in cases if c.grader_type == "judge" for n in c.criteria))


def missing_from(judge: Any, names: Sequence[str]) -> list[str]:
    """The criteria a judge is not configured for."""
    have = judge_versions(judge)
    return [n for n in names if n not in have]


def grade_criteria(judge: Any, items: Sequence[tuple[Case, str]]) -> list[list[CriterionGrade]]:
    """Per (case, answer), a grade per criterion the case names, judged with the case's
    expected answer as the reference."""
    requests = [
        (
            JudgeRequest(
                query=input_text(case.input),
                response=output,
                reference=reference_text(case.expected),
            ),
            case.criteria,
        )
        for case, output in items
    ]
    judged = judge_criteria(judge, requests)
    out = []
    for (case, _), by_name in zip(items, judged, strict=True):
        grades = []
        for name in case.criteria:
            t = threshold_for(case.grader_params, name)
            j = by_name.get(name)
            if j is None or j.state != "ok" or j.score is None:
                why = "not judged" if j is None else f"{j.state}: {j.reason}"
                grades.append(CriterionGrade(name, "error", None, t, f"no score ({why})"))
            else:
                ok = j.score >= t
                sign = ">=" if ok else "<"
                grades.append(
                    CriterionGrade(
                        name,
                        "pass" if ok else "fail",
                        j.score,
                        t,
                        f"{j.score} {sign} {t}: {j.reason}",
                    )
                )
        out.append(grades)
    return out


def combine(grades: Sequence[CriterionGrade]) -> tuple[str, str]:
    """A case's outcome and reason from its criteria: any failure fails it (an error alone
    is an error), and the reason names the criteria that did not pass."""
    failed = [g for g in grades if g.outcome == "fail"]
    errors = [g for g in grades if g.outcome == "error"]
    if failed:
        return "fail", "; ".join(f"{g.criterion} failed: {g.reason}" for g in failed + errors)
    if errors:
        return "error", "; ".join(f"{g.criterion}: {g.reason}" for g in errors)
    return "pass", "; ".join(f"{g.criterion} {g.score}" for g in grades)


@dataclass(frozen=True)
class CriterionSummary:
    criterion: str
    n: int
    passed: int
    failed: int
    errors: int
    mean_score: float | None

    @property
    def pass_rate(self) -> float:
        return self.passed / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "pass_rate": self.pass_rate,
            "mean_score": self.mean_score,
        }


def summarise(per_case: Sequence[dict[str, dict[str, Any]]]) -> list[CriterionSummary]:
    """Per criterion, over the cases that name it: outcomes and the mean score."""
    names = list(dict.fromkeys(n for c in per_case for n in c))
    out = []
    for name in names:
        rows = [c[name] for c in per_case if name in c]
        scores = [r["score"] for r in rows if r["score"] is not None]
        out.append(
            CriterionSummary(
                criterion=name,
                n=len(rows),
                passed=sum(r["outcome"] == "pass" for r in rows),
                failed=sum(r["outcome"] == "fail" for r in rows),
                errors=sum(r["outcome"] == "error" for r in rows),
                mean_score=sum(scores) / len(scores) if scores else None,
            )
        )
    return out
