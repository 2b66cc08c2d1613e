"""`eval-pipeline regress`: run the golden set against a target and gate on the pass rate.

Exit codes: 0 pass rate >= threshold; 1 below the threshold (a quality regression);
3 the run could not be done (the service is down: at least --max-error-rate of the cases got
no answer; the golden file is invalid; the target cannot be called); 2 bad command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from eval_pipeline import settings
from eval_pipeline.core import cases as cases_mod
from eval_pipeline.core import regression, runners, store
from eval_pipeline.core.junit import write_junit_xml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "regress",
        help="run the golden set against a target; exit 0 pass, 1 regression, 3 not run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--golden", default=None, help="golden JSONL file (default: $EVAL_GOLDEN_PATH)")
    p.add_argument(
        "--target",
        required=True,
        help="OpenAI-compatible base URL (http://host:port/v1) or a callable module:function",
    )
    p.add_argument("--model", help="model name sent to an HTTP target")
    p.add_argument("--system-prompt-file", help="system prompt sent first to an HTTP target")
    p.add_argument(
        "--api-key-env",
        default=runners.DEFAULT_API_KEY_ENV,
        help="environment variable holding the target's API key (sent as a bearer token; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for a callable target (repeatable)",
    )
    p.add_argument(
        "--target-name",
        help="name of the target in history (default: the URL#model or module:function)",
    )
    p.add_argument(
        "--deploy-id", help="deploy under test (default: $EVAL_DEPLOY_ID, $GITHUB_SHA, git HEAD)"
    )
    p.add_argument("--threshold", type=float, default=regression.DEFAULT_THRESHOLD)
    p.add_argument(
        "--max-error-rate",
        type=float,
        default=regression.DEFAULT_MAX_ERROR_RATE,
        help="share of cases without an answer at which the run is an outage (exit 3)",
    )
    p.add_argument("--concurrency", type=int, default=runners.DEFAULT_CONCURRENCY)
    p.add_argument(
        "--timeout", type=float, default=runners.DEFAULT_TIMEOUT, help="seconds per call attempt"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=runners.DEFAULT_RETRIES,
        help="retries of a transient failure (timeout, 429, 5xx)",
    )
    p.add_argument(
        "--judge-all",
        action="store_true",
        help="also score every answer with the judge (the drift baseline)",
    )
    p.add_argument(
        "--grader-module",
        action="append",
        default=[],
        help="module to import first that registers custom graders (repeatable)",
    )
    p.add_argument("--junit-xml", metavar="PATH", help="write JUnit XML here")
    p.add_argument("--markdown", metavar="PATH", help="write a markdown summary here")
    p.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.add_argument(
        "--no-store",
        action="store_true",
        help="do not record the run (no history, no newly failing list)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def _parse_kwargs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise runners.RunnerConfigError(f"--arg wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _not_run(message: str) -> int:
    print(f"regress: NOT RUN: {message}", file=sys.stderr)
    return regression.EXIT_NOT_RUN


def run(args: argparse.Namespace) -> int:
    golden = args.golden or str(settings.golden_path())
    try:
        for module in args.grader_module:
            importlib.import_module(module)
    except Exception as exc:
        return _not_run(f"cannot import grader module: {exc}")
    try:
        cases = cases_mod.load_cases(golden)
    except cases_mod.GoldenFileError as exc:
        return _not_run(f"bad golden file\n{exc}")
    try:
        runner = runners.runner_from_target(
            args.target,
            model=args.model,
            system_prompt_file=args.system_prompt_file,
            api_key_env=args.api_key_env,
            kwargs=_parse_kwargs(args.arg),
            concurrency=args.concurrency,
            timeout=args.timeout,
            retries=args.retries,
        )
    except runners.RunnerConfigError as exc:
        return _not_run(str(exc))
    target_name = args.target_name or runner.target
    progress = None if args.quiet else runners.ProgressLine("regress")
    try:
        run_ = regression.execute(
            cases,
            runner,
            golden_version=cases_mod.golden_version(cases),
            golden_path=golden,
            deploy_id=args.deploy_id,
            threshold=args.threshold,
            max_error_rate=args.max_error_rate,
            judge_all=args.judge_all,
            progress=progress,
        )
    finally:
        if progress:
            progress.close()
    run_.target = target_name
    comparison = regression.Comparison()
    if not args.no_store:
        with store.connect(args.db or settings.duckdb_path()) as conn:
            comparison = regression.record(conn, run_)
    print(regression.text_report(run_, comparison))
    if args.junit_xml:
        write_junit_xml(args.junit_xml, run_, comparison)
    if args.markdown:
        regression.write_text(args.markdown, regression.markdown_report(run_, comparison))
    return run_.exit_code
