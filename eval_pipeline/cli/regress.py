"""`eval-pipeline regress`: run the golden set against a target and gate on the pass rate.

Exit codes: 0 pass rate >= threshold; 1 below the threshold (a quality regression);
3 the run could not be done (the service is down: at least --max-error-rate of the cases got
no answer; the golden file is invalid; the target or the judge cannot be set up; any other
failure of the run, of recording it in DuckDB, or of writing --junit-xml/--markdown);
2 bad command line. Exit 1 only ever means "the answers were graded and fell short".
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.judge import trust
from eval_pipeline.core.regression import cases as cases_mod
from eval_pipeline.core.regression import gate as regression
from eval_pipeline.core.regression import history, runners
from eval_pipeline.core.regression.gate import RegressionRun
from eval_pipeline.core.regression.junit import write_junit_xml
from eval_pipeline.core.regression.report import markdown_report, text_report, write_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "regress",
        help="run the golden set against a target; exit 0 pass, 1 regression, 3 not run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--golden",
        dest="golden_path",
        default=None,
        help="golden JSONL file (default: $EVAL_GOLDEN_PATH)",
    )
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
    p.add_argument(
        "--verbose", action="store_true", help="print the traceback when the run cannot be done"
    )
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


def _crashed(stage: str, exc: BaseException, verbose: bool, note: str = "") -> int:
    """An infrastructure failure: exit 3 with one clear line, never 1 (a quality verdict)."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    first = (str(exc).strip().splitlines() or [""])[0]
    hint = "" if verbose else " (--verbose for the traceback)"
    return _not_run(f"{stage} failed: {type(exc).__name__}: {first}{note}{hint}")


def run(args: argparse.Namespace) -> int:
    stage = ["setting up the run"]
    try:
        return _run(args, stage)
    except Exception as exc:
        return _crashed(stage[0], exc, args.verbose)


def _run(args: argparse.Namespace, stage: list[str]) -> int:
    try:
        for module in args.grader_module:
            importlib.import_module(module)
    except Exception as exc:
        return _not_run(f"cannot import grader module: {exc}")
    options = dict(vars(args))
    options["golden_path"] = args.golden_path or str(settings.golden_path())
    progress = None if args.quiet else runners.ProgressLine("regress")
    try:
        options["target_args"] = _parse_kwargs(args.arg)
        spec = regression.GateSpec.from_options(options)
        stage[0] = "running the golden set"
        run_ = regression.run_gate(spec, progress=progress)
    except cases_mod.GoldenFileError as exc:
        return _not_run(f"bad golden file\n{exc}")
    except (runners.RunnerConfigError, regression.JudgeSetupError) as exc:
        return _not_run(str(exc))
    finally:
        if progress:
            progress.close()
    comparison = history.Comparison(compared=False)
    store_error = None
    if not args.no_store:
        try:
            with store.connect(args.db or settings.duckdb_path()) as conn:
                comparison = history.record(conn, run_)
                run_.judge_trust = trust.for_judge(
                    conn, run_.judge_name, run_.judge_model, run_.rubric_version
                )
        except Exception as exc:  # reported after the report: the verdict is still worth seeing
            store_error = exc
    print(text_report(run_, comparison))
    try:
        if args.junit_xml:
            stage[0] = f"writing the JUnit XML to {args.junit_xml}"
            write_junit_xml(args.junit_xml, run_, comparison)
        if args.markdown:
            stage[0] = f"writing the markdown summary to {args.markdown}"
            write_text(args.markdown, markdown_report(run_, comparison))
    except Exception as exc:
        # The CI artifact the job publishes is missing: not a pass, not a quality verdict.
        return _crashed(stage[0], exc, args.verbose, _completed(run_, "the file is missing"))
    if store_error is not None:
        return _crashed(
            "recording the run in DuckDB",
            store_error,
            args.verbose,
            _completed(run_, "the run is not in the history"),
        )
    return run_.exit_code


def _completed(run_: RegressionRun, missing: str) -> str:
    return f"; the cases ran (verdict: {run_.status}) but {missing}"
