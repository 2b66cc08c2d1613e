"""The regression gate and the A/B run write their own lines (``gate``, ``ab``) in the
judge's daily ledger: fresh judge calls count, cache hits and rule-graded cases do not."""

from __future__ import annotations

import json
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.ab.run import compare_variants
from eval_pipeline.core.ab.store import store_ab
from eval_pipeline.core.ab.variants import variants_from_prompts
from eval_pipeline.core.drift import budget
from eval_pipeline.core.judge.base import HeuristicJudge
from eval_pipeline.core.judge.cache import CachedJudge
from eval_pipeline.core.judge.spend import judge_key, run_day
from eval_pipeline.core.regression import cases, history
from eval_pipeline.core.regression import gate as regression
from eval_pipeline.core.regression.gate import GateSpec
from eval_pipeline.core.regression.runners import TargetSpec

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "eval_pipeline" / "demo" / "app"
TARGET = "eval_pipeline_tests.regression.test_regress_criteria:answer"
KEY = judge_key(HeuristicJudge().name, HeuristicJudge().model, HeuristicJudge().rubric_version)


class Counting(HeuristicJudge):
    calls = 0

    def judge_many(self, requests, progress=None):
        Counting.calls += len(requests)
        return super().judge_many(requests, progress)


def golden(tmp_path, rows) -> str:
    path = tmp_path / "golden.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def ledger(day) -> dict:
    with store.connect(settings.duckdb_path()) as conn:
        return budget.accounting(conn, day, budget.Budget(judge=KEY, calls_per_day=100))


def test_the_gate_records_its_judge_calls_per_run(tmp_path):
    rows = [
        {"id": "a", "input": "q-ok", "expected": "5 days", "grader": "judge"},
        {"id": "b", "input": "q-wrong", "expected": "5 days", "grader": "judge"},
        {"id": "down", "input": "q-down", "expected": "5 days", "grader": "judge"},
        {
            "id": "rule",
            "input": "q-ok",
            "expected": "5 days",
            "grader": {"type": "contains", "values": ["5 days"]},
        },
    ]
    spec = GateSpec(target=TargetSpec(target=TARGET), golden_path=golden(tmp_path, rows))
    Counting.calls = 0
    for _ in range(2):
        run = regression.run_gate(spec, judge_factory=Counting)
        assert run.judge_calls == 2  # the unanswered case and the rule case ask no judge
        with store.connect(settings.duckdb_path()) as conn:
            history.record(conn, run)
    day = run_day(run.started_at)
    acc = ledger(day)
    assert acc["lines"]["gate"] == {"calls": 4, "cost": None}  # two runs, both count
    assert acc["calls"] == 4 == Counting.calls

    rules_only = GateSpec(target=TargetSpec(target=TARGET), golden_path=golden(tmp_path, rows[3:]))
    run = regression.run_gate(rules_only, judge_factory=Counting)
    with store.connect(settings.duckdb_path()) as conn:
        history.record(conn, run)
    assert ledger(day)["lines"]["gate"]["calls"] == 4  # no judge, no line change


def test_an_ab_run_records_fresh_calls_and_a_rerun_from_the_cache_costs_nothing():
    cs = cases.load_cases(ROOT / "data" / "ab" / "cases.jsonl")[:8]
    variants = variants_from_prompts(
        "eval_pipeline.demo.app:answer", [APP / "prompt_good.txt", APP / "prompt_regressed.txt"]
    )
    Counting.calls = 0
    first = compare_variants(cs, variants, CachedJudge(Counting(), settings.duckdb_path()))
    assert first.judge_calls == Counting.calls > 0
    with store.connect(settings.duckdb_path()) as conn:
        store_ab(conn, first)
    day = run_day(first.started_at)
    assert ledger(day)["lines"]["ab"] == {"calls": Counting.calls, "cost": None}

    judge = CachedJudge(Counting(), settings.duckdb_path())
    second = compare_variants(cs, variants, judge)
    assert second.judge_calls == 0 and judge.cache_hits > 0
    with store.connect(settings.duckdb_path()) as conn:
        store_ab(conn, second)
    assert ledger(day)["lines"]["ab"]["calls"] == first.judge_calls
