"""The day's shortfall statistic and the CUSUM, against hand-computed sequences."""

from __future__ import annotations

import math

import pytest

from eval_pipeline.core.drift import detectors


def test_cusum_on_a_known_sequence():
    path, first = detectors.cusum_path([0.2, 1.5, 1.5, -3.0, 2.0, 2.0, 2.0, 2.0], k=0.5, h=4.0)
    assert path == pytest.approx([0.0, 1.0, 2.0, 0.0, 1.5, 3.0, 4.5, 6.0])
    assert first == 6  # the first S_t above h


def test_cusum_ignores_noise_below_k_and_catches_a_small_persistent_shift():
    _, first = detectors.cusum_path([0.4] * 1000, k=0.5, h=6.25)
    assert first is None  # always below k: never accumulates
    _, first = detectors.cusum_path([1.5] * 20, k=0.5, h=6.25)
    assert first == 6  # 1.0 a day: above 6.25 on the 7th day
    # A shift of 1.5 standard errors is never significant on one day at the day-test
    # level, but the CUSUM pages within a week.
    assert detectors.stratified_shortfall([(1, 1.5, 0.0, 1.0)]).p > detectors.DAY_ALPHA


def test_shortfall_in_standard_errors():
    sf = detectors.shortfall(ref_mean=4.0, ref_var=1.0, ref_n=400, mean=3.8, n=25)
    se = math.sqrt(1 / 25 + 1 / 400)
    assert sf.drop == pytest.approx(0.2) and sf.se == pytest.approx(se)
    assert sf.z == pytest.approx(0.2 / se) and 0 < sf.p < 0.5
    pinned = detectors.shortfall(4.0, 1.0, None, 3.8, 25)  # a pinned value has no error
    assert pinned.se == pytest.approx(0.2)


def test_the_overall_row_is_standardised_to_the_reference_mix():
    # Two segments, neither changed: (weight, ref mean, today's mean, se²).
    parts = [(300.0, 4.5, 4.5, 0.01), (100.0, 3.5, 3.5, 0.01)]
    assert detectors.stratified_shortfall(parts).drop == pytest.approx(0.0)
    # One segment 0.4 lower: the overall drop is its reference share of it.
    parts = [(300.0, 4.5, 4.5, 0.01), (100.0, 3.5, 3.1, 0.01)]
    assert detectors.stratified_shortfall(parts).drop == pytest.approx(0.1)
