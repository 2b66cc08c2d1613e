"""The drift loop through Dagster: assets on a temporary DuckDB, ranges, idempotency,
checks, the schedule, and the definitions loading the way `dagster dev` loads them."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.defs import drift_loop
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.drift.drift_fixtures import DRIFT_ASSETS, DRIFT_RESOURCES

ASSETS = DRIFT_ASSETS
RESOURCES = DRIFT_RESOURCES
TABLES = ["raw_traces", "trace_rejects", "sampled_traces", "judge_scores", "drift_reports"]


@pytest.fixture
def demo_days(monkeypatch):
    """Three small demo days in the test's own inbox."""
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 300)
    monkeypatch.setattr(demo_traffic, "DAYS", 3)
    demo_traffic.generate(settings.trace_inbox())
    return [demo_traffic.START + dt.timedelta(days=i) for i in range(3)]


def counts() -> dict[str, int]:
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def run(instance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS, resources=RESOURCES, instance=instance, **kwargs)


def test_one_day_through_every_asset(demo_days):
    instance = dg.DagsterInstance.ephemeral()
    result = run(instance, partition_key=demo_days[0].isoformat())
    assert result.success
    meta = result.asset_materializations_for_node("raw_traces")[0].metadata
    assert meta["rows_ingested"].value > 250 and meta["rows_rejected"].value == 3
    judged = result.asset_materializations_for_node("judge_scores")[0].metadata
    assert judged["judge"].value == "heuristic"
    assert judged["judge_calls"].value > 0
    report = result.asset_materializations_for_node("drift_report")[0].metadata
    assert "| segment |" in report["report"].value
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["judge_failure_rate"].passed
    assert checks["no_drift_alert"].passed


def test_rerunning_a_day_changes_no_row_counts_and_judges_nothing_again(demo_days):
    instance = dg.DagsterInstance.ephemeral()
    key = demo_days[1].isoformat()
    run(instance, partition_key=key)
    before = counts()
    result = run(instance, partition_key=key)
    assert counts() == before
    judged = result.asset_materializations_for_node("judge_scores")[0].metadata
    assert judged["judge_calls"].value == 0
    assert judged["cache_hits"].value == judged["dagster/row_count"].value


def test_a_partition_range_runs_as_one_run(demo_days):
    instance = dg.DagsterInstance.ephemeral()
    result = run(
        instance,
        tags={
            "dagster/asset_partition_range_start": demo_days[0].isoformat(),
            "dagster/asset_partition_range_end": demo_days[-1].isoformat(),
        },
    )
    assert result.success
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        days = conn.execute(
            "SELECT DISTINCT partition_date FROM drift_reports ORDER BY 1"
        ).fetchall()
    assert [d[0] for d in days] == demo_days
    # The latest materialization of each day carries that day's own figures, so the UI
    # plots them per partition.
    latest = {}
    for m in result.asset_materializations_for_node("judge_scores"):
        latest[m.partition] = m.metadata
    assert sorted(latest) == [d.isoformat() for d in demo_days]
    assert all("mean_score" in meta and "judge_calls" in meta for meta in latest.values())
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        means = dict(
            conn.execute(
                "SELECT partition_date::VARCHAR, avg(score) FROM judge_scores GROUP BY 1"
            ).fetchall()
        )
    for day, meta in latest.items():
        assert meta["mean_score"].value == pytest.approx(means[day])


def test_a_day_without_traces_materialises_as_an_empty_day(demo_days):
    result = run(dg.DagsterInstance.ephemeral(), partition_key="2026-09-15")
    assert result.success
    meta = result.asset_materializations_for_node("raw_traces")[0].metadata
    assert meta["rows_ingested"].value == 0


def test_the_schedule_asks_for_yesterday_at_two_utc():
    from eval_pipeline.definitions import defs

    d = defs()
    schedule = d.resolve_schedule_def("daily_drift_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    ctx = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 10, 23, 2, 0, tzinfo=dt.UTC),
        repository_def=d.get_repository_def(),
    )
    requests = schedule.evaluate_tick(ctx).run_requests
    assert [r.partition_key for r in requests] == ["2026-10-22"]


def test_every_asset_that_opens_the_store_is_in_the_duckdb_pool():
    from eval_pipeline.definitions import defs

    graph = defs().resolve_asset_graph()
    checked = 0
    for assets_def in graph.assets_defs:
        if "store" not in assets_def.required_resource_keys:
            continue
        for key in assets_def.keys:
            checked += 1
            node = graph.get(key)
            assert node.pools == {"duckdb"}, f"{key.to_user_string()} opens DuckDB outside the pool"
    assert checked >= 8  # the drift loop, judge annotations, feedback, regression, A/B...


def test_definitions_load_like_dagster_dev(tmp_path):
    """`dagster dev -w workspace.yaml` loads the code location from workspace.yaml."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def _golden_run(judge_name: str, rubric: str, mean: float) -> None:
    with store.connect(settings.duckdb_path()) as conn:
        conn.execute(
            "INSERT INTO regression_runs (run_id, deploy_id, target, runner_kind, golden_version,"
            " started_at, finished_at, n_cases, n_passed, n_failed, n_errors, pass_rate,"
            " threshold, max_error_rate, status, judge_name, rubric_version, judge_mean, judge_n)"
            " VALUES ('r1', 'abc123', 'app:answer', 'callable', 'g1', now()::TIMESTAMP,"
            " now()::TIMESTAMP, 10, 10, 0, 0, 1.0, 0.9, 0.5, 'pass', ?, ?, ?, 10)",
            [judge_name, rubric, mean],
        )


def _drift_report_pinned_to_golden(demo_days, judge: tuple[str, str], mean: float):
    instance = dg.DagsterInstance.ephemeral()
    key = demo_days[0].isoformat()
    run(instance, partition_key=key)
    _golden_run(*judge, mean)
    return dg.materialize(
        [drift_loop.drift_report],
        resources=RESOURCES,
        instance=instance,
        partition_key=key,
        run_config={"ops": {"drift_report": {"config": {"baseline_from_golden_run": True}}}},
        raise_on_error=False,
    )


def test_baseline_can_be_pinned_to_the_golden_run_at_deploy_time(demo_days):
    result = _drift_report_pinned_to_golden(demo_days, ("heuristic", "heuristic-v2"), 4.75)
    assert result.success
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        kind, base = conn.execute(
            "SELECT baseline_kind, baseline_mean FROM drift_reports WHERE segment = '__all__'"
        ).fetchone()
    assert (kind, base) == ("pinned", 4.75)


def test_a_pinned_baseline_from_another_judge_is_refused(demo_days):
    result = _drift_report_pinned_to_golden(demo_days, ("openai", "quality-v1"), 4.2)
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    assert "not comparable" in str(error.to_string())
