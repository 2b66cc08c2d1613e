"""What the sample can see: the normal formula (the overall row) against the textbook and
in simulation, the overall row's statement, the CUSUM's figure, and the same-day
follow-up's false-alarm rate on clean traffic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench import power_eval
from eval_pipeline.core.drift import budget, detectors, power
from eval_pipeline.core.drift.calibration import CLEAN_SCORES
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.drift.report import ALL_SEGMENTS as ALL
from eval_pipeline.core.drift.weights import Estimate

LEVELS = np.arange(1, 6)


def test_mde_matches_the_two_sample_formula():
    # Two groups of 63, two-sided alpha 0.05 (one-sided 0.025), 80% power: the textbook
    # n = 2 (z_0.975 + z_0.8)^2 sigma^2 / delta^2 = 62.8 for delta = sigma / 2.
    assert power.mde(1.0, 63, 63, 0.025) == pytest.approx(
        (1.959964 + 0.841621) * math.sqrt(2 / 63), rel=1e-5
    )
    assert power.mde(1.0, 63, 63, 0.025) < 0.5 < power.mde(1.0, 62, 62, 0.025)
    assert power.power_at(power.mde(0.9, 20, 400, 0.001), 0.9, 20, 400, 0.001) == pytest.approx(0.8)


def test_drops_of_the_stated_size_are_detected_in_80_percent_of_runs():
    rng = np.random.default_rng(11)
    sd = math.sqrt(CLEAN_SCORES @ LEVELS**2 - (CLEAN_SCORES @ LEVELS) ** 2)
    n, n_ref, alpha, runs = 30, 600, 0.002 / 7, 3000
    m = power.mde(sd, n, n_ref, alpha)
    hits = 0
    for _ in range(runs):
        ref = Counts.of(rng.choice(LEVELS, size=n_ref, p=CLEAN_SCORES))
        today = rng.choice(LEVELS, size=n, p=CLEAN_SCORES) - m
        sf = detectors.shortfall(ref.mean, ref.variance, ref.n, float(today.mean()), n)
        hits += sf.p < alpha
    assert 0.75 <= hits / runs <= 0.85


def test_the_overall_row_states_the_normal_formulas_figures():
    est = {ALL: Estimate(4.0, 0.05, 200, 160.0, 5000, 0.0)}
    pooled = Counts((30, 50, 120, 350, 450))
    row = budget.sample_power(est, {ALL: budget.HealthyReference(pooled)}, 0.001, 0.3, 0.2)[0]
    sd = math.sqrt(pooled.variance)
    assert row.mde == pytest.approx(power.mde(sd, 160.0, pooled.n, 0.001))
    steady = ((stats.norm.isf(0.001) + stats.norm.ppf(0.8)) / 0.3) ** 2 * pooled.variance
    assert row.n_for_target == math.ceil(steady * (1 + 1 / 21) - 1e-9)
    assert row.mde_shift is None
    new = budget.sample_power({"new": Estimate(4.0, 0.2, 12, 12.0, 30, 0.0)}, {}, 0.001)[0]
    assert new.mde is None and "no reference" in new.sentence()
    big = budget.sample_power(
        {ALL: Estimate(4.0, 0.01, 5000, 5000.0, 9000, 0.0)},
        {ALL: budget.HealthyReference(Counts((3000, 5000, 12000, 35000, 45000)))},
        0.001, 0.3, 0.2,
    )[0]  # fmt: skip
    assert big.mde == 0.2  # never below the day test's practical floor


def test_follow_up_takes_every_segment_at_or_past_the_line_in_name_order():
    rule = budget.FollowUpRule(z_follow=1.0)
    sf = {
        "calm": detectors.Shortfall(0.0, 0.1, 0.3, 0.4),
        "odd": detectors.Shortfall(0.3, 0.1, 1.5, 0.07),
        "odder": detectors.Shortfall(0.5, 0.1, 2.5, 0.006),
        "alarm": detectors.Shortfall(0.9, 0.1, 4.0, 3e-5),
    }
    # The one already past the day test's line too: it may alarm on the full day only.
    assert budget.suspects(sf, rule) == ["alarm", "odd", "odder"]


def test_the_follow_up_keeps_the_day_tests_false_alarm_rate_on_clean_traffic():
    # Clean traffic, 60 references x 4,000 days, through the engine's own segment test
    # (exact tail, the reference's error and between-day variance) at alpha = 0.01 (a
    # larger alpha than the engine's so that 240,000 segment-days measure it well; the
    # design's argument does not depend on alpha). Stage 1 is 20 traces, +30 at z >= 1.
    alpha = 0.01
    rates = power_eval.two_stage_rates(60, 4000, alpha)
    tol = 3 * math.sqrt(alpha / 240_000)
    assert rates["follow-up as built"] <= alpha + tol
    assert rates["one look, n1"] <= alpha + tol
    # Letting either look alarm spends far more than alpha.
    assert rates["naive two looks"] > 1.3 * rates["follow-up as built"] + tol
    # And the follow-up buys power: a 0.5-point drop is seen far more often than by one
    # look at stage 1 alone.
    hit = power_eval.two_stage_rates(5, 2000, alpha, drop=0.5)
    assert hit["follow-up as built"] > hit["one look, n1"] + 0.15


def test_cusum_run_length_matches_siegmund_and_a_simulation():
    k, h = detectors.CUSUM_K, detectors.CUSUM_H
    # In control (no drop): Siegmund's figure for k=0.5 and the project's h (b = h + 1.166).
    b = h + 1.166
    assert power.cusum_arl(0.0, k, h) == pytest.approx(
        (math.exp(2 * 0.5 * b) - 2 * 0.5 * b - 1) / (2 * 0.25)
    )
    se = 0.2
    drop = power.cusum_drop(se, 5, k, h)
    assert power.cusum_arl(drop / se, k, h) == pytest.approx(5, rel=1e-4)
    rng = np.random.default_rng(8)
    runs = []
    for _ in range(3000):
        _, first = detectors.cusum_path(list(rng.normal(drop / se, 1.0, 60)), k, h)
        runs.append(first + 1)
    assert np.mean(runs) == pytest.approx(5, rel=0.12)
