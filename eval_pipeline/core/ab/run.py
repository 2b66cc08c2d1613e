"""A/B prompt comparison: run variants on the same cases, score every answer, compare.

- Every variant runs on every case, concurrently (one thread per variant; each runner is
  concurrent inside itself).
- Open-ended cases (grader ``judge``) are scored 1-5 by the judge, with the case's expected
  answer as the reference; rules-graded cases (exact, contains, regex, json, numeric,
  custom) are pass/fail.
- A case whose call, judgment or grading failed for either side drops out of both arms of
  that comparison and is counted: a failure is never scored as zero.
- The first variant is the baseline; each other variant is compared with it, and every
  test of the run shares one Holm correction (see :mod:`eval_pipeline.core.ab.stats`).
- Optional pairwise judging (:mod:`eval_pipeline.core.ab.pairwise`): the judge sees both
  answers, in both orders.

:class:`ABSpec` is one run's configuration, built by the CLI and the Dagster asset alike;
:func:`run_ab` loads its cases, builds its variants and compares them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eval_pipeline.core.ab import criteria as ab_criteria
from eval_pipeline.core.ab import stats as ab_stats
from eval_pipeline.core.ab.pairwise import (
    PairwiseJudge,
    judge_dedup,
    pairwise_judge_for,
    run_pairwise,
)
from eval_pipeline.core.ab.results import (
    JUDGE_GRADER,
    ABResult,
    CaseScore,
    Change,
    Family,
    VariantReport,
)
from eval_pipeline.core.ab.variants import (
    DEFAULT_PROMPT_KWARG,
    Variant,
    variants_from_prompts,
    variants_from_targets,
)
from eval_pipeline.core.judge.base import (
    Judge,
    JudgeRequest,
    Judgment,
    judge_versions,
    judgment_key,
)
from eval_pipeline.core.judge.spend import SpendMeter
from eval_pipeline.core.regression import graders
from eval_pipeline.core.regression.case import Case, input_text, reference_text
from eval_pipeline.core.regression.cases import golden_version, load_cases
from eval_pipeline.core.regression.runners import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    Call,
    RunnerConfigError,
)

# With nothing else configured, prompt files run on the demo app.
DEFAULT_TARGET = "eval_pipeline.demo.app:answer"
DEFAULT_SEED = 0  # of the bootstrap: the same run gives the same intervals
DEFAULT_TOP_CHANGES = 10
DEFAULT_N_RESAMPLES = 9999

RunProgress = Callable[[str], None]


class ABSetupError(ValueError):
    """The run cannot start: the variants cannot be built (bad prompt file, bad target)."""


@dataclass(frozen=True)
class ABSpec:
    """One A/B run's configuration, from the CLI's flags or the Dagster config.

    The variants are prompt files run on ``target`` (``a_prompt``, ``b_prompt``,
    ``other_prompts``) or runner targets (``a_target``, ``b_target``, ``other_targets``),
    not both; the first is the baseline.
    """

    cases_path: str | None = None
    a_prompt: str | None = None
    b_prompt: str | None = None
    other_prompts: tuple[str, ...] = ()
    target: str = DEFAULT_TARGET  # what prompt files run on: a base URL or module:function
    prompt_arg: str = DEFAULT_PROMPT_KWARG  # callable keyword that gets the prompt path
    a_target: str | None = None
    b_target: str | None = None
    other_targets: tuple[str, ...] = ()
    model: str | None = None  # for HTTP targets
    api_key_env: str = DEFAULT_API_KEY_ENV  # the variable's name, never the key
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT  # seconds per call
    min_effect: float = ab_stats.DEFAULT_MIN_EFFECT  # practical floor, fraction of the range
    alpha: float = ab_stats.ALPHA
    seed: int = DEFAULT_SEED
    pairwise: bool = False
    top_changes: int = DEFAULT_TOP_CHANGES
    n_resamples: int = DEFAULT_N_RESAMPLES

    def __post_init__(self) -> None:
        ab_stats.floor_points(self.min_effect, 0, 1)  # raises on a floor outside (0, 1)
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ABSpec:
        """The spec from a mapping with the field names; other keys are ignored, None means
        the default. Raises ValueError for a value out of range."""
        names = cls.__dataclass_fields__.keys()
        values = {k: v for k, v in options.items() if k in names and v is not None}
        for key in ("other_prompts", "other_targets"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def prompts(self) -> list[str]:
        return [p for p in (self.a_prompt, self.b_prompt) if p] + list(self.other_prompts)

    @property
    def targets(self) -> list[str]:
        return [t for t in (self.a_target, self.b_target) if t] + list(self.other_targets)

    def variants(self) -> list[Variant]:
        """Build the variants; raises :class:`ABSetupError` when they cannot be."""
        prompts, targets = self.prompts, self.targets
        try:
            if prompts and targets:
                raise ValueError("give prompt files or runner targets, not both")
            if targets:
                return variants_from_targets(
                    targets, model=self.model, concurrency=self.concurrency, timeout=self.timeout
                )
            if not (self.a_prompt and self.b_prompt):
                raise ValueError(
                    "need an A and a B prompt file (--a-prompt, --b-prompt), "
                    "or an A and a B target (--a-target, --b-target)"
                )
            return variants_from_prompts(
                self.target,
                prompts,
                model=self.model,
                prompt_kwarg=self.prompt_arg,
                concurrency=self.concurrency,
                timeout=self.timeout,
                api_key_env=self.api_key_env,
            )
        except (ValueError, RunnerConfigError) as exc:
            raise ABSetupError(str(exc)) from exc


def run_ab(
    spec: ABSpec,
    judge: Judge,
    *,
    pairwise_judge: PairwiseJudge | None = None,
    log: RunProgress | None = None,
) -> ABResult:
    """Load the cases, build the variants (before any call), run, score and compare.

    Raises ``GoldenFileError`` for a bad case file and :class:`ABSetupError` when the run
    cannot start; no store access.
    """
    if not spec.cases_path:
        raise ABSetupError("no case file given")
    cases = load_cases(spec.cases_path)
    variants = spec.variants()
    if log:
        names = ", ".join(f"{v.name}={v.label}" for v in variants)
        log(f"{len(cases)} cases, variants {names}, judge {judge.name}")
    return compare_variants(cases, variants, judge, spec, pairwise_judge=pairwise_judge, log=log)


def run_variants(
    cases: Sequence[Case], variants: Sequence[Variant], log: RunProgress | None = None
) -> dict[str, list[Call]]:
    """Every variant on every case, the variants concurrently. One Call per case."""
    inputs = [c.input for c in cases]

    def one(v: Variant) -> list[Call]:
        calls = v.runner.run_many(inputs)
        if log:
            errors = sum(1 for c in calls if not c.ok)
            log(f"variant {v.name} ({v.label}): {len(calls)} calls, {errors} errors")
        return calls

    with ThreadPoolExecutor(max_workers=len(variants)) as pool:
        results = list(pool.map(one, variants))
    return {v.name: calls for v, calls in zip(variants, results, strict=True)}


def score_calls(
    cases: Sequence[Case], calls: dict[str, list[Call]], judge: Judge
) -> tuple[list[CaseScore], list[tuple[str, Judgment]], dict[str, str]]:
    """Score every answer: judge cases 1-5 (reference = expected), per criterion when the
    run judges several, rules cases pass/fail. Also: the fresh judgments by key, and each
    key's criterion (empty with one criterion)."""
    out: list[CaseScore] = []
    judge_items: list[tuple[int, Case, JudgeRequest]] = []
    rule_items: list[tuple[int, Case, str]] = []
    for vname, vcalls in calls.items():
        for case, call in zip(cases, vcalls, strict=True):
            family: Family = "scores" if case.grader_type == JUDGE_GRADER else "pass_fail"
            row = CaseScore(
                case.id, vname, family, "run_error", call.output, None, None,
                call.error or "", latency_ms=call.latency_ms,
            )  # fmt: skip
            out.append(row)
            if not call.ok or call.output is None:
                row.reason = f"the call failed: {call.error}"
                continue
            if family == "scores":
                req = JudgeRequest(
                    query=input_text(case.input),
                    response=call.output,
                    reference=reference_text(case.expected),
                )
                judge_items.append((len(out) - 1, case, req))
            else:
                rule_items.append((len(out) - 1, case, call.output))
    new: list[tuple[str, Judgment]] = []
    key_criterion: dict[str, str] = {}
    multi = ab_criteria.is_multi(judge, cases)
    if judge_items and not multi:
        reqs = [r for _, _, r in judge_items]
        judged = judge_dedup(judge, reqs)
        seen = set()
        for (i, _, req), j in zip(judge_items, judged, strict=True):
            row = out[i]
            row.judgment_key = judgment_key(judge, req)
            if row.judgment_key not in seen:
                seen.add(row.judgment_key)
                new.append((row.judgment_key, j))
            if j.state == "ok":
                row.state, row.score, row.reason = "ok", float(j.score), j.reason
            else:
                row.state = "judge_error"
                row.reason = f"judge {judge.name} gave no score ({j.state}): {j.reason}"
    if rule_items:
        grades = graders.grade_many([(c, o) for _, c, o in rule_items])
        for (i, _, _), g in zip(rule_items, grades, strict=True):
            row = out[i]
            if g.outcome == "error":
                row.state, row.reason = "grader_error", g.reason
            else:
                row.state, row.passed, row.reason = "ok", g.passed, g.reason
                row.score = 1.0 if g.passed else 0.0
    if judge_items and multi:
        # A failed call stays one row (it is excluded from every criterion alike).
        judged_ok = [(out[i], case, req) for i, case, req in judge_items]
        per_row, new, key_criterion = ab_criteria.score_by_criterion(judge, judged_ok)
        expanded = dict(zip((i for i, _, _ in judge_items), per_row, strict=True))
        out = [r for i, row in enumerate(out) for r in expanded.get(i, [row])]
    return out, new, key_criterion


