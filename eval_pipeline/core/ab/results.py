"""What an A/B run produces: per-case scores, per-challenger comparisons, the run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from eval_pipeline.core.ab import stats as ab_stats
from eval_pipeline.core.ab.variants import Variant
from eval_pipeline.core.judge.agreement import TrustStatus
from eval_pipeline.core.judge.base import Judgment

# Cases graded by the judge are scored 1-5 ("scores"); every other grader is pass/fail.
JUDGE_GRADER = "judge"

Family = Literal["scores", "pass_fail"]
State = Literal["ok", "run_error", "judge_error", "grader_error"]


@dataclass
class CaseScore:
    case_id: str
    variant: str
    family: Family
    state: State
    output: str | None
    score: float | None  # 1-5, or 1.0/0.0 for pass/fail
    passed: bool | None
    reason: str
    judgment_key: str | None = None
    latency_ms: float | None = None
    criterion: str | None = None  # set when the run judges several criteria


@dataclass
class Change:
    case_id: str
    family: Family
    a: float
    b: float
    delta: float
    reason_a: str
    reason_b: str
    criterion: str | None = None


@dataclass
class VariantReport:
    """One challenger against the baseline."""

    variant: str
    baseline: str
    scores: ab_stats.ScoreComparison | None
    pass_fail: ab_stats.PassFailComparison | None
    pairwise: ab_stats.PairwiseComparison | None
    excluded: dict[str, int]  # why cases dropped out of this comparison -> count
    changes: list[Change]
    verdict: str = ab_stats.INCONCLUSIVE
    # Per criterion, when the run judges several (``scores`` is then the judge's first
    # criterion's comparison, or None if no case is judged on it); empty otherwise.
    criteria: dict[str, ab_stats.ScoreComparison] = field(default_factory=dict)


@dataclass
class ABResult:
    run_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    cases_file: str | None
    cases_version: str | None
    n_cases: int
    variants: list[Variant]
    judge_name: str
    judge_model: str | None
    rubric_version: str
    pairwise_judge: str | None
    min_effect: float
    alpha: float
    seed: int
    case_scores: list[CaseScore]
    reports: list[VariantReport]
    pairwise_rows: list[dict[str, Any]] = field(default_factory=list)
    new_judgments: list[tuple[str, Judgment]] = field(default_factory=list)
    run_errors: dict[str, int] = field(default_factory=dict)  # per variant
    judge_versions: dict[str, str] = field(default_factory=dict)  # criterion -> version
    judgment_criteria: dict[str, str] = field(default_factory=dict)  # judgment key -> criterion
    # The scoring judge's trust status (None: not looked up); it never changes the verdict.
    judge_trust: TrustStatus | None = None
    # What the scoring cost the judge's daily budget (its "ab" line in judge_spend); the
    # pairwise judge's comparisons are not counted there.
    judge_calls: int = 0
    judge_cost: float | None = None

    @property
    def baseline(self) -> str:
        return self.variants[0].name

    @property
    def verdict(self) -> str:
        return self.reports[0].verdict if self.reports else ab_stats.INCONCLUSIVE
