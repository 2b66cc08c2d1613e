"""`make demo` step: what judging cost, and the judgment cache at work, through Dagster.

After the drift backfill it reads the per-day judge accounting, then re-materialises
``judge_scores`` for the last judged day with ``dagster asset materialize`` (in the project's
Dagster home, so the UI shows the run) and reads back how many judge calls that made: zero,
because every judgment is cached. It adds the figures under ``"judge"`` in the summary and
prints how to point the pipeline at a real OpenAI-compatible endpoint instead.
"""

from __future__ import annotations

import json
from collections import Counter

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.demo.dagster_cli import dagster_materialize

POINT_AT_AN_ENDPOINT = """\
to judge with an LLM instead of the heuristic judge (any OpenAI-compatible endpoint):
  export EVAL_JUDGE=openai EVAL_JUDGE_BASE_URL=http://127.0.0.1:8080/v1 EVAL_JUDGE_MODEL=NAME
  export EVAL_JUDGE_API_KEY=...        # if the endpoint needs one (never logged or stored)
  eval-pipeline judge check            # one test judgment: state, score, tokens, latency
  make demo                            # the same demo, judged by that endpoint"""


def _accounting(conn) -> list[tuple]:
    return conn.execute(
        "SELECT partition_date, judge_name, judge_model, rubric_version, n, cache_hits,"
        " judge_calls, http_attempts, failures_by_kind, prompt_tokens, completion_tokens,"
        " cost_estimate FROM judge_accounting ORDER BY partition_date"
    ).fetchall()


def _rematerialize(day: str) -> float:
    code, seconds = dagster_materialize("judge_scores", "dagster_judge.log", partition=day)
    if code != 0:
        raise SystemExit(f"re-materialising judge_scores failed (exit {code})")
    return seconds


def run(summary: dict) -> None:
    path = settings.duckdb_path()
    with store.connect(path, read_only=True) as conn:
        rows = _accounting(conn)
    if not rows:
        print("\n=== Judge ===\nno judged days in the store: skipped")
        return
    failures: Counter = Counter()
    for row in rows:
        failures.update(json.loads(row[8]))
    last_day = rows[-1][0].isoformat()
    seconds = _rematerialize(last_day)
    with store.connect(path, read_only=True) as conn:
        again = {r[0].isoformat(): r for r in _accounting(conn)}[last_day]
    costs = [r[11] for r in rows if r[11] is not None]
    section = {
        "judge": rows[-1][1],
        "model": rows[-1][2],
        "rubric_version": rows[-1][3],
        "days": len(rows),
        "judgments": sum(r[4] for r in rows),
        "judge_calls": sum(r[6] for r in rows),
        "cache_hits": sum(r[5] for r in rows),
        "http_requests": sum(r[7] for r in rows),
        "tokens": sum(r[9] + r[10] for r in rows),
        "cost_estimate": sum(costs) if costs else None,
        "failures_by_kind": dict(sorted(failures.items())),
        "rerun": {
            "day": last_day,
            "judge_calls": again[6],
            "cache_hits": again[5],
            "n": again[4],
            "seconds": round(seconds, 1),
        },
    }
    summary["judge"] = section
    who = f"{section['judge']}" + (f" ({section['model']})" if section["model"] else "")
    print(f"\n=== Judge: {who}, rubric {section['rubric_version']} ===")
    print(
        f"{section['judgments']} judgments over {section['days']} days: "
        f"{section['judge_calls']} judge calls, {section['cache_hits']} from the cache, "
        f"{section['http_requests']} requests, {section['tokens']} tokens"
        + (f", estimated cost {section['cost_estimate']:.4f}" if costs else "")
    )
    print(
        "failures by kind: "
        + (", ".join(f"{k} {v}" for k, v in section["failures_by_kind"].items()) or "none")
    )
    rerun = section["rerun"]
    print(
        f"re-materialised {last_day}: {rerun['judge_calls']} judge calls, "
        f"{rerun['cache_hits']}/{rerun['n']} from the cache ({rerun['seconds']} s)"
    )
    print(POINT_AT_AN_ENDPOINT)
