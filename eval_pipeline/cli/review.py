"""`eval-pipeline review`: review pending eval candidates in the terminal, or export them to a
JSONL file and import the edited file.

After decisions are recorded, the Dagster instance ($DAGSTER_HOME) is told that the
``review_decisions`` asset changed; the golden_set asset follows it on its own (declarative
automation), so a person only reviews.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import duckdb

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.feedback import review, review_files, review_session
from eval_pipeline.core.judge import label_session
from eval_pipeline.core.terminal import printable

REVIEW_LOCK_WAIT = 15.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="review thumbs-down candidates (interactive), or --export / --import a JSONL file",
        description="Review pending eval candidates one by one: approve (with the expected "
        "answer and grader), reject or skip. Decisions are saved as you go; run it again to "
        "resume. " + review_files.EXPORT_HELP,
    )
    p.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.add_argument("--reviewer", default=None, help="your name (default: $USER)")
    p.add_argument("--limit", type=int, default=None, help="review at most N candidates")
    p.add_argument(
        "--score",
        action="store_true",
        help="after each decision, ask your 1-5 score of the answer (kept as a judge label)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--export",
        metavar="FILE",
        type=Path,
        help="write pending candidates to FILE (JSONL) for editing",
    )
    mode.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        type=Path,
        help="record the decisions in an edited export FILE (all or nothing)",
    )
    p.set_defaults(func=run)


def notify_dagster(count: int, reviewer: str, via: str) -> str:
    """Record a runless materialization of review_decisions in the Dagster instance.

    Returns a line for the person. Without a Dagster home, the decisions stay recorded in
    the store and the next golden_set run promotes them.
    """
    if not os.environ.get("DAGSTER_HOME"):
        return (
            "DAGSTER_HOME is not set: decisions are saved; materialize golden_set to "
            "promote the approved ones."
        )
    try:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    "review_decisions",
                    metadata={"decisions": count, "reviewer": reviewer, "via": via},
                )
            )
    except Exception as exc:  # the decisions are saved either way
        return f"could not notify Dagster ({type(exc).__name__}: {exc}); decisions are saved."
    return (
        "Dagster notified: the review_decisions sensor promotes approved cases into the "
        "golden set while the daemon runs (make ui); without it: dagster asset materialize "
        "-m eval_pipeline.definitions --select golden_set"
    )


def run(args: argparse.Namespace) -> int:
    db = Path(args.db) if args.db else settings.duckdb_path()
    if not db.exists():  # a typo must not create an empty store and report "0 pending"
        print(f"no store at {db}: run the pipeline first (make demo)")
        return 2
    reviewer = settings.person(args.reviewer)

    def connect():
        # A short wait: a person is told the store is busy (and keeps the typed decision)
        # instead of staring at a silent terminal for the store's full two minutes.
        return store.connect(db, lock_wait=REVIEW_LOCK_WAIT)

    try:
        return _run(args, db, reviewer, connect)
    except duckdb.IOException as exc:
        if not review.is_lock_error(exc):
            raise
        print(
            "the store is busy: another process holds its write lock (a pipeline run?); "
            "nothing was lost, try again in a while"
        )
        return 1


def _run(args: argparse.Namespace, db: Path, reviewer: str, connect) -> int:
    if args.export:
        with connect() as conn:
            n = review_files.export_pending(conn, args.export)
        print(f"wrote {n} pending candidate(s) to {args.export}")
        print(review_files.EXPORT_HELP)
        return 0
    if not reviewer:
        print("no reviewer name: pass --reviewer NAME (or set $USER)")
        return 2
    if args.import_file:
        if not args.import_file.exists():
            print(f"no such file: {args.import_file}")
            return 2
        res = review_files.import_decisions(connect, args.import_file, reviewer)
        if res.errors:
            print(f"nothing recorded: {len(res.errors)} problem(s) in {args.import_file}")
            for e in res.errors:
                print(f"  {printable(e)}")
            return 1
        approved = sum(d.decision == "approve" for d in res.decisions)
        print(
            f"recorded {len(res.decisions)} decision(s) ({approved} approved, "
            f"{len(res.decisions) - approved} rejected); {res.left_pending} left pending"
        )
        if res.decisions:
            print(notify_dagster(len(res.decisions), reviewer, "import"))
        return 0
    hook = label_session.ask_review_score(connect, reviewer) if args.score else None
    res = review_session.run_session(connect, reviewer, limit=args.limit, after_decision=hook)
    if res.approved or res.rejected:
        print(notify_dagster(res.approved + res.rejected, reviewer, "terminal"))
    return 0
