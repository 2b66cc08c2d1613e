"""The A/B verdict in words: the text the CLI prints and the markdown report."""

from __future__ import annotations

from eval_pipeline.core.ab.results import ABResult
from eval_pipeline.core.ab.stats import ScoreComparison


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _p(x: float | None) -> str:
    return "–" if x is None else (f"{x:.3g}" if x >= 1e-4 else f"{x:.1e}")


def _score_lines(s: ScoreComparison, base: str, variant: str, label: str = "") -> list[str]:
    """One score comparison: its evidence, the tests used (paired t primary, Wilcoxon
    signed-rank beside it) and its verdict."""
    adj = " (Holm-adjusted)" if s.n_comparisons > 1 else ""
    return [
        f"  {label}judge scores 1-5 (n={s.n}, excluded {s.n_excluded}): mean {base} "
        f"{_f(s.mean_a)}, mean {variant} {_f(s.mean_b)}, delta {_f(s.delta, '+.2f')} "
        f"[95% CI {_f(s.ci_low, '+.2f')}, {_f(s.ci_high, '+.2f')}]",
        f"  paired t-test p={_p(s.t_p_adjusted)}{adj}, Wilcoxon signed-rank "
        f"p={_p(s.w_p_adjusted)}{adj}, effect size d_z={_f(s.d_z)}, "
        f"floor {s.floor:.2f} points ({s.min_effect:.0%} of the range)",
        f"  -> {s.verdict}: {s.explanation}",
        *(f"  note: {n}" for n in s.notes),
    ]


def verdict_lines(result: ABResult) -> list[str]:
    """The verdict in words with its evidence: what the CLI prints."""
    names = {v.name: v.label for v in result.variants}
    lines = []
    for r in result.reports:
        lines.append(
            f"{r.variant} ({names[r.variant]}) vs {r.baseline} ({names[r.baseline]}): "
            f"{r.verdict.upper()}"
        )
        if r.criteria:
            for name, s in r.criteria.items():
                lines.extend(_score_lines(s, r.baseline, r.variant, f"criterion {name}, "))
        elif r.scores is not None:
            lines.extend(_score_lines(r.scores, r.baseline, r.variant))
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
    t = result.judge_trust
    lines.append("judge trust: not looked up (no store)" if t is None else t.line())
    if t is not None and t.warning():
        lines.append(t.warning())
    if result.judge_name == "heuristic":
        lines.append(
            "note: the heuristic judge is a rule set, not a quality model; use an LLM judge "
            "(EVAL_JUDGE) for real decisions"
        )
    return lines


def markdown_report(result: ABResult) -> str:
    names = {v.name: v.label for v in result.variants}
    out = [f"## A/B verdict: **{result.verdict}**", ""]
    t = result.judge_trust
    if t is not None and t.warning():
        out += [f"> ⚠️ **{t.warning()}**", ""]
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
            kind = c.criterion or c.family
            out.append(f"| {c.case_id} | {kind} | {c.a:g} | {c.b:g} | {c.delta:+g} | {why} |")
        out.append("")
    return "\n".join(out)


def changes_table(result: ABResult, limit: int | None = None) -> list[str]:
    """The per-case table of the largest changes, as plain text (each challenger's changes
    are already the run's ``top_changes`` largest; ``limit`` shows fewer)."""
    lines = []
    for r in result.reports:
        if not r.changes:
            continue
        lines.append(f"largest changes, {r.variant} vs {r.baseline}:")
        lines.append(f"  {'case':<28}{'kind':<11}{r.baseline:>4}{r.variant:>4}{'change':>8}  why")
        for c in r.changes[:limit]:
            lines.append(
                f"  {c.case_id[:27]:<28}{(c.criterion or c.family)[:10]:<11}{c.a:>4g}{c.b:>4g}{c.delta:>+8g}  "
                f"{c.reason_b[:60]}"
            )
    return lines
