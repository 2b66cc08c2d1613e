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
- Optional pairwise judging: the judge sees both answers, in both orders.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import pandas as pd

from eval_pipeline.core.ab import stats as ab_stats
from eval_pipeline.core.judge.base import (
    Judge,
    JudgeRequest,
    Judgment,
    PairPick,
    PairRequest,
    judgment_key,
)
from eval_pipeline.core.judge.cache import store_judgments
from eval_pipeline.core.regression import graders
from eval_pipeline.core.regression.case import Case, input_text
from eval_pipeline.core.regression.runners import (
    DEFAULT_API_KEY_ENV,
    Call,
    Runner,
    runner_from_target,
)

JUDGE_GRADER = "judge"
DEFAULT_PROMPT_KWARG = "prompt_path"
VARIANT_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

Family = Literal["scores", "pass_fail"]
State = Literal["ok", "run_error", "judge_error", "grader_error"]


# --- variants ---------------------------------------------------------------------------


@dataclass
class Variant:
    name: str  # "A" (the baseline), "B", ...
    runner: Runner
    label: str  # what a person recognises: the prompt file name or the target
    prompt_file: str | None = None
    prompt_sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "runner_kind": self.runner.kind,
            "target": self.runner.target,
            "prompt_file": self.prompt_file,
            "prompt_sha256": self.prompt_sha256,
        }


def variants_from_prompts(
    target: str,
    prompt_files: Sequence[str | Path],
    *,
    model: str | None = None,
    prompt_kwarg: str = DEFAULT_PROMPT_KWARG,
    concurrency: int = 8,
    timeout: float = 30.0,
    api_key_env: str = DEFAULT_API_KEY_ENV,
) -> list[Variant]:
    """One variant per prompt file, all against the same target.

    An HTTP target gets the file's text as its system prompt; a callable target gets the
    file's path as the keyword argument ``prompt_kwarg`` (``fn(input, prompt_path=...)``,
    as the demo app takes it).
    """
    if len(prompt_files) < 2:
        raise ValueError("an A/B test needs at least two prompt files")
    out = []
    for name, path in zip(VARIANT_NAMES, prompt_files, strict=False):
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read prompt file {path}: {exc.strerror or exc}") from exc
        if target.startswith(("http://", "https://")):
            runner = runner_from_target(
                target,
                model=model,
                system_prompt_file=path,
                concurrency=concurrency,
                timeout=timeout,
                api_key_env=api_key_env,
            )
        else:
            runner = runner_from_target(
                target,
                kwargs={prompt_kwarg: str(path)},
                concurrency=concurrency,
                timeout=timeout,
            )
        out.append(
            Variant(
                name,
                runner,
                path.name,
                str(path),
                hashlib.sha256(text.encode("utf-8")).hexdigest(),
            )
        )
    return out


def variants_from_targets(
    targets: Sequence[str],
    *,
    model: str | None = None,
    concurrency: int = 8,
    timeout: float = 30.0,
) -> list[Variant]:
    """One variant per runner target (an http(s) base URL or ``module:function``)."""
    if len(targets) < 2:
        raise ValueError("an A/B test needs at least two targets")
    return [
        Variant(
            name, runner_from_target(t, model=model, concurrency=concurrency, timeout=timeout), t
        )
        for name, t in zip(VARIANT_NAMES, targets, strict=False)
    ]


# --- pairwise judges --------------------------------------------------------------------


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
        judged = _judge_dedup(self.judge, singles)
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


# --- results ----------------------------------------------------------------------------


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


@dataclass
class Change:
    case_id: str
    family: Family
    a: float
    b: float
    delta: float
    reason_a: str
    reason_b: str


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

    @property
    def baseline(self) -> str:
        return self.variants[0].name

    @property
    def verdict(self) -> str:
        return self.reports[0].verdict if self.reports else ab_stats.INCONCLUSIVE


# --- running ----------------------------------------------------------------------------

RunProgress = Callable[[str], None]


