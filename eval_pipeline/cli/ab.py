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
from eval_pipeline.core.ab.report import changes_table, markdown_report, verdict_lines
from eval_pipeline.core.ab.run import ABSetupError, ABSpec, run_ab
from eval_pipeline.core.ab.store import store_ab
from eval_pipeline.core.judge import trust
from eval_pipeline.core.judge.cache import CachedJudge
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline.core.regression.cases import GoldenFileError

EXIT_NOT_RUN = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ab",
        help="compare two prompts (or runners) on the same cases, with paired statistics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--cases",
        dest="cases_path",
        metavar="CASES",
        required=True,
        help="case file (golden-set JSONL format)",
    )
    p.add_argument("--a-prompt", help="prompt file of variant A (the baseline)")
    p.add_argument("--b-prompt", help="prompt file of variant B")
    p.add_argument(
        "--prompt",
        dest="other_prompts",
        action="append",
        default=[],
        metavar="FILE",
        help="a further prompt variant C, D, ... (repeatable; each is compared with A)",
    )
    p.add_argument(
        "--target",
        default=ABSpec.target,
        help="what the prompts run on: an OpenAI-compatible base URL (the prompt is the "
        "system prompt) or module:function (called with prompt_path=FILE); "
        "default: %(default)s",
    )
    p.add_argument(
        "--prompt-arg",
        default=ABSpec.prompt_arg,
        help="keyword argument that carries the prompt file to a callable (default: %(default)s)",
    )
    p.add_argument("--a-target", help="runner of variant A (URL or module:function)")
    p.add_argument("--b-target", help="runner of variant B")
    p.add_argument(
        "--other-target", dest="other_targets", action="append", default=[], metavar="TARGET"
    )
    p.add_argument("--model", help="model name for HTTP targets")
    p.add_argument(
        "--min-effect",
        type=float,
        default=ABSpec.min_effect,
        help="practical floor as a fraction of the score range (default 0.05 = 0.2 on 1-5)",
    )
    p.add_argument("--alpha", type=float, default=ABSpec.alpha)
    p.add_argument(
        "--seed", type=int, default=ABSpec.seed, help="bootstrap seed (default %(default)s)"
    )
    p.add_argument(
        "--pairwise",
        action="store_true",
        help="also ask the judge to pick between the two answers, in both orders",
    )
    p.add_argument("--concurrency", type=int, default=ABSpec.concurrency)
    p.add_argument(
        "--timeout",
        type=float,
        default=ABSpec.timeout,
        help="seconds per call (default %(default)s)",
    )
    p.add_argument(
        "--top",
        dest="top_changes",
        metavar="TOP",
        type=int,
        default=ABSpec.top_changes,
        help="rows in the largest-changes table (default %(default)s)",
    )
    p.add_argument("--markdown", metavar="PATH", help="also write the markdown report here")
    p.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.add_argument("--no-store", action="store_true", help="do not record the run in DuckDB")
    p.set_defaults(func=run)


def _not_run(message: str) -> int:
    print(f"ab: NOT RUN: {message}", file=sys.stderr)
    return EXIT_NOT_RUN


def run(args: argparse.Namespace) -> int:
    try:
        spec = ABSpec.from_options(vars(args))
        judge = judge_from_env()
    except ValueError as exc:
        return _not_run(str(exc))
    if not args.no_store:  # judgments already in the store are not paid for again
        judge = CachedJudge(judge, args.db or settings.duckdb_path())
    try:
        result = run_ab(spec, judge, log=lambda m: print(f"ab: {m}", file=sys.stderr))
    except GoldenFileError as exc:
        return _not_run(f"bad case file\n{exc}")
    except ABSetupError as exc:
        return _not_run(str(exc))
    if not args.no_store:
        with store.connect(args.db or settings.duckdb_path()) as conn:
            result.judge_trust = trust.for_judge(
                conn, result.judge_name, result.judge_model, result.rubric_version
            )
    print("\n".join(verdict_lines(result)))
    table = changes_table(result)
    if table:
        print()
        print("\n".join(table))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown_report(result))
    if not args.no_store:
        path = args.db or settings.duckdb_path()
        with store.connect(path) as conn:
            store_ab(conn, result)
        print(f"\nstored as run {result.run_id} in {path}")
    return 0