def _pairs(
    rows: Sequence[CaseScore], base: str, other: str, family: Family, criterion: str | None = None
) -> tuple[list[tuple[CaseScore, CaseScore]], dict[str, int]]:
    """The paired rows of one family (and criterion); a failed call (no criterion) counts
    in every criterion."""
    by = {
        (r.case_id, r.variant): r
        for r in rows
        if r.family == family and r.criterion in (criterion, None)
    }
    ids = sorted({cid for cid, _ in by})
    pairs, excluded = [], {}
    for cid in ids:
        a, b = by.get((cid, base)), by.get((cid, other))
        if a is None or b is None:
            continue
        if a.state == "ok" and b.state == "ok":
            pairs.append((a, b))
            continue
        # Pairwise exclusion: the case leaves both arms; count the reason once per case.
        for r in (a, b):
            if r.state != "ok":
                excluded[r.state] = excluded.get(r.state, 0) + 1
                break
    return pairs, excluded


def _largest_changes(
    pairs: Sequence[tuple[CaseScore, CaseScore]], family: Family, top: int
) -> list[Change]:
    changes = [
        Change(
            a.case_id,
            family,
            a.score,
            b.score,
            b.score - a.score,
            a.reason,
            b.reason,
            a.criterion,
        )  # fmt: skip
        for a, b in pairs
        if b.score != a.score
    ]
    changes.sort(key=lambda c: (-abs(c.delta), c.case_id))
    return changes[:top]


