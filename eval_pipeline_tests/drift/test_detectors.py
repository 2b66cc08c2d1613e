"""The day's shortfall statistic and the CUSUM, against hand-computed sequences."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest
from scipy import stats

from eval_pipeline.core.drift import detectors
from eval_pipeline.core.drift.reference import Counts, between_day_variance


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


# A realistic judge-score distribution: mostly 4s and 5s, a tail of 1s.
SKEWED = np.array([0.04, 0.05, 0.12, 0.35, 0.44])
LEVELS = np.arange(1, 6)


def test_the_lattice_tail_is_the_exact_distribution_of_the_sum():
    # Brute force over all 5**4 outcomes of four scores.
    n, probs = 4, SKEWED
    exact = {}
    for outcome in itertools.product(range(5), repeat=n):
        total = n + sum(outcome)
        exact[total] = exact.get(total, 0.0) + float(np.prod(probs[list(outcome)]))
    for s in range(n, 5 * n + 1):
        want = sum(p for t, p in exact.items() if t <= s)
        assert detectors.lattice_lower_tail(probs, n, s) == pytest.approx(want)
    assert detectors.lattice_lower_tail(probs, n, n - 1) == 0.0


def test_the_normal_tail_understates_a_low_day_and_the_exact_one_does_not():
    # Why the day test used to fire more often than its level: the mean of 40 skewed
    # scores has a heavier lower tail than the normal curve. Simulated frequency of a day
    # at least 3.44 standard errors low vs the two tails.
    n = 40
    mu, var = SKEWED @ LEVELS, SKEWED @ (LEVELS - SKEWED @ LEVELS) ** 2
    threshold = n * mu - 3.44 * math.sqrt(n * var)
    rng = np.random.default_rng(7)
    sums = rng.multinomial(n, SKEWED, size=400_000) @ LEVELS
    observed = float(np.mean(sums <= threshold))
    exact = detectors.lattice_lower_tail(SKEWED, n, int(math.floor(threshold)))
    normal = float(stats.norm.sf(3.44))
    assert observed > 2 * normal
    assert exact == pytest.approx(observed, rel=0.15)
    # The Edgeworth correction used for the overall row goes most of the way.
    m3 = SKEWED @ (LEVELS - mu) ** 3
    edgeworth = detectors.edgeworth_lower_tail(3.44, m3 / var**1.5 / math.sqrt(n))
    assert normal < edgeworth <= exact * 1.05


def test_the_reference_error_and_overdispersion_widen_the_standard_error():
    base = detectors.shortfall(4.0, 1.0, None, 3.5, 40, ref_probs=None)
    with_ref = detectors.shortfall(4.0, 1.0, 400, 3.5, 40)
    with_tau = detectors.shortfall(4.0, 1.0, 400, 3.5, 40, tau2=0.02)
    assert base.z > with_ref.z > with_tau.z
    assert with_tau.se == pytest.approx(math.sqrt(1 / 40 + 1 / 400 + 0.02))
    assert with_tau.z == pytest.approx(0.5 / with_tau.se)  # normal tail: plain z


def test_between_day_variance_is_zero_for_iid_days_and_positive_when_days_wobble():
    rng = np.random.default_rng(3)
    iid = [Counts(tuple(rng.multinomial(40, SKEWED))) for _ in range(21)]
    assert between_day_variance(iid) < 0.01
    wobbly = []
    for _ in range(21):
        shift = rng.normal(0, 0.3)  # the true day mean moves by about 0.3 points
        p = np.clip(SKEWED + shift * np.array([-0.1, -0.1, 0, 0.1, 0.1]), 0.001, None)
        wobbly.append(Counts(tuple(rng.multinomial(200, p / p.sum()))))
    assert between_day_variance(wobbly) > 0.01
    assert between_day_variance(iid[:2]) == 0.0  # too few days to say


def test_recovery_z_pools_the_days_and_counts_the_reference_error_once():
    # Two days of 40 scores, each 0.05 below the reference: today's variance 1/40 each,
    # the shared part (reference error) 0.004 once, not halved by pooling.
    day = detectors.Shortfall(drop=0.05, se=math.sqrt(0.025 + 0.004), z=0.3, p=0.4,
                              se2_today=0.025)  # fmt: skip
    z = detectors.recovery_z([(day, 40), (day, 40)], margin=0.2)
    assert z == pytest.approx(0.15 / math.sqrt(0.0125 + 0.004))
    assert detectors.recovery_z([(day, 40)] * 8, 0.2) > z  # more days, more evidence
    assert detectors.recovery_z([], 0.2) == -math.inf
    worse = dataclasses_replace(day, drop=0.25)
    assert detectors.recovery_z([(worse, 40)] * 8, 0.2) < 0  # still 0.25 below: no proof
