"""The budget through the drift loop's assets: a budgeted sample, judging capped at the
budget, the follow-up, and the per-partition floats the UI plots."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.drift import budget
from eval_pipeline.defs import drift_loop
from eval_pipeline.defs.drift_incidents import IncidentsConfig
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.drift.drift_fixtures import DRIFT_ASSETS, DRIFT_RESOURCES


@pytest.fixture
def demo_days(monkeypatch):
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 300)
    monkeypatch.setattr(demo_traffic, "DAYS", 2)
    demo_traffic.generate(settings.trace_inbox())
    return [demo_traffic.START + dt.timedelta(days=i) for i in range(2)]


def test_a_budgeted_day_stops_at_the_budget_and_states_what_it_can_see(demo_days):
    day = demo_days[0].isoformat()
    result = dg.materialize(
        DRIFT_ASSETS,
        resources=DRIFT_RESOURCES,
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day,
        run_config={
            "ops": {
                "sampled_traces": {"config": {"budget_calls": 40, "floor_per_segment": 5}},
                "judge_scores": {"config": {"budget_calls_per_day": 15, "follow_up_calls": 10}},
            }
        },
    )
    assert result.success
    sampled = result.asset_materializations_for_node("sampled_traces")[0].metadata
    assert sampled["sampled"].value == 40
    judged = result.asset_materializations_for_node("judge_scores")[0].metadata
    assert judged["budget_calls_spent"].value <= 15
    assert judged["not_judged_budget"].value >= 10
    assert judged["failure_rate"].value == 0.0  # unjudged for budget is not a failure
    assert "what_the_sample_can_see" in judged
    assert isinstance(judged["weighted_mean/overall"].value, float)
    assert any(k.startswith("mde/") for k in judged)
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        skipped = conn.execute("SELECT count(*) FROM judge_budget_skips").fetchone()[0]
        lines = dict(conn.execute("SELECT purpose, calls FROM judge_spend").fetchall())
    assert skipped == judged["not_judged_budget"].value
    assert lines["drift"] <= 15 and "drift-follow-up" in lines


def test_min_n_follows_the_one_precedence_rule(monkeypatch):
    monkeypatch.delenv("EVAL_DRIFT_MIN_N", raising=False)
    assert IncidentsConfig().incident_config().min_n == 10
    monkeypatch.setenv("EVAL_DRIFT_MIN_N", "6")
    assert IncidentsConfig().incident_config().min_n == 6
    assert IncidentsConfig(min_n=8).incident_config().min_n == 8  # explicit wins
    monkeypatch.setenv("EVAL_DRIFT_MIN_N", "six")
    with pytest.raises(ValueError, match="EVAL_DRIFT_MIN_N"):
        IncidentsConfig().incident_config()


def _sampled_by_segment(day: str) -> dict[str, int]:
    result = dg.materialize(
        [drift_loop.raw_traces, drift_loop.sampled_traces],
        resources=DRIFT_RESOURCES,
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day,
        run_config={
            "ops": {"sampled_traces": {"config": {"budget_calls": 40, "floor_per_segment": 5}}}
        },
    )
    assert result.success
    meta = result.asset_materializations_for_node("sampled_traces")[0].metadata
    return {s: v["sampled"] for s, v in meta["by_segment"].value.items()}


def test_a_segment_whose_cheap_signal_moved_gets_more_of_the_budgeted_sample(demo_days):
    # trace_signals runs before the sample in the daily job, so its fired tests are there.
    deps = drift_loop.sampled_traces.asset_deps[dg.AssetKey("sampled_traces")]
    assert dg.AssetKey("trace_signals") in deps
    day = demo_days[0].isoformat()
    before = _sampled_by_segment(day)
    seg = min((s for s in before if s != "billing"), key=lambda s: (before[s], s))
    with store.connect(settings.duckdb_path()) as conn:
        conn.execute(
            "INSERT INTO trace_signal_tests (partition_date, segment, signal, key, kind, test, "
            "pages, fired, n, reference_n, reference_days, message) VALUES "
            "(?, ?, 'refusal_rate', '', 'rate', 'Fisher exact', false, true, 60, 900, 14, 'x'), "
            "(?, '__all__', 'prompt_version_share', 'v9', 'new_value', 'never seen', false, "
            "true, 300, 0, 14, 'x')",
            [demo_days[0], seg, demo_days[0]],
        )
        assert budget.moved_segments(conn, demo_days[0]) == {seg}
    after = _sampled_by_segment(day)
    assert sum(after.values()) == sum(before.values()) == 40
    assert after[seg] > before[seg]


def test_turning_the_budget_on_gives_the_measured_configuration_and_leaves_the_fixed_alone():
    # What bench.budget_eval measured: floor 10, no reserve, risk x6, watch CUSUM 0.5.
    fixed, budgeted = drift_loop.sampler_configs(drift_loop.SamplingConfig(budget_calls=66))
    assert (budgeted.calls, budgeted.floor_per_segment, budgeted.reserve) == (66, 10, 0)
    assert (budgeted.risk_oversample, budgeted.watch_cusum) == (6.0, 0.5)
    assert fixed.floor_per_segment == 20 and fixed.sample_size == 200
    assert drift_loop.JudgeFailureConfig().risk_oversample == budgeted.risk_oversample
    assert drift_loop.JudgeFailureConfig().follow_up_calls == 0
    # A floor that is set is the floor of either sampler.
    fixed, budgeted = drift_loop.sampler_configs(drift_loop.SamplingConfig(floor_per_segment=7))
    assert fixed.floor_per_segment == budgeted.floor_per_segment == 7


def test_a_new_days_follow_up_and_mde_use_the_engines_reference(monkeypatch):
    # The reference needs the day's judge, known once stage 1's scores are stored: a day
    # judged for the first time must still get a reference (a finite MDE), not "thin".
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 300)
    monkeypatch.setattr(demo_traffic, "DAYS", 7)
    demo_traffic.generate(settings.trace_inbox())
    days = [demo_traffic.START + dt.timedelta(days=i) for i in range(7)]
    instance = dg.DagsterInstance.ephemeral()
    for day in days[:6]:
        assert dg.materialize(
            DRIFT_ASSETS, resources=DRIFT_RESOURCES, instance=instance, partition_key=str(day)
        ).success
    result = dg.materialize(
        DRIFT_ASSETS,
        resources=DRIFT_RESOURCES,
        instance=instance,
        partition_key=str(days[6]),
        run_config={
            "ops": {
                "sampled_traces": {"config": {"budget_calls": 60}},
                "judge_scores": {"config": {"budget_calls_per_day": 60, "follow_up_calls": 10}},
            }
        },
    )
    assert result.success
    judged = result.asset_materializations_for_node("judge_scores")[0].metadata
    mdes = [v.value for k, v in judged.items() if k.startswith("mde/")]
    assert any(m == m for m in mdes), mdes  # at least one is a number, not NaN
