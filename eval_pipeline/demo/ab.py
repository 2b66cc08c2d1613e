"""`make demo` step: an A/B test of the demo app's two prompts, through Dagster.

Materializes ``prompt_ab_test`` with ``dagster asset materialize`` in the project's Dagster
home (so the UI shows the run and its markdown report), then reads the verdict back from
DuckDB, prints it and adds it to the demo summary under ``"ab"``.
"""

from __future__ import annotations

import time

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.demo.dagster_cli import dagster_materialize

ROOT = settings.PROJECT_ROOT
CASES = ROOT / "data" / "ab" / "cases.jsonl"
PROMPTS = ROOT / "eval_pipeline" / "demo" / "app"


def run(summary: dict) -> None:
    a, b = PROMPTS / "prompt_good.txt", PROMPTS / "prompt_regressed.txt"
    config = {
        "ops": {
            "prompt_ab_test": {
                "config": {
                    "cases_path": str(CASES),
                    "a_prompt": str(a),
                    "b_prompt": str(b),
                    "pairwise": True,
                }
            }
        }
    }
    print("\n== A/B test: the current prompt (A) vs the 'compliance update' (B) ==")
    started = time.time()
    code, _ = dagster_materialize("prompt_ab_test", "ab.log", config=config)
    if code != 0:
        raise SystemExit(f"the A/B asset failed (exit {code}); log: data/demo/ab.log")
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        row = conn.execute(
            "SELECT run_id, verdict, report_md, n_cases, judge_name FROM ab_runs "
            "WHERE epoch(finished_at) >= ? ORDER BY finished_at DESC LIMIT 1",
            [started - 5],
        ).fetchone()
        if row is None:
            raise SystemExit("the A/B asset ran but no A/B run is in the store")
        run_id, verdict, report_md, n_cases, judge_name = row
        comps = conn.execute(
            "SELECT family, n, n_excluded, value_a, value_b, delta, ci_low, ci_high, "
            "p_adjusted, rank_p_adjusted, effect_size, floor, needed_n, verdict "
            "FROM ab_comparisons WHERE run_id = ? ORDER BY family",
            [run_id],
        ).fetchall()
    # The verdict block of the report is what the CLI prints too.
    block = report_md.split("```")[1].strip() if "```" in report_md else report_md
    print(block)
    cols = ("n", "n_excluded", "value_a", "value_b", "delta", "ci_low", "ci_high",
            "p_adjusted", "rank_p_adjusted", "effect_size", "floor", "needed_n", "verdict")  # fmt: skip
    summary["ab"] = {
        "run_id": run_id,
        "a": a.name,
        "b": b.name,
        "cases": n_cases,
        "judge": judge_name,
        "verdict": verdict,
        "comparisons": {c[0]: dict(zip(cols, c[1:], strict=True)) for c in comps},
    }