def _score_tests(r: VariantReport) -> list[ab_stats.ScoreComparison]:
    if r.criteria:
        return list(r.criteria.values())
    return [r.scores] if r.scores is not None else []


def _headline_tests(r: VariantReport) -> list:
    return [*_score_tests(r), *([r.pass_fail] if r.pass_fail is not None else [])]


def compare_variants(
    cases: Sequence[Case],
    variants: Sequence[Variant],
    judge: Judge,
    spec: ABSpec | None = None,
    *,
    pairwise_judge: PairwiseJudge | None = None,
    log: RunProgress | None = None,
) -> ABResult:
    """Run, score and compare cases already loaded, with the analysis settings of ``spec``
    (its variant fields are not used). The first variant is the baseline."""
    spec = spec or ABSpec()
    if len(variants) < 2:
        raise ValueError("an A/B test needs at least two variants")
    if not cases:
        raise ValueError("an A/B test needs at least one case")
    try:  # before any call: a setup error, not a result
        ab_criteria.check_configured(judge, cases)
    except ValueError as exc:
        raise ABSetupError(str(exc)) from exc
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    calls = run_variants(cases, variants, log)
    meter = SpendMeter(judge)  # the run's own line in the judge's daily ledger
    case_scores, new_judgments, judgment_criteria = score_calls(cases, calls, meter)  # type: ignore[arg-type]
    criteria = ab_criteria.order(judge, case_scores)
    primary = next(iter(judge_versions(judge)))
    base = variants[0].name
    pjudge = (pairwise_judge or pairwise_judge_for(judge)) if spec.pairwise else None

    reports: list[VariantReport] = []
    pairwise_rows: list[dict[str, Any]] = []
    for v in variants[1:]:
        s_pairs, s_excl = _pairs(case_scores, base, v.name, "scores")
        p_pairs, p_excl = _pairs(case_scores, base, v.name, "pass_fail")
        excluded = {f"scores/{k}": n for k, n in s_excl.items()}
        excluded.update({f"pass_fail/{k}": n for k, n in p_excl.items()})
        has_scores = any(r.family == "scores" for r in case_scores)
        has_rules = any(r.family == "pass_fail" for r in case_scores)

        def scores(pairs, excl):
            return ab_stats.compare_scores(
                [a.score for a, _ in pairs],
                [b.score for _, b in pairs],
                min_effect=spec.min_effect,
                alpha=spec.alpha,
                seed=spec.seed,
                n_resamples=spec.n_resamples,
                n_excluded=sum(excl.values()),
            )

        by_criterion, crit_pairs = {}, {}
        for name in criteria:
            c_pairs, c_excl = _pairs(case_scores, base, v.name, "scores", name)
            by_criterion[name], crit_pairs[name] = scores(c_pairs, c_excl), c_pairs
            excluded.update({f"scores[{name}]/{k}": n for k, n in c_excl.items()})
        if criteria:
            excluded = {k: n for k, n in excluded.items() if not k.startswith("scores/")}
            sc = by_criterion.get(primary)
        else:
            sc = scores(s_pairs, s_excl) if has_scores else None
        pf = (
            ab_stats.compare_pass_fail(
                [a.passed for a, _ in p_pairs],
                [b.passed for _, b in p_pairs],
                min_effect=spec.min_effect,
                alpha=spec.alpha,
                n_excluded=sum(p_excl.values()),
            )
            if has_rules
            else None
        )
        pw = None
        if pjudge is not None and has_scores:
            verdicts, rows = run_pairwise(cases, calls, base, v.name, pjudge)
            pw = ab_stats.aggregate_pairwise(
                verdicts,
                min_effect=spec.min_effect,
                alpha=spec.alpha,
                seed=spec.seed,
                n_resamples=spec.n_resamples,
            )
            pairwise_rows.extend(rows)
        score_changes = [
            c for name in criteria for c in _largest_changes(crit_pairs[name], "scores", 10**9)
        ] or _largest_changes(s_pairs, "scores", spec.top_changes)
        score_changes.sort(key=lambda c: (-abs(c.delta), c.case_id, c.criterion or ""))
        changes = score_changes[: spec.top_changes] + _largest_changes(
            p_pairs, "pass_fail", spec.top_changes
        )
        reports.append(
            VariantReport(v.name, base, sc, pf, pw, excluded, changes, criteria=by_criterion)
        )

    # One Holm family for every primary test of the run: all challengers, both families,
    # and with several criteria every criterion's score test.
    s_list = [c for r in reports for c in _score_tests(r)]
    p_list = [r.pass_fail for r in reports if r.pass_fail is not None]
    s_adj, p_adj = ab_stats.holm_adjust(s_list, p_list)
    s_it, p_it = iter(s_adj), iter(p_adj)
    for r in reports:
        if r.criteria:
            r.criteria = {name: next(s_it) for name in r.criteria}
            r.scores = r.criteria.get(primary)
        elif r.scores is not None:
            r.scores = next(s_it)
        if r.pass_fail is not None:
            r.pass_fail = next(p_it)
        # The pairwise verdict is a second opinion on the same answers, shown beside the
        # headline but not part of it (it would spend the error budget twice).
        r.verdict = ab_stats.combine_verdicts([c.verdict for c in _headline_tests(r)])
    run_errors = {v: sum(1 for c in calls[v] if not c.ok) for v in calls}
    return ABResult(
        run_id=uuid.uuid4().hex[:16],
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        cases_file=spec.cases_path,
        cases_version=golden_version(cases),
        n_cases=len(cases),
        variants=list(variants),
        judge_name=judge.name,
        judge_model=judge.model,
        rubric_version=judge.rubric_version,
        judge_versions=judge_versions(judge),
        judgment_criteria=judgment_criteria,
        pairwise_judge=(getattr(pjudge, "pairwise_name", None) or pjudge.name) if pjudge else None,
        min_effect=spec.min_effect,
        alpha=spec.alpha,
        seed=spec.seed,
        case_scores=case_scores,
        reports=reports,
        pairwise_rows=pairwise_rows,
        new_judgments=new_judgments,
        run_errors=run_errors,
        judge_calls=meter.calls,
        judge_cost=meter.cost(),
    )