def _judge_dedup(judge: Judge, requests: Sequence[JudgeRequest]) -> list[Judgment]:
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
) -> tuple[list[CaseScore], list[tuple[str, Judgment]]]:
    """Score every answer: judge cases 1-5 (reference = expected), rules cases pass/fail."""
    out: list[CaseScore] = []
    judge_items: list[tuple[int, JudgeRequest]] = []
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
                    reference=graders.reference_text(case.expected),
                )
                judge_items.append((len(out) - 1, req))
            else:
                rule_items.append((len(out) - 1, case, call.output))
    new: list[tuple[str, Judgment]] = []
    if judge_items:
        reqs = [r for _, r in judge_items]
        judged = _judge_dedup(judge, reqs)
        seen = set()
        for (i, req), j in zip(judge_items, judged, strict=True):
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
    return out, new


def _pairs(
    rows: Sequence[CaseScore], base: str, other: str, family: Family
) -> tuple[list[tuple[CaseScore, CaseScore]], dict[str, int]]:
    by = {(r.case_id, r.variant): r for r in rows if r.family == family}
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
        Change(a.case_id, family, a.score, b.score, b.score - a.score, a.reason, b.reason)
        for a, b in pairs
        if b.score != a.score
    ]
    changes.sort(key=lambda c: (-abs(c.delta), c.case_id))
    return changes[:top]


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
            q, ref = input_text(case.input), graders.reference_text(case.expected)
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


def run_ab(
    cases: Sequence[Case],
    variants: Sequence[Variant],
    judge: Judge,
    *,
    cases_file: str | None = None,
    cases_version: str | None = None,
    min_effect: float = ab_stats.DEFAULT_MIN_EFFECT,
    alpha: float = ab_stats.ALPHA,
    seed: int = 0,
    pairwise: bool = False,
    pairwise_judge: PairwiseJudge | None = None,
    top_changes: int = 10,
    n_resamples: int = 9999,
    log: RunProgress | None = None,
) -> ABResult:
    """Run, score and compare. The first variant is the baseline."""
    if len(variants) < 2:
        raise ValueError("an A/B test needs at least two variants")
    if not cases:
        raise ValueError("an A/B test needs at least one case")
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    calls = run_variants(cases, variants, log)
    case_scores, new_judgments = score_calls(cases, calls, judge)
    base = variants[0].name
    pjudge = (pairwise_judge or pairwise_judge_for(judge)) if pairwise else None

    reports: list[VariantReport] = []
    pairwise_rows: list[dict[str, Any]] = []
    for v in variants[1:]:
        s_pairs, s_excl = _pairs(case_scores, base, v.name, "scores")
        p_pairs, p_excl = _pairs(case_scores, base, v.name, "pass_fail")
        excluded = {f"scores/{k}": n for k, n in s_excl.items()}
        excluded.update({f"pass_fail/{k}": n for k, n in p_excl.items()})
        has_scores = any(r.family == "scores" for r in case_scores)
        has_rules = any(r.family == "pass_fail" for r in case_scores)
        sc = (
            ab_stats.compare_scores(
                [a.score for a, _ in s_pairs],
                [b.score for _, b in s_pairs],
                min_effect=min_effect,
                alpha=alpha,
                seed=seed,
                n_resamples=n_resamples,
                n_excluded=sum(s_excl.values()),
            )
            if has_scores
            else None
        )
        pf = (
            ab_stats.compare_pass_fail(
                [a.passed for a, _ in p_pairs],
                [b.passed for _, b in p_pairs],
                min_effect=min_effect,
                alpha=alpha,
                n_excluded=sum(p_excl.values()),
            )
            if has_rules
            else None
        )
        pw = None
        if pjudge is not None and has_scores:
            verdicts, rows = run_pairwise(cases, calls, base, v.name, pjudge)
            pw = ab_stats.aggregate_pairwise(
                verdicts, min_effect=min_effect, alpha=alpha, seed=seed, n_resamples=n_resamples
            )
            pairwise_rows.extend(rows)
        changes = _largest_changes(s_pairs, "scores", top_changes) + _largest_changes(
            p_pairs, "pass_fail", top_changes
        )
        reports.append(VariantReport(v.name, base, sc, pf, pw, excluded, changes))

    # One Holm family for every primary test of the run (all challengers, both families).
    s_list = [r.scores for r in reports if r.scores is not None]
    p_list = [r.pass_fail for r in reports if r.pass_fail is not None]
    s_adj, p_adj = ab_stats.holm_adjust(s_list, p_list)
    s_it, p_it = iter(s_adj), iter(p_adj)
    for r in reports:
        if r.scores is not None:
            r.scores = next(s_it)
        if r.pass_fail is not None:
            r.pass_fail = next(p_it)
        # The pairwise verdict is a second opinion on the same answers, shown beside the
        # headline but not part of it (it would spend the error budget twice).
        r.verdict = ab_stats.combine_verdicts(
            [c.verdict for c in (r.scores, r.pass_fail) if c is not None]
        )
    run_errors = {v: sum(1 for c in calls[v] if not c.ok) for v in calls}
    return ABResult(
        run_id=uuid.uuid4().hex[:16],
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        cases_file=cases_file,
        cases_version=cases_version,
        n_cases=len(cases),
        variants=list(variants),
        judge_name=judge.name,
        judge_model=judge.model,
        rubric_version=judge.rubric_version,
        pairwise_judge=(getattr(pjudge, "pairwise_name", None) or pjudge.name) if pjudge else None,
        min_effect=min_effect,
        alpha=alpha,
        seed=seed,
        case_scores=case_scores,
        reports=reports,
        pairwise_rows=pairwise_rows,
        new_judgments=new_judgments,
        run_errors=run_errors,
    )


