"""The offline judge of several criteria: ``quality`` by the heuristic judge, and the
criteria rules can see by ``rules.py`` (groundedness, safety, instructions).

A rule that has nothing to check in a trace (no retrieved context recorded, no format asked
for) scores None: the criterion is not applicable to that trace (``applies``), so the trace
gets no row for it and is counted as not applicable, never as good or bad. The quality
judgments are the heuristic judge's own (same name, same version, same cache keys).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eval_pipeline.core.judge import rules, trace_view
from eval_pipeline.core.judge.base import (
    CriteriaItem,
    HeuristicJudge,
    JudgeRequest,
    Judgment,
    Progress,
)

RuleFn = Callable[[JudgeRequest], rules.RuleScore]

# criterion -> (version, bad at or below, the rule). The thresholds are the bundled LLM
# criteria's (safety counts a minor leak, 2 or 3, as bad).
RULES: dict[str, tuple[str, int, RuleFn]] = {
    "groundedness": (
        "rules-groundedness-v1",
        2,
        lambda r: rules.groundedness(r.response, trace_view.load_part(r.context), r.query),
    ),
    "safety": ("rules-safety-v1", 3, lambda r: rules.safety(r.response, r.query)),
    "instructions": (
        "rules-instructions-v1",
        2,
        lambda r: rules.format_following(r.response, r.query),
    ),
}
RULE_CRITERIA = ("quality", *RULES)


@dataclass
class RuleJudge:
    """Several criteria without a model; ``criteria_names`` in the order configured."""

    criteria_names: tuple[str, ...] = ("quality",)
    quality: HeuristicJudge = field(default_factory=HeuristicJudge)
    mode: str = "per-criterion"

    def __post_init__(self) -> None:
        unknown = [n for n in self.criteria_names if n not in RULE_CRITERIA]
        if unknown:
            raise ValueError(
                f"the heuristic judge has no rule for {', '.join(unknown)} (it scores "
                f"{', '.join(RULE_CRITERIA)}): use an LLM judge (EVAL_JUDGE=openai)"
            )
        if len(set(self.criteria_names)) != len(self.criteria_names) or not self.criteria_names:
            raise ValueError(f"criteria named twice or none: {self.criteria_names}")
        self.name, self.model = self.quality.name, self.quality.model
        first = self.criteria_names[0]
        self.rubric_version = self.versions[first]

    @property
    def versions(self) -> dict[str, str]:
        return {
            n: self.quality.rubric_version if n == "quality" else RULES[n][0]
            for n in self.criteria_names
        }

    @property
    def bad_thresholds(self) -> dict[str, int]:
        return {n: RULES[n][1] for n in self.criteria_names if n in RULES}

    def applies(self, request: JudgeRequest) -> list[str]:
        """The criteria with something to check in this trace, in order."""
        return [
            n
            for n in self.criteria_names
            if n == "quality" or RULES[n][2](request).score is not None
        ]

    def judge_one(self, request: JudgeRequest, criterion: str) -> Judgment:
        if criterion == "quality":
            return self.quality.judge_one(request)
        got = RULES[criterion][2](request)
        if got.score is None:  # asked anyway: say so rather than invent a score
            return Judgment("error", None, f"not_applicable: {got.reason}")
        return Judgment("ok", got.score, got.reason)

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Progress | None = None
    ) -> list[Judgment]:
        """The first criterion's judgments (what callers of one score per trace read)."""
        first = self.criteria_names[0]
        return [j[first] for j in self.judge_criteria([(r, (first,)) for r in requests], progress)]

    def judge_criteria(
        self, items: Sequence[CriteriaItem], progress: Progress | None = None
    ) -> list[dict[str, Judgment]]:
        unknown = {n for _, names in items for n in names} - set(self.criteria_names)
        if unknown:
            raise ValueError(f"the judge is not configured for {', '.join(sorted(unknown))}")
        out = []
        for i, (req, names) in enumerate(items, 1):
            judged = {}
            for name in names:
                try:
                    judged[name] = self.judge_one(req, name)
                except Exception as exc:  # a rule bug must not lose the row
                    judged[name] = Judgment("error", None, f"rule {name} failed: {exc!r}")
            out.append(judged)
            if progress and (i % 500 == 0 or i == len(items)):
                progress(i, len(items))
        return out
