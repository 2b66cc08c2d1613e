"""`eval-pipeline judge`: check the configured judge endpoint, show what judging cost.

eval-pipeline judge check [--query Q --response A [--reference R]]
    Judges one pair with the judge the environment selects (EVAL_JUDGE, EVAL_JUDGE_*)
    and prints the outcome: exit 0 when it is ok, 1 otherwise. The quickest way to see
    that an endpoint, model and key work before pointing the pipeline at them.
eval-pipeline judge costs [--since YYYY-MM-DD]
    Per-day judge accounting from the store (read-only): cache hits vs calls, requests,
    tokens, cost estimate, failures by kind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.judge.base import JudgeRequest
from eval_pipeline.core.judge.factory import judge_from_env

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
    total_cost = [r[8] for r in rows if r[8] is not None]
    print(
        f"\n{len(rows)} days, {sum(r[5] for r in rows)} judge calls, "
        f"{sum(r[4] for r in rows)} cache hits"
        + (f", estimated cost {sum(total_cost):.4f}" if total_cost else "")
    )
    return 0
