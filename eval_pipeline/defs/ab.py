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
from eval_pipeline.core.ab.report import markdown_report, verdict_lines
from eval_pipeline.core.ab.run import ABSetupError, ABSpec, run_ab
from eval_pipeline.core.ab.store import store_ab
from eval_pipeline.core.judge import trust
from eval_pipeline.core.judge.cache import CachedJudge
from eval_pipeline.core.regression.cases import GoldenFileError
from eval_pipeline.defs.resources import EvalStore, JudgeResource

MD = dg.MetadataValue
DEMO_CASES = settings.PROJECT_ROOT / "data" / "ab" / "cases.jsonl"
DEMO_PROMPTS = settings.PROJECT_ROOT / "eval_pipeline" / "demo" / "app"


class ABTestConfig(dg.Config):
    """What to compare (the fields of ``ABSpec``, same defaults). Prompt files run on
    ``target``; or give runners instead."""

    cases_path: str | None = None  # default $EVAL_AB_CASES, else the demo A/B cases
    a_prompt: str | None = None  # the baseline prompt file (default: the demo's good prompt)
    b_prompt: str | None = None  # the challenger (default: the demo's regressed prompt)
    other_prompts: list[str] = []  # C, D, ...: each compared with A, Holm-corrected
    target: str = ABSpec.target  # base URL (prompt = system prompt) or module:function
    prompt_arg: str = ABSpec.prompt_arg  # callable keyword that gets the prompt path
    a_target: str | None = None  # or: two runners (then no prompt files)
    b_target: str | None = None
    other_targets: list[str] = []
    model: str | None = None  # for HTTP targets
    min_effect: float = ABSpec.min_effect  # fraction of the score range
    alpha: float = ABSpec.alpha
    seed: int = ABSpec.seed
    pairwise: bool = False
    concurrency: int = ABSpec.concurrency
    timeout: float = ABSpec.timeout
    top_changes: int = ABSpec.top_changes


def spec_from_config(config: ABTestConfig) -> ABSpec:
    """The spec, with the demo's cases and prompts for what is not configured."""
    options = config.model_dump()
    options["cases_path"] = config.cases_path or os.environ.get("EVAL_AB_CASES") or str(DEMO_CASES)
    if not (config.a_target or config.b_target or config.other_targets):
        options["a_prompt"] = config.a_prompt or str(DEMO_PROMPTS / "prompt_good.txt")
        options["b_prompt"] = config.b_prompt or str(DEMO_PROMPTS / "prompt_regressed.txt")
    return ABSpec.from_options(options)


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
    try:
        spec = spec_from_config(config)
    except ValueError as exc:
        raise dg.Failure(description=f"invalid configuration: {exc}") from exc
    # Judgments already in the store are not paid for again.
    the_judge = CachedJudge(judge.build(), store.resolved_path())
    try:
        result = run_ab(spec, the_judge, log=context.log.info)
    except GoldenFileError as exc:
        raise dg.Failure(description=f"the case file is invalid: {exc}") from exc
    except ABSetupError as exc:
        raise dg.Failure(description=f"cannot set up the variants: {exc}") from exc
    with store.connect() as conn:
        result.judge_trust = trust.for_judge(
            conn, result.judge_name, result.judge_model, result.rubric_version
        )
        store_ab(conn, result)
    for line in verdict_lines(result):
        context.log.info(line)
    first = result.reports[0]
    meta = {
        "verdict": MD.text(result.verdict),
        "run_id": MD.text(result.run_id),
        "variants": MD.json([v.describe() for v in result.variants]),
        "cases": MD.int(result.n_cases),
        "cases_file": MD.path(spec.cases_path),
        "judge": MD.text(result.judge_name),
        "judge_model": MD.text(result.judge_model or "none"),
        "judge_trust_status": MD.text(result.judge_trust.status if result.judge_trust else "none"),
        "judge_trust": MD.text(result.judge_trust.line() if result.judge_trust else "none"),
        "report": MD.md(markdown_report(result)),
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
    for name, c in first.criteria.items():  # several judge criteria: each its own comparison
        meta[f"criteria/{name}/verdict"] = MD.text(c.verdict)
        meta[f"criteria/{name}/delta"] = _num(c.delta)
        meta[f"criteria/{name}/t_test_p"] = _num(c.t_p_adjusted)
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