# --- the report -------------------------------------------------------------------------


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _p(x: float | None) -> str:
    return "–" if x is None else (f"{x:.3g}" if x >= 1e-4 else f"{x:.1e}")


def verdict_lines(result: ABResult) -> list[str]:
    """The verdict in words with its evidence: what the CLI prints."""
    names = {v.name: v.label for v in result.variants}
    lines = []
    for r in result.reports:
        lines.append(
            f"{r.variant} ({names[r.variant]}) vs {r.baseline} ({names[r.baseline]}): "
            f"{r.verdict.upper()}"
        )
        s = r.scores
        if s is not None:
            lines.append(
                f"  judge scores 1-5 (n={s.n}, excluded {s.n_excluded}): mean {r.baseline} "
                f"{_f(s.mean_a)}, mean {r.variant} {_f(s.mean_b)}, delta {_f(s.delta, '+.2f')} "
                f"[95% CI {_f(s.ci_low, '+.2f')}, {_f(s.ci_high, '+.2f')}]"
            )
            adj = " (Holm-adjusted)" if s.n_comparisons > 1 else ""
            lines.append(
                f"  paired t-test p={_p(s.t_p_adjusted)}{adj}, Wilcoxon signed-rank "
                f"p={_p(s.w_p_adjusted)}{adj}, effect size d_z={_f(s.d_z)}, "
                f"floor {s.floor:.2f} points ({s.min_effect:.0%} of the range)"
            )
            lines.append(f"  -> {s.verdict}: {s.explanation}")
            lines.extend(f"  note: {n}" for n in s.notes)
        p = r.pass_fail
        if p is not None:
            lines.append(
                f"  rules pass/fail (n={p.n}, excluded {p.n_excluded}): pass rate {r.baseline} "
                f"{_f(p.pass_a, '.1%')}, {r.variant} {_f(p.pass_b, '.1%')}, difference "
                f"{_f(p.delta, '+.1%')} [95% CI {_f(p.ci_low, '+.1%')}, {_f(p.ci_high, '+.1%')}]"
            )
            lines.append(
                f"  McNemar exact p={_p(p.p_adjusted)} on {p.a_only + p.b_only} discordant "
                f"cases ({p.b_only} only {r.variant} passes, {p.a_only} only {r.baseline}), "
                f"floor {p.floor:.0%}"
            )
            lines.append(f"  -> {p.verdict}: {p.explanation}")
        w = r.pairwise
        if w is not None:
            lines.append(
                f"  pairwise ({result.pairwise_judge}, both orders; n={w.n_valid}, failed "
                f"{w.n_failed}): {r.variant} preferred {w.wins_b}, {r.baseline} preferred "
                f"{w.wins_a}, ties {w.ties} ({w.inconsistent} order-inconsistent), position "
                f"consistency {_f(w.consistency_rate, '.0%')}, sign test p={_p(w.p)} "
                f"-> {w.verdict}"
            )
        if r.excluded:
            lines.append(
                "  excluded from both arms: "
                + ", ".join(f"{k} {n}" for k, n in sorted(r.excluded.items()))
            )
    errs = {k: n for k, n in result.run_errors.items() if n}
    if errs:
        lines.append(
            "failed calls per variant: " + ", ".join(f"{k} {n}" for k, n in sorted(errs.items()))
        )
    lines.append(
        f"judge: {result.judge_name}"
        + (f" ({result.judge_model})" if result.judge_model else "")
        + f", rubric {result.rubric_version}; {result.n_cases} cases; run {result.run_id}"
    )
    if result.judge_name == "heuristic":
        lines.append(
            "note: the heuristic judge is a rule set, not a quality model; use an LLM judge "
            "(EVAL_JUDGE) for real decisions"
        )
    return lines


