"""A failed blocking check is described as what it means, in the issue's own words."""

from __future__ import annotations

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
