"""The A/B prompt comparison as a Dagster asset, run on demand from the UI or the CLI.

``prompt_ab_test`` runs two (or more) prompt files on one target, or two runners, on the
same cases, scores every answer with the configured judge (open-ended cases, 1-5) or the
case's rules grader (pass/fail), records the run in DuckDB (ab_runs, ab_comparisons,
ab_case_scores, ab_pairwise) and shows the verdict with its evidence as markdown.

With nothing configured it compares the demo app's two prompts on the demo A/B cases.
"""

import os

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.core.ab import run as ab
from eval_pipeline.core.ab import stats as ab_stats
from eval_pipeline.core.judge.cache import CachedJudge
from eval_pipeline.core.regression import cases as cases_mod
from eval_pipeline.core.regression.runners import RunnerConfigError
from eval_pipeline.defs.resources import EvalStore, JudgeResource

MD = dg.MetadataValue
DEMO_TARGET = "eval_pipeline.demo.app:answer"
DEMO_CASES = settings.PROJECT_ROOT / "data" / "ab" / "cases.jsonl"
DEMO_PROMPTS = settings.PROJECT_ROOT / "eval_pipeline" / "demo" / "app"


class ABTestConfig(dg.Config):
    """What to compare. Prompt files run on ``target``; or give runners instead."""

    cases_path: str | None = None  # default $EVAL_AB_CASES, else the demo A/B cases
    a_prompt: str | None = None  # the baseline prompt file (default: the demo's good prompt)
    b_prompt: str | None = None  # the challenger (default: the demo's regressed prompt)
    other_prompts: list[str] = []  # C, D, ...: each compared with A, Holm-corrected
    target: str = DEMO_TARGET  # base URL (prompt = system prompt) or module:function
    prompt_arg: str = ab.DEFAULT_PROMPT_KWARG  # callable keyword that gets the prompt path
    a_target: str | None = None  # or: two runners (then no prompt files)
    b_target: str | None = None
    other_targets: list[str] = []
    model: str | None = None  # for HTTP targets
    min_effect: float = ab_stats.DEFAULT_MIN_EFFECT  # fraction of the score range
    alpha: float = ab_stats.ALPHA
    seed: int = 0
    pairwise: bool = False
    concurrency: int = 8
    timeout: float = 30.0
    top_changes: int = 10


def _variants(config: ABTestConfig) -> list[ab.Variant]:
    targets = [t for t in (config.a_target, config.b_target) if t] + config.other_targets
    prompts = [p for p in (config.a_prompt, config.b_prompt) if p] + config.other_prompts
    if targets and prompts:
        raise ValueError("configure prompt files or runner targets, not both")
    if targets:
        return ab.variants_from_targets(
            targets, model=config.model, concurrency=config.concurrency, timeout=config.timeout
        )
    a = config.a_prompt or str(DEMO_PROMPTS / "prompt_good.txt")
    b = config.b_prompt or str(DEMO_PROMPTS / "prompt_regressed.txt")
    return ab.variants_from_prompts(
        config.target,
        [a, b, *config.other_prompts],
        model=config.model,
        prompt_kwarg=config.prompt_arg,
        concurrency=config.concurrency,
        timeout=config.timeout,
    )


def _num(x: float | None) -> MD:
    return MD.float(float("nan") if x is None else float(x))


@dg.asset(group_name="ab", kinds={"duckdb", "python"}, pool="duckdb")
def prompt_ab_test(
    context: dg.AssetExecutionContext,
    config: ABTestConfig,
    store: EvalStore,
    judge: JudgeResource,
) -> dg.MaterializeResult:
    """Is the new prompt actually better? A paired comparison on the same cases, with a
    verdict that needs significance and an effect above the practical floor."""
    cases_path = config.cases_path or os.environ.get("EVAL_AB_CASES") or str(DEMO_CASES)
    try:
        the_cases = cases_mod.load_cases(cases_path)
    except cases_mod.GoldenFileError as exc:
        raise dg.Failure(description=f"the case file is invalid: {exc}") from exc
    try:
        variants = _variants(config)
    except (ValueError, RunnerConfigError) as exc:
        raise dg.Failure(description=f"cannot set up the variants: {exc}") from exc
    # Judgments already in the store are not paid for again.
    the_judge = CachedJudge(judge.build(), store.resolved_path())
    result = ab.run_ab(
        the_cases,
        variants,
        the_judge,
        cases_file=cases_path,
        cases_version=cases_mod.golden_version(the_cases),
        min_effect=config.min_effect,
        alpha=config.alpha,
        seed=config.seed,
        pairwise=config.pairwise,
        top_changes=config.top_changes,
        log=context.log.info,
    )
    with store.connect() as conn:
        ab.store_ab(conn, result)
    for line in ab.verdict_lines(result):
        context.log.info(line)
    first = result.reports[0]
    meta = {
        "verdict": MD.text(result.verdict),
        "run_id": MD.text(result.run_id),
        "variants": MD.json([v.describe() for v in result.variants]),
        "cases": MD.int(result.n_cases),
        "cases_file": MD.path(cases_path),
        "judge": MD.text(result.judge_name),
        "judge_model": MD.text(result.judge_model or "none"),
        "report": MD.md(ab.markdown_report(result)),
        "failed_calls": MD.json(result.run_errors),
    }
    if first.scores is not None:
        s = first.scores
        meta.update(
            {
                "scores/verdict": MD.text(s.verdict),
                "scores/n": MD.int(s.n),
                "scores/excluded": MD.int(s.n_excluded),
                "scores/mean_a": _num(s.mean_a),
                "scores/mean_b": _num(s.mean_b),
                "scores/delta": _num(s.delta),
                "scores/ci_low": _num(s.ci_low),
                "scores/ci_high": _num(s.ci_high),
                "scores/t_test_p": _num(s.t_p_adjusted),
                "scores/wilcoxon_p": _num(s.w_p_adjusted),
                "scores/cohens_dz": _num(s.d_z),
                "scores/floor": _num(s.floor),
            }
        )
        if s.needed_n is not None:
            meta["scores/needed_n"] = MD.int(s.needed_n)
    if first.pass_fail is not None:
        p = first.pass_fail
        meta.update(
            {
                "pass_fail/verdict": MD.text(p.verdict),
                "pass_fail/n": MD.int(p.n),
                "pass_fail/excluded": MD.int(p.n_excluded),
                "pass_fail/pass_rate_a": _num(p.pass_a),
                "pass_fail/pass_rate_b": _num(p.pass_b),
                "pass_fail/ci_low": _num(p.ci_low),
                "pass_fail/ci_high": _num(p.ci_high),
                "pass_fail/mcnemar_p": _num(p.p_adjusted),
            }
        )
    if first.pairwise is not None:
        w = first.pairwise
        meta["pairwise/verdict"] = MD.text(w.verdict)
        meta["pairwise/position_consistency"] = _num(w.consistency_rate)
    return dg.MaterializeResult(metadata=meta)
