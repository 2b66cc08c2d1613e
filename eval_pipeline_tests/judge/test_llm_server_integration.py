"""The LLM judge against a REAL model server: llama-cpp-python's OpenAI-compatible server on
127.0.0.1 serving SmolLM2-135M-Instruct (set up by `make llm-setup`, i.e.
scripts/setup_llm_server.sh, into .tools/). A handful of traces go end to end through the
Dagster assets raw_traces -> sampled_traces -> judge_scores.

The model is far too small to be a good judge: the test checks the protocol (structured
output, fallbacks, parsing, states, accounting, cache), not the quality of its scores.
"""

from __future__ import annotations

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.defs import drift_loop
from eval_pipeline.defs.resources import EvalStore, JudgeResource, TraceSourceResource
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.judge.llm_server_fixtures import llama_server

pytestmark = pytest.mark.llm_server


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """Start the model server once per session; stop it by its PID afterwards."""
    with llama_server(tmp_path_factory.mktemp("llm_server")) as base_url:
        yield base_url


@pytest.fixture
def few_traces(monkeypatch):
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 30)
    monkeypatch.setattr(demo_traffic, "DAYS", 1)
    demo_traffic.generate(settings.trace_inbox())
    return demo_traffic.START.isoformat()


def test_a_real_model_judges_traces_through_the_dagster_asset(llm_server, few_traces, monkeypatch):
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    resources = {
        "store": EvalStore(),
        "trace_source": TraceSourceResource(),
        "judge": JudgeResource(
            base_url=llm_server,
            model="smollm2-135m-instruct",
            concurrency=2,
            read_timeout=120,
            deadline=300,
            max_retries=2,
        ),
    }
    assets = [drift_loop.raw_traces, drift_loop.sampled_traces, drift_loop.judge_scores]
    run_config = {
        "ops": {
            "sampled_traces": {"config": {"sample_size": 4, "floor_per_segment": 1}},
            # A 135M model is not a judge anyone should trust; its failure rate is not gated.
            "judge_scores": {"config": {"max_failure_rate": 1.0}},
        }
    }
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        assets,
        resources=resources,
        instance=instance,
        partition_key=few_traces,
        run_config=run_config,
    )
    assert result.success
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("judge_scores")[0].metadata.items()
    }
    n = meta["dagster/row_count"]
    assert 4 <= n <= 8  # sample_size, or the per-segment floors when they add up to more
    assert meta["judge"] == "openai" and meta["judge_model"] == "smollm2-135m-instruct"
    # llama-cpp-python rejects response_format json_schema; json_object + schema works.
    assert meta["judge_response_format"] in ("json_schema", "json_object")
    assert meta["ok"] + meta["unparseable"] + meta["error"] == n
    assert meta["error"] == 0, "the server answered every call"
    assert meta["ok"] >= 1
    assert meta["prompt_tokens"] > 100 * meta["judge_calls"]  # real usage from the server
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = conn.execute(
            "SELECT state, score, reason, raw_output, attempts, latency_ms FROM judgments"
        ).fetchall()
    assert rows
    for state, score, reason, raw, attempts, latency in rows:
        assert reason and raw and attempts >= 1 and latency > 0
        assert (state == "ok") == (score is not None)
        if state == "ok":
            assert 1 <= score <= 5

    # Re-materialising the day asks the model nothing.
    again = dg.materialize(
        assets[2:],
        resources=resources,
        instance=instance,
        partition_key=few_traces,
        run_config={"ops": {"judge_scores": run_config["ops"]["judge_scores"]}},
    )
    meta2 = again.asset_materializations_for_node("judge_scores")[0].metadata
    assert meta2["judge_calls"].value == meta["error"] == 0
    assert meta2["cache_hits"].value == n - meta["error"]
