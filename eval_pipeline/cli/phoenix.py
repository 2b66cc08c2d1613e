"""`eval-pipeline phoenix`: check a Phoenix connection, and show annotation delivery.

``phoenix check [--day D]`` reads one day of spans with the configured settings and prints
what the pipeline would make of them (traces, rejects and skips by reason, one rebuilt
example) without writing anything: a dry run for pointing the pipeline at a Phoenix.
Exit code 0 when Phoenix answered, 1 when it could not be read (the message says why).

``phoenix annotations`` prints the delivery state of span annotations from the store.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.sources.phoenix.client import PhoenixClient, PhoenixUnavailable, fetch_spans
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.spans import classify_spans


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phoenix", help="check the Phoenix trace source; annotation delivery")
    cmds = p.add_subparsers(dest="phoenix_command", metavar="SUBCOMMAND")
    check = cmds.add_parser("check", help="dry-run one day of spans (writes nothing)")
    check.add_argument(
        "--day",
        type=dt.date.fromisoformat,
        default=None,
        help="UTC day YYYY-MM-DD (default: yesterday)",
    )
    check.add_argument("--url", default=None, help="Phoenix base URL (default: $EVAL_PHOENIX_URL)")
    check.add_argument("--project", default=None, help="project (default: $EVAL_PHOENIX_PROJECT)")
    check.set_defaults(func=run_check)
    ann = cmds.add_parser("annotations", help="delivery state of span annotations (read-only)")
    ann.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    ann.set_defaults(func=run_annotations)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_check(args: argparse.Namespace) -> int:
    try:
        cfg = PhoenixConfig.from_env(base_url=args.url, project=args.project)
    except ValueError as exc:
        print(f"bad Phoenix settings: {exc}")
        return 2
    day = args.day or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    print(f"Phoenix {cfg.safe_url()}  project {cfg.project!r}  day {day}")
    print(
        f"selecting: kinds={','.join(cfg.span_kinds)} root_only={cfg.root_only} "
        f"filters={dict(cfg.attribute_filters) or 'none'}"
    )
    try:
        with PhoenixClient(cfg) as client:
            fetched = fetch_spans(client, day)
    except PhoenixUnavailable as exc:
        print(f"FAILED: {exc}")
        return 1
    day_ = classify_spans(fetched.spans, cfg)
    print(f"{len(fetched.spans)} spans in {fetched.pages} pages")
    print(f"  traces:   {len(day_.traces)}")
    print(f"  rejected: {len(day_.rejects)}")
    for reason, n in Counter(r.split(" (")[0] for _, r, _ in day_.rejects).most_common():
        print(f"    {n:>6}  {reason}")
    print(f"  skipped:  {sum(day_.skips.values())}")
    for reason, n in day_.skips.most_common():
        print(f"    {n:>6}  {reason}")
    if day_.traces:
        t = day_.traces[0]
        print("example trace:")
        print(f"  span {t.span_id}  segment={t.segment} model={t.model} prompt={t.prompt_version}")
        print(f"  query:  {t.user_query[:200]!r}")
        print(f"  answer: {t.assistant_response[:200]!r}")
    return 0


def run_annotations(args: argparse.Namespace) -> int:
    path = Path(args.db) if args.db else settings.duckdb_path()
    if not path.exists():
        print(f"no store at {path}: run the pipeline first")
        return 2
    with store.connect(path, read_only=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "phoenix_annotations" not in tables:
            print(f"{path} has no phoenix_annotations table yet: run the pipeline first")
            return 2
        rows = conn.execute(
            "SELECT status, count(*), max(last_attempt_at) FROM phoenix_annotations "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        failures = conn.execute(
            "SELECT coalesce(regexp_extract(error, '^[^:(]*'), 'failed'), count(*), "
            "max(attempts) FROM phoenix_annotations WHERE status = 'failed' "
            "GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    if not rows:
        print("no span annotations recorded (no Phoenix-sourced judgments yet)")
        return 0
    for status, n, last in rows:
        print(f"{status:<8}{n:>8}  last attempt {last}")
    for reason, n, attempts in failures:
        print(f"  {n:>6} failed: {reason.strip()} (up to {attempts} attempts)")
    return 0
