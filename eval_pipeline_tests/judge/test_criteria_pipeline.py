"""Several criteria through the Dagster drift loop (fake OpenAI server): per-criterion
metadata on judge_scores and drift_report, and a quality-only run without any of it."""

from __future__ import annotations

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.defs import drift_incidents, drift_loop
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.drift.drift_fixtures import DRIFT_RESOURCES
from eval_pipeline_tests.fake_openai import fake_openai  # noqa: F401
from eval_pipeline_tests.judge.criteria_fixtures import responder

ASSETS = [
    drift_loop.raw_traces,
    drift_loop.sampled_traces,
    drift_loop.judge_scores,
    drift_loop.drift_report,
    drift_incidents.drift_incidents,
]


@pytest.fixture
def day(monkeypatch, fake_openai):  # noqa: F811
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 40)
    monkeypatch.setattr(demo_traffic, "DAYS", 1)
    demo_traffic.generate(settings.trace_inbox())
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "fake-judge")
    fake_openai.responder = responder(4)
    return demo_traffic.START.isoformat()


def _meta(result, node):
    meta = result.asset_materializations_for_node(node)[0].metadata
    return {k: v.value for k, v in meta.items()}


def _run(day):
    result = dg.materialize(
        ASSETS,
        resources=DRIFT_RESOURCES,
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day,
    )
    assert result.success
    return (
        _meta(result, "judge_scores"),
        _meta(result, "drift_report"),
        _meta(result, "drift_incidents"),
    )


@pytest.mark.parametrize("mode", ["per-criterion", "one-call"])
def test_each_criterion_has_its_own_metadata(day, monkeypatch, fake_openai, mode):  # noqa: F811
    monkeypatch.setenv("EVAL_JUDGE_CRITERIA", "quality,relevance,correctness")
    monkeypatch.setenv("EVAL_JUDGE_CRITERIA_MODE", mode)
    judged, report, incidents = _run(day)
    n = judged["dagster/row_count"]
    assert incidents["open_incidents/relevance"] == 0  # one day: no verdict yet
    assert "drop/relevance/overall" in incidents
    assert judged["criteria_mode"] == mode
    assert judged["mean_score/quality"] == judged["mean_score/relevance"] == 4.0
    assert judged["not_applicable/correctness"] > 0  # demo traces carry no reference
    assert judged["judge_calls/quality"] == judged["judge_calls/relevance"]
    assert "mean_score/relevance/overall" in report and "alerts/relevance" in report
    assert "mean_score/correctness/overall" not in report  # never judged: no series
    assert report["mean_score"] == 4.0  # the quality report, as before
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = conn.execute(
            "SELECT criterion, count(*) FROM judge_scores GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("quality", n // 2), ("relevance", n // 2)]


def test_a_quality_only_run_has_no_criterion_keys(day):
    judged, report, incidents = _run(day)
    assert not [k for k in incidents if k.startswith(("open_incidents/", "drop/relevance"))]
    assert not [k for k in judged if k.count("/") and k.split("/")[0] in ("judge_calls",)]
    assert "criteria_mode" not in judged
    assert not [k for k in report if k.startswith(("alerts/", "report/"))]


def test_a_judge_budget_counts_each_criterion_and_keeps_traces_whole(day, monkeypatch, fake_openai):  # noqa: F811
    monkeypatch.setenv("EVAL_JUDGE_CRITERIA", "quality,relevance")
    result = dg.materialize(
        ASSETS[:3],
        resources=DRIFT_RESOURCES,
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day,
        run_config={"ops": {"judge_scores": {"config": {"budget_calls_per_day": 10}}}},
    )
    assert result.success
    assert fake_openai.calls <= 10
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        per_trace = conn.execute(
            "SELECT count(*) FROM judge_scores GROUP BY trace_id HAVING count(*) <> 2"
        ).fetchall()
        judged = conn.execute("SELECT count(DISTINCT trace_id) FROM judge_scores").fetchone()[0]
        skipped = conn.execute("SELECT count(*) FROM judge_budget_skips").fetchone()[0]
    assert per_trace == [] and judged == 5 and skipped > 0
