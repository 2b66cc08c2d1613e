"""Judge trust with a REAL model: SmolLM2-135M through llama.cpp (`make llm-setup`).

A small day of demo traffic is judged by the model through the Dagster assets; a scripted
labeller scores the same traces from the flaw the demo generator put in each answer (none
5, vague 2, truncated 2, terse 1, refusal 1: the ground truth a person would see); then the
product reports the model's agreement and trust status, and re-judges a small anchor set.

A 135M model is not a judge anyone should trust. The test checks that the product says so
honestly (figures computed, status unvalidated with its reason), not that the model is good.
"""

from __future__ import annotations

import json
import math

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.judge import labels, trust
from eval_pipeline.defs import drift_loop, judge_trust
from eval_pipeline.defs.resources import EvalStore, JudgeResource, TraceSourceResource
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.judge.test_llm_server_integration import llm_server  # noqa: F401

pytestmark = pytest.mark.llm_server

FLAW_SCORE = {"none": 5, "vague": 2, "truncated": 2, "terse": 1, "refusal": 1}


def test_a_real_model_is_labelled_and_its_agreement_reported(llm_server, monkeypatch):  # noqa: F811
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 40)
    monkeypatch.setattr(demo_traffic, "DAYS", 1)
    demo_traffic.generate(settings.trace_inbox())
    day = demo_traffic.START.isoformat()
    judge = JudgeResource(
        kind="openai",
        base_url=llm_server,
        model="smollm2-135m-instruct",
        concurrency=2,
        read_timeout=120,
        deadline=300,
        max_retries=2,
    )
    resources = {"store": EvalStore(), "trace_source": TraceSourceResource(), "judge": judge}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [drift_loop.raw_traces, drift_loop.sampled_traces, drift_loop.judge_scores],
        resources=resources,
        instance=instance,
        partition_key=day,
        run_config={
            "ops": {
                "sampled_traces": {"config": {"sample_size": 16, "floor_per_segment": 1}},
                "judge_scores": {"config": {"max_failure_rate": 1.0}},
            }
        },
    )
    assert result.success
    identity = labels.JudgeIdentity.of(judge.build()).key
    with store.connect(settings.duckdb_path()) as conn:
        queue = labels.queue(conn, identity, "scripted")
        flaws = dict(
            conn.execute(
                "SELECT trace_id, metadata FROM raw_traces WHERE partition_date = ?", [day]
            ).fetchall()
        )
        for item in queue:
            flaw = json.loads(flaws[item.trace_id])["flaw"]
            labels.record(conn, item, "scripted", FLAW_SCORE[flaw])
        res = trust.agreement_for(conn, identity)
        status = trust.judge_trust_status(conn, identity, result=res)
    print(
        f"\nSmolLM2-135M vs scripted labels: n={res.n}, {res.kappa_text()}, exact "
        f"{res.exact:.2f}, within one {res.within_one:.2f}, spearman {res.spearman:.2f}, "
        f"bias {res.mean_bias:+.2f}\nconfusion (person rows, judge columns): {res.confusion}"
        f"\n{status.line()}"
    )
    assert res.n == len(queue) >= 8  # every trace the model scored ok was labelled
    assert sum(map(sum, res.confusion)) == res.n
    assert status.status == "unvalidated"  # fewer than 50 labels, whatever the model did
    assert status.reason.startswith(f"{res.n} labels; κ")
    assert math.isnan(res.kappa) or -1 <= res.kappa <= 1

    anchors_run = dg.materialize(
        [judge_trust.judge_anchors],
        resources={"store": EvalStore(), "judge": judge},
        instance=instance,
        partition_key=day,
        run_config={"ops": {"judge_anchors": {"config": {"anchor_size": 8}}}},
    )
    meta = anchors_run.asset_materializations_for_node("judge_anchors")[0].metadata
    print(f"anchors: {meta['verdict'].value}; retest κ {meta['retest_kappa'].value}")
    assert meta["anchor_judge_calls"].value == 32  # first scoring + its 3 repeats, no cache
    assert meta["anchors_calls"].value == 8 and meta["repeats_calls"].value == 24
    assert meta["judge_drift"].value is False  # the first scoring is the baseline
