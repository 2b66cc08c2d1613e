"""`eval-pipeline judge`: check the configured judge endpoint, show what judging cost.

eval-pipeline judge check [--query Q --response A [--reference R]]
    Judges one pair with the judge the environment selects (EVAL_JUDGE, EVAL_JUDGE_*)
    and prints the outcome: exit 0 when it is ok, 1 otherwise. The quickest way to see
    that an endpoint, model and key work before pointing the pipeline at them.
eval-pipeline judge costs [--since YYYY-MM-DD]
    Per-day judge accounting from the store (read-only): cache hits vs calls, requests,
    tokens, cost estimate, failures by kind; anchor and retest judgments on their own lines.
eval-pipeline judge label [--judge ID] [--labeller NAME] [--limit N]
                          [--export FILE | --import FILE]
    Score judged traces yourself, 1-5, in the terminal (the judge's score is hidden; saved
    as you go, resumable), or export the queue to JSONL and import it once scored.
eval-pipeline judge agreement [--judge ID] [--min-labels N] [--bar K]
    Agreement of a judge identity with people: weighted kappa with its interval, exact and
    within-one agreement, Spearman, bias, confusion matrix, largest disagreements, and the
    trust status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from pathlib import Path

import duckdb

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.judge import agreement as ag
from eval_pipeline.core.judge import labels, trust
from eval_pipeline.core.judge.base import JudgeRequest
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline.core.judge.label_session import run_session
from eval_pipeline.core.terminal import printable

SAMPLE = JudgeRequest(
    query="How do I reset my password?",
    response="Open Settings > Security, click 'Reset password' and follow the link we email "
    "you within 5 minutes.",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="check the judge endpoint; show judging costs per day")
    actions = p.add_subparsers(dest="judge_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="judge one pair with the configured judge")
    check.add_argument("--query", default=SAMPLE.query)
    check.add_argument("--response", default=SAMPLE.response)
    check.add_argument("--reference", default=None)
    check.set_defaults(func=run_check)
    costs = actions.add_parser("costs", help="per-day judge accounting from the store")
    costs.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    costs.add_argument("--since", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
    costs.set_defaults(func=run_costs)
    ident_help = (
        "judge identity 'name|model|rubric_version' (default: the one that scored most recently)"
    )
    label = actions.add_parser(
        "label",
        help="score judged traces yourself (interactive), or --export / --import JSONL",
        description="Score judged traces 1-5 on the judge's scale, the judge's score hidden. "
        "The queue is stratified by the judge's score. " + labels.EXPORT_HELP,
    )
    label.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    label.add_argument("--judge", default=None, help=ident_help)
    label.add_argument("--labeller", default=None, help="your name (default: $USER)")
    label.add_argument("--limit", type=int, default=None, help="at most N traces")
    label.add_argument(
        "--unstratified",
        action="store_true",
        help="a simple random sample of the judged traces instead of equal numbers per judge "
        "score (for a kappa that describes production's mix of scores)",
    )
    mode = label.add_mutually_exclusive_group()
    mode.add_argument("--export", metavar="FILE", type=Path, help="write the queue to FILE")
    mode.add_argument(
        "--import", dest="import_file", metavar="FILE", type=Path, help="record a scored FILE"
    )
    label.set_defaults(func=run_label)
    agree = actions.add_parser("agreement", help="agreement of a judge with people; trust")
    agree.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    agree.add_argument("--judge", default=None, help=ident_help)
    agree.add_argument("--min-labels", type=int, default=ag.MIN_LABELS)
    agree.add_argument("--bar", type=float, default=ag.KAPPA_BAR)
    agree.set_defaults(func=run_agreement)


def run_check(args: argparse.Namespace) -> int:
    try:
        judge = judge_from_env()
    except ValueError as exc:
        print(f"judge configuration error: {exc}")
        return 2
    [j] = judge.judge_many([JudgeRequest(args.query, args.response, args.reference)])
    print(f"judge:          {judge.name} (model {judge.model or 'none'})")
    print(f"rubric:         {judge.rubric_version}")
    structured = getattr(judge, "response_format", None)
    if structured:
        print(f"structured out: {structured}")
    print(f"state:          {j.state}")
    print(f"score:          {j.score if j.score is not None else '-'}")
    print(f"reason:         {j.reason}")
    if j.state != "ok" and j.raw_output:
        print(f"raw output:     {j.raw_output[:500]}")
    latency = f"{j.latency_ms:.0f} ms" if j.latency_ms is not None else "-"
    print(f"attempts:       {j.attempts}, latency {latency}")
    print(f"tokens:         {j.prompt_tokens or 0} prompt, {j.completion_tokens or 0} completion")
    return 0 if j.state == "ok" else 1


def run_costs(args: argparse.Namespace) -> int:
    path = args.db or settings.duckdb_path()
    try:
        with store.connect(path, read_only=True) as conn:
            rows = conn.execute(
                "SELECT partition_date, judge_name, judge_model, n, cache_hits, judge_calls,"
                " http_attempts, prompt_tokens + completion_tokens, cost_estimate,"
                " failures_by_kind FROM judge_accounting"
                " WHERE partition_date >= coalesce(?, DATE '1970-01-01') ORDER BY 1",
                [args.since],
            ).fetchall()
    except Exception as exc:  # no store yet, or a store from before this table
        print(f"no judge accounting in {path}: {exc}")
        return 2
    lines = _criterion_lines(path, args.since)
    print(
        f"{'day':<12}{'judge':<22}{'n':>6}{'cached':>8}{'calls':>7}{'requests':>10}"
        f"{'tokens':>10}{'cost':>10}  failures"
    )
    for day, name, model, n, hits, calls, reqs, tokens, cost, failures in rows:
        who = f"{name}/{model}" if model else name
        cost_text = "-" if cost is None else f"{cost:.4f}"
        fails = ", ".join(f"{k} {v}" for k, v in json.loads(failures).items()) or "none"
        print(
            f"{day!s:<12}{who[:21]:<22}{n:>6}{hits:>8}{calls:>7}{reqs:>10}{tokens:>10}"
            f"{cost_text:>10}  {fails}"
        )
        # A day judged on several criteria: what each cost, on its own line.
        for crit, c_n, c_na, c_hits, c_calls, c_reqs, c_tokens, c_cost in lines.get(day, []):
            c_cost_text = "-" if c_cost is None else f"{c_cost:.4f}"
            print(
                f"{'':<12}{'  ' + crit[:19]:<22}{c_n:>6}{c_hits:>8}{c_calls:>7}{c_reqs:>10}"
                f"{c_tokens:>10}{c_cost_text:>10}  not applicable {c_na}"
            )
    try:
        with store.connect(path, read_only=True) as conn:
            extra = conn.execute(
                "SELECT run_date, kind, judge_identity, judge_calls, http_attempts,"
                " prompt_tokens + completion_tokens, cost_estimate FROM judge_anchor_accounting"
                " WHERE run_date >= coalesce(?, DATE '1970-01-01') ORDER BY 1, 2",
                [args.since],
            ).fetchall()
    except Exception:  # a store from before the anchor tables
        extra = []
    if extra:
        print("anchor set, re-judged outside the cache (anchors: daily; retest: judge noise):")
        print(
            f"{'day':<12}{'kind':<9}{'calls':>7}{'requests':>10}{'tokens':>10}{'cost':>10}  judge"
        )
    for day, kind, ident, calls, reqs, tokens, cost in extra:
        cost_text = "-" if cost is None else f"{cost:.4f}"
        print(
            f"{day!s:<12}{kind:<9}{calls:>7}{reqs:>10}{tokens:>10}{cost_text:>10}  "
            f"{printable(ident)}"
        )
    total_cost = [r[8] for r in rows if r[8] is not None]
    print(
        f"\n{len(rows)} days, {sum(r[5] for r in rows)} judge calls, "
        f"{sum(r[4] for r in rows)} cache hits"
        + (f", estimated cost {sum(total_cost):.4f}" if total_cost else "")
    )
    return 0


def _criterion_lines(path, since) -> dict:
    """Per day judged on more than one criterion, its per-criterion accounting lines."""
    try:
        with store.connect(path, read_only=True) as conn:
            rows = conn.execute(
                "SELECT partition_date, criterion, n, not_applicable, cache_hits, judge_calls,"
                " http_attempts, prompt_tokens + completion_tokens, cost_estimate"
                " FROM judge_accounting_criteria"
                " WHERE partition_date >= coalesce(?, DATE '1970-01-01')"
                " QUALIFY count(*) OVER (PARTITION BY partition_date) > 1 ORDER BY 1, 2",
                [since],
            ).fetchall()
    except Exception:  # a store from before per-criterion accounting
        return {}
    out: dict = {}
    for day, *line in rows:
        out.setdefault(day, []).append(tuple(line))
    return out


def _identity(conn, requested: str | None) -> str | None:
    if requested:
        return labels.JudgeIdentity.parse(requested).key
    known = labels.identities(conn)
    return known[0] if known else None


def run_label(args: argparse.Namespace) -> int:
    db = Path(args.db) if args.db else settings.duckdb_path()
    if not db.exists():  # a typo must not create an empty store
        print(f"no store at {db}: run the pipeline first (make demo)")
        return 2
    labeller = settings.person(args.labeller)
    if not labeller:
        print("no labeller name: pass --labeller NAME (or set $USER)")
        return 2
    try:
        with store.connect(db) as conn:
            identity = _identity(conn, args.judge)
            if identity is None:
                print("no judged traces in the store: nothing to label")
                return 2
            if args.export:
                n = labels.export_queue(
                    labels.queue(
                        conn, identity, labeller, args.limit, stratify=not args.unstratified
                    ),
                    args.export,
                )
                print(f"wrote {n} trace(s) to label for {printable(identity)} to {args.export}")
                print(labels.EXPORT_HELP)
                return 0
            if args.import_file:
                if not args.import_file.exists():
                    print(f"no such file: {args.import_file}")
                    return 2
                res = labels.import_labels(conn, args.import_file, labeller)
                if res.errors:
                    print(f"nothing recorded: {len(res.errors)} problem(s) in {args.import_file}")
                    for e in res.errors[:50]:
                        print(f"  {printable(e)}")
                    return 1
                print(f"recorded {res.recorded} label(s); {res.skipped} line(s) left unscored")
                return 0
    except ValueError as exc:
        print(f"cannot label: {printable(exc)}")
        return 2
    run_session(
        lambda: store.connect(db),
        identity,
        labeller,
        limit=args.limit,
        stratify=not args.unstratified,
    )
    return 0


def _f(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.2f}"


def run_agreement(args: argparse.Namespace) -> int:
    db = Path(args.db) if args.db else settings.duckdb_path()
    if not db.exists():
        print(f"no store at {db}: run the pipeline first (make demo)")
        return 2
    try:
        with store.connect(db, read_only=True) as conn:
            identity = _identity(conn, args.judge)
            if identity is None:
                print("no judged traces in the store")
                return 2
            res = trust.agreement_for(conn, identity)
            status = trust.judge_trust_status(conn, identity, args.min_labels, args.bar, res)
            retest = conn.execute(
                "SELECT run_date, retest_kappa, retest_exact FROM judge_drift_findings"
                " WHERE judge_identity = ? AND retest_exact IS NOT NULL"
                " ORDER BY run_date DESC LIMIT 1",
                [identity],
            ).fetchone()
    except ValueError as exc:
        print(f"cannot compute agreement: {printable(exc)}")
        return 2
    except duckdb.Error as exc:  # a store from before the label tables (read-only: no migration)
        print(f"no judge labels in {db}: {printable(exc)}")
        return 2
    print(f"judge:          {printable(identity)}")
    print(f"labels:         {res.n}")
    print(f"weighted κ:     {res.kappa_text()}  (quadratic weights, 95% BCa bootstrap)")
    print(f"exact:          {_f(res.exact)}   within one: {_f(res.within_one)}")
    print(f"spearman:       {_f(res.spearman)}")
    print(f"mean bias:      {_f(res.mean_bias)}  (judge - person)")
    if retest:
        print(
            f"test-retest:    κ {_f(retest[1])}, exact {_f(retest[2])} "
            f"(the judge against itself on the anchors, {retest[0]})"
        )
    else:
        print("test-retest:    not measured yet (the judge_anchors asset measures it)")
    print("confusion (rows: person 1-5, columns: judge 1-5):")
    for score, row in enumerate(res.confusion, 1):
        print(f"  {score}  " + " ".join(f"{c:>4}" for c in row))
    if res.largest:
        print("largest disagreements (judge vs person):")
        for d in res.largest:
            print(f"  {printable(d.item)}: judge {d.judge_score}, person {d.human_score}")
    print(f"trust:          {status.status} ({printable(status.reason)})")
    return 0
