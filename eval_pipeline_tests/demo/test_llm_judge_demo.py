"""The judge's `make demo` step, with the pipeline pointed at an OpenAI-compatible endpoint
(the fake server): the re-materialisation through the dagster CLI makes zero calls."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.defs import drift_loop
from eval_pipeline.defs.resources import EvalStore, JudgeResource, TraceSourceResource
from eval_pipeline.demo import judge as demo_judge
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.fake_openai import fake_openai  # noqa: F401


@pytest.mark.slow
def test_demo_step_reports_accounting_and_a_free_rerun(monkeypatch, capsys, fake_openai):  # noqa: F811
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 120)
    monkeypatch.setattr(demo_traffic, "DAYS", 2)
    demo_traffic.generate(settings.trace_inbox())
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "demo-model")
    monkeypatch.setenv("EVAL_JUDGE_API_KEY", "sk-demo-secret")
    days = [(demo_traffic.START + dt.timedelta(days=i)).isoformat() for i in range(2)]
    resources = {
        "store": EvalStore(),
        "trace_source": TraceSourceResource(),
        "judge": JudgeResource(),
    }
    instance = dg.DagsterInstance.get()  # the test's own DAGSTER_HOME, as the CLI will use
    for day in days:
        result = dg.materialize(
            [drift_loop.raw_traces, drift_loop.sampled_traces, drift_loop.judge_scores],
            resources=resources,
            instance=instance,
            partition_key=day,
        )
        assert result.success
    calls = fake_openai.calls
    assert calls > 0

    summary: dict = {}
    demo_judge.run(summary)
    section = summary["judge"]
    assert section["judge"] == "openai" and section["model"] == "demo-model"
    assert section["days"] == 2 and section["judge_calls"] == calls
    assert section["rerun"]["day"] == days[-1]
    assert section["rerun"]["judge_calls"] == 0
    assert section["rerun"]["cache_hits"] == section["rerun"]["n"] > 0
    assert fake_openai.calls == calls  # the dagster CLI run asked the endpoint nothing
    out = capsys.readouterr().out
    assert "=== Judge: openai (demo-model)" in out and "EVAL_JUDGE=openai" in out
    assert "sk-demo-secret" not in out
