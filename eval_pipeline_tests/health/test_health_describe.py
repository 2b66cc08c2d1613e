"""A failed blocking check is described as what it means, in the issue's own words."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from eval_pipeline.defs import health as health_defs


def evaluation(check: str, asset: str, **metadata) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset),
        check_name=check,
        passed=False,
        metadata={
            k: dg.MetadataValue.float(v) if isinstance(v, float) else dg.MetadataValue.text(v)
            for k, v in metadata.items()
        },
        severity=dg.AssetCheckSeverity.ERROR,
        blocking=True,
    )


def test_the_judge_failure_check_reads_as_a_missing_verdict():
    e = evaluation(
        "judge_failure_rate",
        "judge_scores",
        worst_failure_rate=0.07,
        worst_day="2026-10-22",
        max_failure_rate=0.05,
    )
    assert health_defs.describe_check(e) == (
        "the judge failed on 7% of the day's sample (limit 5%): no drift verdict for 2026-10-22"
    )
    just_over = evaluation(
        "judge_failure_rate",
        "judge_scores",
        worst_failure_rate=0.054,
        worst_day="2026-10-22",
        max_failure_rate=0.05,
    )
    assert "failed on 5.4% of the day's sample (limit 5%)" in health_defs.describe_check(just_over)


def test_the_gate_and_any_other_blocking_check():
    gate = evaluation(
        "pass_rate", "golden_regression", pass_rate=0.75, threshold=0.9, verdict="3 newly failing"
    )
    assert health_defs.describe_check(gate) == (
        "the regression gate blocked the deploy: pass rate 75% below 90% (3 newly failing)"
    )
    other = evaluation("rows_present", "feedback")
    assert health_defs.describe_check(other) == "blocking check feedback:rows_present failed"


def run(job: str, assets: set[str] | None = None, **tags: str) -> dg.DagsterRun:
    return dg.DagsterRun(
        job_name=job,
        asset_selection={dg.AssetKey(a) for a in assets} if assets else None,
        tags=tags,
    )


def test_runs_from_the_asset_graph_count_as_the_job_of_their_assets():
    adhoc = run(
        "__ASSET_JOB", {"raw_traces", "drift_report"}, **{"dagster/partition": "2026-10-22"}
    )
    assert health_defs.logical_job(adhoc) == "daily_drift_job"
    assert health_defs.run_scope(adhoc, "daily_drift_job") == ("2026-10-22", dt.date(2026, 10, 22))
    assert (
        health_defs.logical_job(run("__ASSET_JOB", {"golden_regression"}))
        == "golden_regression_job"
    )
    assert health_defs.logical_job(run("__ASSET_JOB", {"golden_set"})) == "assets:golden_set"
    assert health_defs.logical_job(run("__ASSET_JOB", {"trace_signals"})) == "daily_drift_job"
    # In both the drift job and the anchors job: counted as the drift job's.
    assert health_defs.logical_job(run("__ASSET_JOB", {"judge_anchors"})) == "daily_drift_job"
    assert (
        health_defs.logical_job(run("judge_anchors_job", {"judge_anchors"})) == "judge_anchors_job"
    )
    assert health_defs.logical_job(run("some_other_job")) is None


def test_scopes_of_ranges_files_and_unpartitioned_jobs():
    ranged = run(
        "daily_drift_job",
        **{
            "dagster/asset_partition_range_start": "2026-10-01",
            "dagster/asset_partition_range_end": "2026-10-31",
        },
    )
    assert health_defs.run_scope(ranged, "daily_drift_job") == (
        "2026-10-01...2026-10-31",
        dt.date(2026, 10, 31),
    )
    fb = run("feedback_ingestion_job", **{health_defs.SCOPE_TAGS["feedback_ingestion_job"]: "ab12"})
    assert health_defs.run_scope(fb, "feedback_ingestion_job") == ("ab12", None)
    assert health_defs.run_scope(run("golden_regression_job"), "golden_regression_job") == (
        "",
        None,
    )
