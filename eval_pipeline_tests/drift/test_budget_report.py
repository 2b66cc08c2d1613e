"""The drift report of a budgeted day: weighted figures and tests, fixed days unchanged."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from eval_pipeline.core.drift.report import DriftConfig, drift_for_day
from eval_pipeline.core.drift.weights import post_stratified

DAY = dt.date(2026, 3, 1)


def day_frame(day, segment, strata: dict[str, tuple[int, list[int]]]) -> pd.DataFrame:
    """strata: name -> (population size, judged scores)."""
    rows = []
    for st, (size, scores) in strata.items():
        for y in scores:
            rows.append((day, segment, "ok", float(y), st, size))
    return pd.DataFrame(
        rows, columns=["partition_date", "segment", "state", "score", "stratum", "stratum_size"]
    )


def test_a_budgeted_day_reports_post_stratified_figures():
    # The risk slice (10% of traffic, all 1s) is half of the judged traces.
    today = day_frame(
        DAY, "billing", {"billing": (900, [5] * 10), "billing | risk": (100, [1] * 10)}
    )
    base = pd.concat(
        day_frame(DAY - dt.timedelta(days=d), "billing", {"billing": (1000, [5, 4] * 10)})
        for d in range(1, 8)
    )
    rows = {r.segment: r for r in drift_for_day(today, base, DriftConfig())}
    row = rows["billing"]
    assert row.mean_score == pytest.approx(0.9 * 5 + 0.1 * 1)  # not the raw mean, 3.0
    assert row.bad_share == pytest.approx(0.1)
    assert row.p10_score == 1.0
    assert row.baseline_mean == pytest.approx(4.5)
    assert row.delta == pytest.approx(4.6 - 4.5)
    assert not row.alert  # the raw mean (3.0) would have alerted
    raw = {r.segment: r for r in drift_for_day(today.drop(columns=["stratum", "stratum_size"]),
                                               base.drop(columns=["stratum", "stratum_size"]),
                                               DriftConfig())}  # fmt: skip
    assert raw["billing"].mean_score == pytest.approx(3.0) and raw["billing"].alert


def test_weighted_day_test_keeps_its_size_on_clean_traffic():
    # Clean traffic, risk slice oversampled 3x: the weighted z-test's false-alarm rate at
    # 0.05 stays near 0.05 (the unweighted mean would be biased by the slice).
    rng = np.random.default_rng(7)
    probs = np.array([0.05, 0.05, 0.1, 0.3, 0.5])
    hits, runs = 0, 400
    for _ in range(runs):
        today = day_frame(DAY, "s", {
            "s": (700, list(rng.choice(np.arange(1, 6), 20, p=probs))),
            "s | risk": (300, list(rng.choice(np.arange(1, 6), 20, p=probs[::-1]))),
        })  # fmt: skip
        base = pd.concat(
            day_frame(
                DAY - dt.timedelta(days=d),
                "s",
                {
                    "s": (700, list(rng.choice(np.arange(1, 6), 30, p=probs))),
                    "s | risk": (300, list(rng.choice(np.arange(1, 6), 30, p=probs[::-1]))),
                },
            )  # fmt: skip
            for d in range(1, 8)
        )
        row = next(r for r in drift_for_day(today, base, DriftConfig()) if r.segment == "s")
        hits += row.mean_p_value < 0.05
    rate = hits / runs
    assert abs(rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / runs) + 0.01, rate


def test_weighted_mean_is_the_post_stratified_one():
    today = day_frame(DAY, "s", {"s": (800, [4, 5, 3]), "s | risk": (200, [1, 2])})
    row = next(r for r in drift_for_day(today, today.iloc[:0], DriftConfig()) if r.segment == "s")
    assert row.mean_score == pytest.approx(post_stratified(today).mean)
