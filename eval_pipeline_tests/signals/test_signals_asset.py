"""The trace_signals asset through Dagster on a temporary store: a float per signal per
partition, a ranged run, the pool, and the definitions loading it."""

from __future__ import annotations

import datetime as dt
import json
import math

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.defs import drift_loop, signals
from eval_pipeline.defs.resources import EvalStore, TraceSourceResource
from eval_pipeline.demo import traffic as demo_traffic

ASSETS = [drift_loop.raw_traces, signals.trace_signals]
RESOURCES = {"store": EvalStore(), "trace_source": TraceSourceResource()}


@pytest.fixture
def demo_days(monkeypatch):
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 200)
    monkeypatch.setattr(demo_traffic, "DAYS", 5)
    demo_traffic.generate(settings.trace_inbox())
    return [demo_traffic.START + dt.timedelta(days=i) for i in range(5)]


def test_one_day_gives_a_float_for_every_signal(demo_days):
    result = dg.materialize(
        ASSETS, resources=RESOURCES, instance=dg.DagsterInstance.ephemeral(),
        partition_key=demo_days[0].isoformat(),
    )  # fmt: skip
    assert result.success
    meta = result.asset_materializations_for_node("trace_signals")[0].metadata
    for key in ("refusal_rate", "empty_rate", "cutoff_rate", "error_rate",
                "answer_chars_median", "answer_words_p10", "query_chars_p90",
                "latency_ms_median", "cost_usd_median"):  # fmt: skip
        assert isinstance(meta[key], dg.FloatMetadataValue), key
    assert 0 <= meta["refusal_rate"].value <= 1
    assert meta["answer_chars_median"].value > 0
    # The demo's traces carry no latency: a gap (NaN), never a fake zero.
    assert math.isnan(meta["latency_ms_median"].value)
    assert any(k.startswith("segment_share/") for k in meta)
    assert any(k.startswith("refusal_rate/") for k in meta)
    assert meta["dagster/row_count"].value > 150
    assert meta["tests"].value == "no test yet"  # no reference on the first day
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "no_signal_page" and check.passed


def test_a_ranged_run_tests_later_days_against_the_earlier_ones(demo_days):
    first, last = demo_days[0].isoformat(), demo_days[-1].isoformat()
    result = dg.materialize(
        ASSETS, resources=RESOURCES, instance=dg.DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
    )  # fmt: skip
    assert result.success
    per_day = {
        m.partition: m.metadata
        for m in result.asset_materializations_for_node("trace_signals")
        if m.partition
    }
    assert sorted(per_day) == [d.isoformat() for d in demo_days]
    assert "| segment | signal |" in per_day[last]["tests"].value
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        days = conn.execute("SELECT count(DISTINCT partition_date) FROM trace_signals").fetchone()
        tested = conn.execute(
            "SELECT count(*) FROM trace_signal_tests WHERE partition_date = ?", [demo_days[-1]]
        ).fetchone()
    assert days == (5,) and tested[0] > 0


def test_a_bad_pattern_in_the_config_file_fails_the_run_with_its_reason(demo_days, tmp_path):
    path = tmp_path / "signals.json"
    path.write_text(json.dumps({"refusal_patterns": ["(oops"]}))
    with pytest.raises(ValueError, match=r"refusal_patterns\[0\].*not a valid regular expression"):
        dg.materialize(
            ASSETS, resources=RESOURCES, instance=dg.DagsterInstance.ephemeral(),
            partition_key=demo_days[0].isoformat(),
            run_config={"ops": {"trace_signals": {"config": {"config_path": str(path)}}}},
        )  # fmt: skip


def test_the_asset_shares_the_drift_loop_partitions_and_pool():
    spec = signals.trace_signals
    assert spec.partitions_def == drift_loop.raw_traces.partitions_def
    assert spec.op.pool == "duckdb"
    assert spec.backfill_policy == drift_loop.raw_traces.backfill_policy
    assert spec.dependency_keys == {dg.AssetKey("raw_traces")}