def markdown_report(result: ABResult) -> str:
    names = {v.name: v.label for v in result.variants}
    out = [f"## A/B verdict: **{result.verdict}**", ""]
    out += ["```", *verdict_lines(result), "```", ""]
    for r in result.reports:
        if not r.changes:
            continue
        out += [
            f"### Largest changes, {r.variant} ({names[r.variant]}) vs "
            f"{r.baseline} ({names[r.baseline]})",
            "",
            f"| case | kind | {r.baseline} | {r.variant} | change | why ({r.variant}) |",
            "|---|---|---|---|---|---|",
        ]
        for c in r.changes:
            why = c.reason_b.replace("|", "/").replace("\n", " ")[:100]
            out.append(f"| {c.case_id} | {c.family} | {c.a:g} | {c.b:g} | {c.delta:+g} | {why} |")
        out.append("")
    return "\n".join(out)


def changes_table(result: ABResult, limit: int = 10) -> list[str]:
    """The per-case table of the largest changes, as plain text."""
    lines = []
    for r in result.reports:
        if not r.changes:
            continue
        lines.append(f"largest changes, {r.variant} vs {r.baseline}:")
        lines.append(f"  {'case':<28}{'kind':<11}{r.baseline:>4}{r.variant:>4}{'change':>8}  why")
        for c in r.changes[:limit]:
            lines.append(
                f"  {c.case_id[:27]:<28}{c.family:<11}{c.a:>4g}{c.b:>4g}{c.delta:>+8g}  "
                f"{c.reason_b[:60]}"
            )
    return lines


# --- the store --------------------------------------------------------------------------


