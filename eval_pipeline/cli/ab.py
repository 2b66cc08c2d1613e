"""`eval-pipeline ab`: is the new prompt actually better? Run both on the same cases, score
every answer, and give a verdict with the evidence (paired tests, CI, effect size, floor).

Two ways to name the variants:
  --a-prompt FILE --b-prompt FILE [--prompt FILE ...]   prompt files on one --target
  --a-target T --b-target T [--other-target T ...]      two (or more) runners

The first variant (A) is the baseline. Exit codes: 0 the comparison ran (whatever the
verdict); 3 it could not run (bad case file, target, or prompt file); 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.ab import run as ab
from eval_pipeline.core.ab import stats as ab_stats
from eval_pipeline.core.judge.cache import CachedJudge
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline.core.regression import cases as cases_mod
from eval_pipeline.core.regression.runners import RunnerConfigError

EXIT_NOT_RUN = 3
DEMO_TARGET = "eval_pipeline.demo.app:answer"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ab",
        help="compare two prompts (or runners) on the same cases, with paired statistics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cases", required=True, help="case file (golden-set JSONL format)")
    p.add_argument("--a-prompt", help="prompt file of variant A (the baseline)")
    p.add_argument("--b-prompt", help="prompt file of variant B")
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="FILE",
        help="a further prompt variant C, D, ... (repeatable; each is compared with A)",
    )
    p.add_argument(
        "--target",
        default=DEMO_TARGET,
        help="what the prompts run on: an OpenAI-compatible base URL (the prompt is the "
        "system prompt) or module:function (called with prompt_path=FILE); "
        "default: %(default)s",
    )
    p.add_argument(
        "--prompt-arg",
        default=ab.DEFAULT_PROMPT_KWARG,
        help="keyword argument that carries the prompt file to a callable (default: %(default)s)",
    )
    p.add_argument("--a-target", help="runner of variant A (URL or module:function)")
    p.add_argument("--b-target", help="runner of variant B")
    p.add_argument("--other-target", action="append", default=[], metavar="TARGET")
    p.add_argument("--model", help="model name for HTTP targets")
    p.add_argument(
        "--min-effect",
        type=float,
        default=ab_stats.DEFAULT_MIN_EFFECT,
        help="practical floor as a fraction of the score range (default 0.05 = 0.2 on 1-5)",
    )
    p.add_argument("--alpha", type=float, default=ab_stats.ALPHA)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--pairwise",
        action="store_true",
        help="also ask the judge to pick between the two answers, in both orders",
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    p.add_argument("--top", type=int, default=10, help="rows in the largest-changes table")
    p.add_argument("--markdown", metavar="PATH", help="also write the markdown report here")
    p.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.add_argument("--no-store", action="store_true", help="do not record the run in DuckDB")
    p.set_defaults(func=run)


def _not_run(message: str) -> int:
    print(f"ab: NOT RUN: {message}", file=sys.stderr)
    return EXIT_NOT_RUN


def build_variants(args: argparse.Namespace) -> list[ab.Variant]:
    prompts = [x for x in (args.a_prompt, args.b_prompt) if x] + list(args.prompt)
    targets = [x for x in (args.a_target, args.b_target) if x] + list(args.other_target)
    if prompts and targets:
        raise ValueError("give prompt files (--a-prompt/--b-prompt) or targets, not both")
    if targets:
        return ab.variants_from_targets(
            targets, model=args.model, concurrency=args.concurrency, timeout=args.timeout
        )
    if not (args.a_prompt and args.b_prompt):
        raise ValueError("need --a-prompt and --b-prompt (or --a-target and --b-target)")
    return ab.variants_from_prompts(
        args.target,
        prompts,
        model=args.model,
        prompt_kwarg=args.prompt_arg,
        concurrency=args.concurrency,
        timeout=args.timeout,
    )


def run(args: argparse.Namespace) -> int:
    try:
        cases = cases_mod.load_cases(args.cases)
    except cases_mod.GoldenFileError as exc:
        return _not_run(f"bad case file\n{exc}")
    try:
        variants = build_variants(args)
        judge = judge_from_env()
        if not args.no_store:  # judgments already in the store are not paid for again
            judge = CachedJudge(judge, args.db or settings.duckdb_path())
        ab_stats.floor_points(args.min_effect, 0, 1)  # validates the fraction
    except (ValueError, RunnerConfigError) as exc:
        return _not_run(str(exc))
    names = ", ".join(f"{v.name}={v.label}" for v in variants)
    print(f"ab: {len(cases)} cases, variants {names}, judge {judge.name}", file=sys.stderr)
    result = ab.run_ab(
        cases,
        variants,
        judge,
        cases_file=str(args.cases),
        cases_version=cases_mod.golden_version(cases),
        min_effect=args.min_effect,
        alpha=args.alpha,
        seed=args.seed,
        pairwise=args.pairwise,
        top_changes=args.top,
        log=lambda m: print(f"ab: {m}", file=sys.stderr),
    )
    print("\n".join(ab.verdict_lines(result)))
    table = ab.changes_table(result, args.top)
    if table:
        print()
        print("\n".join(table))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(ab.markdown_report(result))
    if not args.no_store:
        path = args.db or settings.duckdb_path()
        with store.connect(path) as conn:
            ab.store_ab(conn, result)
        print(f"\nstored as run {result.run_id} in {path}")
    return 0