def _comparison_rows(result: ABResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.reports:
        mine = []
        if r.scores is not None:
            s = r.scores
            mine.append(
                dict(family="scores", n=s.n, n_excluded=s.n_excluded, value_a=s.mean_a,
                     value_b=s.mean_b, delta=s.delta, ci_low=s.ci_low, ci_high=s.ci_high,
                     p_value=s.t_p, p_adjusted=s.t_p_adjusted, rank_p_value=s.w_p,
                     rank_p_adjusted=s.w_p_adjusted, effect_size=s.d_z, floor=s.floor,
                     needed_n=s.needed_n, verdict=s.verdict, explanation=s.explanation,
                     details=asdict(s))
            )  # fmt: skip
        if r.pass_fail is not None:
            p = r.pass_fail
            mine.append(
                dict(family="pass_fail", n=p.n, n_excluded=p.n_excluded, value_a=p.pass_a,
                     value_b=p.pass_b, delta=p.delta, ci_low=p.ci_low, ci_high=p.ci_high,
                     p_value=p.p, p_adjusted=p.p_adjusted, rank_p_value=None,
                     rank_p_adjusted=None, effect_size=None, floor=p.floor,
                     needed_n=p.needed_n, verdict=p.verdict, explanation=p.explanation,
                     details=asdict(p))
            )  # fmt: skip
        if r.pairwise is not None:
            w = r.pairwise
            mine.append(
                dict(family="pairwise", n=w.n_valid, n_excluded=w.n_failed,
                     value_a=None if w.win_rate_b is None else 1 - w.win_rate_b,
                     value_b=w.win_rate_b, delta=w.net_preference, ci_low=w.ci_low,
                     ci_high=w.ci_high, p_value=w.p, p_adjusted=None, rank_p_value=None,
                     rank_p_adjusted=None, effect_size=None, floor=w.floor, needed_n=None,
                     verdict=w.verdict, explanation=w.explanation, details=asdict(w))
            )  # fmt: skip
        for row in mine:
            row.update(run_id=result.run_id, variant=r.variant, baseline=r.baseline)
            row["details"] = json.dumps(row["details"], default=_json_default)
        rows.extend(mine)
    return rows


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def store_ab(conn: duckdb.DuckDBPyConnection, result: ABResult) -> None:
    """Write the run, its comparisons, per-case scores and pairwise picks; one transaction.

    Judgments are also written to the shared judgments cache (by content hash)."""
    run = pd.DataFrame(
        [
            dict(
                run_id=result.run_id, started_at=result.started_at,
                finished_at=result.finished_at, cases_file=result.cases_file,
                cases_version=result.cases_version, n_cases=result.n_cases,
                baseline=result.baseline,
                variants=json.dumps([v.describe() for v in result.variants]),
                judge_name=result.judge_name, judge_model=result.judge_model,
                rubric_version=result.rubric_version, pairwise_judge=result.pairwise_judge,
                min_effect=result.min_effect, alpha=result.alpha, seed=result.seed,
                verdict=result.verdict, report_md=markdown_report(result),
            )
        ]
    )  # fmt: skip
    comps = pd.DataFrame(_comparison_rows(result))
    scores = pd.DataFrame(
        {
            "run_id": result.run_id,
            "case_id": [r.case_id for r in result.case_scores],
            "variant": [r.variant for r in result.case_scores],
            "family": [r.family for r in result.case_scores],
            "state": [r.state for r in result.case_scores],
            "output": pd.Series([r.output for r in result.case_scores], dtype=object),
            "score": pd.array([r.score for r in result.case_scores], dtype="Float64"),
            "passed": pd.array([r.passed for r in result.case_scores], dtype="boolean"),
            "reason": [r.reason for r in result.case_scores],
            "judgment_key": pd.Series([r.judgment_key for r in result.case_scores], dtype=object),
            "latency_ms": pd.array([r.latency_ms for r in result.case_scores], dtype="Float64"),
        }
    )
    pw = pd.DataFrame(result.pairwise_rows)
    conn.execute("BEGIN TRANSACTION")
    try:
        for table, frame in (
            ("ab_runs", run),
            ("ab_comparisons", comps),
            ("ab_case_scores", scores),
            ("ab_pairwise", pw),
        ):
            conn.execute(f"DELETE FROM {table} WHERE run_id = ?", [result.run_id])
            if frame.empty:
                continue
            if "run_id" not in frame.columns:
                frame = frame.assign(run_id=result.run_id)
            cols = ", ".join(frame.columns)
            conn.register("_ab_frame", frame)
            try:
                conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _ab_frame")
            finally:
                conn.unregister("_ab_frame")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    if result.new_judgments:
        judge = _JudgeInfo(result.judge_name, result.judge_model, result.rubric_version)
        store_judgments(conn, judge, result.new_judgments)  # type: ignore[arg-type]


@dataclass
class _JudgeInfo:
    name: str
    model: str | None
    rubric_version: str
