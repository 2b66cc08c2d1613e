"""The A/B statistics: known answers from published textbook data, verdict rules, and seeded
simulations of the error rate and power.

Every published figure asserted here is also recomputed by hand (plain arithmetic or an
exact enumeration), so a test never only checks scipy against itself.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from eval_pipeline.core.ab import stats as S

# --- known answers ----------------------------------------------------------------------

# Student (1908), "The probable error of a mean", Biometrika 6:1-25: the Cushny & Peebles
# sleep data, extra hours of sleep of 10 patients under two drugs (R's `sleep` data set).
# Published paired t-test (R: t.test(extra ~ group, data = sleep, paired = TRUE)):
# t = 4.0621, df = 9, p-value = 0.002833, mean difference 1.58, 95% CI 0.700 to 2.460.
SLEEP_DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_matches_student_sleep_data():
    c = S.compare_scores(SLEEP_DRUG_1, SLEEP_DRUG_2, score_range=(-10, 10))
    assert c.n == 10 and c.t_df == 9
    assert round(c.t_stat, 2) == 4.06
    assert round(c.t_p, 5) == 0.00283
    assert c.delta == pytest.approx(1.58)
    # By hand: t = mean(d) / (sd(d) / sqrt(n)).
    d = [y - x for x, y in zip(SLEEP_DRUG_1, SLEEP_DRUG_2, strict=True)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1))
    assert c.t_stat == pytest.approx(mean / (sd / math.sqrt(len(d))))
    assert c.d_z == pytest.approx(mean / sd)  # Cohen's d_z
    assert round(c.d_z, 2) == 1.28


# Hollander & Wolfe, "Nonparametric Statistical Methods" (1973, 2nd ed. 1999), Example 3.1:
# Hamilton depression scale factor IV for 9 patients at the first (x) and second (y) visit
# (also R's wilcox.test example). Published: T+ = 40, one-sided exact p = 0.020
# (R: V = 40, p-value = 0.01953), so the two-sided exact p is 0.039.
HW_FIRST = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
HW_SECOND = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]


def test_wilcoxon_matches_hollander_wolfe_example():
    # Our W+ is the rank sum of positive B - A differences: B = first visit, A = second.
    c = S.compare_scores(HW_SECOND, HW_FIRST, score_range=(0, 4))
    assert c.w_stat == 40
    assert c.w_method == "exact"
    assert round(c.w_p / 2, 3) == 0.020
    # By hand: under H0 each rank's sign is a fair coin; count the 2^9 sign patterns whose
    # W+ is at least 40, double for two sides.
    at_least = sum(
        1
        for signs in itertools.product((0, 1), repeat=9)
        if sum(r for r, s in zip(range(1, 10), signs, strict=True) if s) >= 40
    )
    assert at_least == 10
    assert c.w_p == pytest.approx(2 * at_least / 2**9)


# Fagerland, Lydersen & Laake (2013), "The McNemar test for binary matched-pairs data",
# BMC Medical Research Methodology 13:91, Table 1 (Bentur et al. 2009): airway
# hyper-responsiveness before/after stem cell transplantation in 21 children:
# 1 yes/yes, 1 yes/no, 7 no/yes, 12 no/no. Published: McNemar exact conditional p = 0.070.
def test_mcnemar_exact_matches_fagerland_bentur_example():
    a = [True] * 1 + [True] * 1 + [False] * 7 + [False] * 12
    b = [True] * 1 + [False] * 1 + [True] * 7 + [False] * 12
    c = S.compare_pass_fail(a, b)
    assert (c.both_pass, c.a_only, c.b_only, c.both_fail) == (1, 1, 7, 12)
    assert round(c.p, 3) == 0.070
    # By hand: 2 * P(X <= 1) for X ~ Binomial(8, 1/2).
    assert c.p == pytest.approx(2 * (math.comb(8, 0) + math.comb(8, 1)) / 2**8)


# Agresti, "An Introduction to Categorical Data Analysis" (2nd ed. 2007), Table 8.1:
# approval of the President in two surveys of the same 1600 people: 794 approve both,
# 150 approve then disapprove, 86 disapprove then approve, 570 disapprove both.
# Published: difference of proportions -0.04, SE 0.0095, 95% CI (-0.06, -0.02); z = -4.17.
def test_pass_rate_ci_matches_agresti_presidential_approval():
    a = [True] * 794 + [True] * 150 + [False] * 86 + [False] * 570
    b = [True] * 794 + [False] * 150 + [True] * 86 + [False] * 570
    c = S.compare_pass_fail(a, b)
    assert c.pass_a == pytest.approx(0.59) and c.pass_b == pytest.approx(0.55)
    assert c.delta == pytest.approx(-0.04)
    assert (round(c.ci_low, 2), round(c.ci_high, 2)) == (-0.06, -0.02)
    # By hand: the plain Wald SE (our Agresti-Min interval differs by 1/2 a count per cell).
    se = math.sqrt((150 + 86) / 1600 - (0.04) ** 2) / math.sqrt(1600)
    assert round(se, 4) == 0.0095
    assert (86 - 150) / math.sqrt(86 + 150) == pytest.approx(-4.17, abs=0.005)
    assert c.p < 0.001
    assert c.verdict == S.INCONCLUSIVE  # significant, but 4 points is below the 5-point floor


# Cohen (1988) / G*Power 3 (Faul et al. 2007), "Means: difference from constant": d = 0.5,
# alpha = 0.05 two-sided, power 0.80 -> n = 34 with actual power 0.8078.
def test_sample_size_matches_gpower():
    assert S.paired_t_sample_size(0.5, 1.0) == 34
    assert round(S.paired_t_power(34, 0.5, 1.0), 4) == 0.8078
    # By hand, the normal approximation ((z_a + z_b) / d)^2 = 31.4 is a lower bound.
    assert pytest.approx(31.4, abs=0.05) == ((1.959964 + 0.841621) / 0.5) ** 2
    assert S.paired_t_sample_size(0.5, 1.0) > 31.4


def test_mcnemar_sample_size_by_hand():
    # Connor (1987): psi = 0.2, d = 0.05 -> (1.96*sqrt(.2) + 0.8416*sqrt(.2 - .0025))^2 / .0025
    expected = math.ceil(
        (1.959964 * math.sqrt(0.2) + 0.841621 * math.sqrt(0.2 - 0.0025)) ** 2 / 0.0025
    )
    assert S.mcnemar_sample_size(0.05, 0.2) == expected == 626
    assert S.mcnemar_sample_size(0.05, 0.0) is None


def test_holm_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, then made monotone.
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 capped at 1
    assert S.holm([0.04, 0.5]) == pytest.approx([0.08, 0.5])


# --- verdicts ---------------------------------------------------------------------------


def _scores(diffs, base=3):
    a = [base] * len(diffs)
    return a, [base + d for d in diffs]


def test_clear_improvement_is_a_win_with_all_the_evidence():
    a, b = _scores([1] * 20 + [0] * 15 + [-1] * 5)
    c = S.compare_scores(a, b, seed=7)
    assert c.verdict == S.B_WINS
    assert c.significant and c.clears_floor and not c.tests_disagree
    assert c.delta == pytest.approx(0.375) and c.mean_a == 3 and c.mean_b == 3.375
    assert c.ci_low > 0 < c.ci_high and c.ci_low < c.delta < c.ci_high
    assert c.w_p < 0.05 and c.d_z > 0
    assert c.needed_n is None
    swapped = S.compare_scores(b, a, seed=7)
    assert swapped.verdict == S.A_WINS


def test_significant_but_below_the_floor_is_not_a_win():
    # 400 cases, 10% improve by one point: delta 0.1, clearly significant, below 0.2.
    a, b = _scores([1] * 40 + [0] * 360)
    c = S.compare_scores(a, b)
    assert c.significant and not c.clears_floor
    assert c.verdict == S.NO_DIFFERENCE  # the CI rules out 0.2
    assert c.ci_high < 0.2
    assert "unimportant" in c.explanation


def test_not_significant_with_wide_ci_is_inconclusive_with_needed_n():
    a, b = _scores([1, -1, 2, 0, -2, 1, 0, 1, -1, 1])
    c = S.compare_scores(a, b)
    assert not c.significant
    assert c.verdict == S.INCONCLUSIVE
    assert c.needed_n == S.paired_t_sample_size(0.2, c.sd_diff)
    assert c.needed_n > c.n
    assert f"you need about {c.needed_n} cases" in c.explanation


def test_not_significant_with_tight_ci_is_no_significant_difference():
    a, b = _scores([1, -1] * 100 + [0] * 200)
    c = S.compare_scores(a, b)
    assert c.delta == 0 and not c.significant
    assert c.ci_low > -0.2 and c.ci_high < 0.2
    assert c.verdict == S.NO_DIFFERENCE and c.needed_n is None


def test_floor_is_a_fraction_of_the_range():
    assert S.floor_points(0.05, 1, 5) == pytest.approx(0.2)
    a, b = _scores([1] * 10 + [0] * 30)  # delta 0.25
    assert S.compare_scores(a, b, min_effect=0.05).floor == pytest.approx(0.2)
    strict = S.compare_scores(a, b, min_effect=0.10)  # floor 0.4
    assert strict.floor == pytest.approx(0.4) and not strict.clears_floor
    assert strict.verdict != S.B_WINS
    with pytest.raises(ValueError):
        S.floor_points(5, 1, 5)


def test_t_test_and_rank_test_disagree_and_both_are_reported():
    # 21 cases improve by one point, 4 collapse by four: the typical case got better (the
    # rank test is significant) but the mean moved only 0.2 with a wide spread (t-test not).
    a = [3] * 21 + [5] * 4
    b = [4] * 21 + [1] * 4
    c = S.compare_scores(a, b)
    assert c.delta == pytest.approx(0.2)
    assert c.w_p < 0.05 < c.t_p
    assert c.tests_disagree
    assert c.verdict == S.INCONCLUSIVE  # the pre-specified primary test decides
    assert any("disagree" in n and f"{c.w_p:.3g}" in n for n in c.notes)


def test_excluded_cases_are_carried_not_scored():
    a, b = _scores([1] * 20 + [0] * 10)
    c = S.compare_scores(a, b, n_excluded=3)
    assert c.n == 30 and c.n_excluded == 3
    with pytest.raises(ValueError):
        S.compare_scores([3, float("nan")], [3, 4])


def test_degenerate_inputs_do_not_crash():
    assert S.compare_scores([], []).verdict == S.INCONCLUSIVE
    assert S.compare_scores([3], [4]).verdict == S.INCONCLUSIVE
    same = S.compare_scores([3, 4, 5], [3, 4, 5])
    assert same.t_p == 1.0 and same.w_p == 1.0 and same.needed_n is None
    shift = S.compare_scores([2] * 30, [3] * 30)
    assert shift.verdict == S.B_WINS and shift.ci_low == shift.ci_high == 1.0
    with pytest.raises(ValueError):
        S.compare_scores([1, 2], [1])


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 1, 25), rng.normal(3.3, 1, 25)
    c1 = S.compare_scores(a, b, seed=3)
    c2 = S.compare_scores(a, b, seed=3)
    c3 = S.compare_scores(a, b, seed=4)
    assert (c1.ci_low, c1.ci_high) == (c2.ci_low, c2.ci_high)
    assert (c1.ci_low, c1.ci_high) != (c3.ci_low, c3.ci_high)


def test_pass_fail_win_and_needed_n():
    a = [False] * 20 + [True] * 20
    b = [True] * 20 + [True] * 20
    c = S.compare_pass_fail(a, b)
    assert c.verdict == S.B_WINS and c.pass_b == 1.0 and c.pass_a == 0.5
    few = S.compare_pass_fail([True, False, True, True], [True, True, True, False])
    assert few.verdict == S.INCONCLUSIVE and few.needed_n is not None
    assert f"about {few.needed_n} cases" in few.explanation


def test_holm_across_variants_can_withdraw_a_win():
    rng = np.random.default_rng(0)
    a = rng.integers(2, 5, 60)
    # One variant is borderline significant on its own; four null variants join the family.
    diffs = np.array([1] * 22 + [0] * 28 + [-1] * 10)
    borderline = S.compare_scores(a, a + diffs)
    assert borderline.verdict == S.B_WINS and borderline.t_p > 0.01
    nulls = [S.compare_scores(a, a + rng.permutation(np.array([1, -1] * 30))) for _ in range(4)]
    adjusted, _ = S.holm_adjust([borderline, *nulls], [])
    assert adjusted[0].t_p_adjusted > borderline.t_p
    assert adjusted[0].verdict != S.B_WINS
    assert adjusted[0].n_comparisons == 5


def test_holm_family_spans_scores_and_pass_fail():
    s = S.compare_scores(*_scores([1] * 20 + [0] * 20))
    pf = S.compare_pass_fail([True] * 40, [True] * 40)
    s2, pf2 = S.holm_adjust([s], [pf])
    assert s2[0].t_p_adjusted == pytest.approx(min(1.0, 2 * s.t_p))
    assert pf2[0].p_adjusted == 1.0


def test_pairwise_inconsistent_counts_as_tie_and_failures_are_excluded():
    verdicts = (
        [("B", "B")] * 30  # consistent preference for B
        + [("A", "A")] * 5
        + [("A", "B")] * 8  # flips with the order: position bias -> tie
        + [("tie", "tie")] * 2
        + [(None, "B"), ("A", None)]  # a judge call failed: excluded, counted
    )
    p = S.aggregate_pairwise(verdicts)
    assert p.n_cases == 47 and p.n_failed == 2 and p.n_valid == 45
    assert (p.wins_b, p.wins_a, p.ties, p.inconsistent) == (30, 5, 10, 8)
    assert p.consistency_rate == pytest.approx(37 / 45)
    assert p.p == pytest.approx(2 * sum(math.comb(35, k) for k in range(6)) / 2**35)
    assert p.verdict == S.B_WINS
    with pytest.raises(ValueError):
        S.aggregate_pairwise([("C", "A")])


def test_combine_verdicts():
    assert S.combine_verdicts([S.B_WINS, S.INCONCLUSIVE]) == S.B_WINS
    assert S.combine_verdicts([S.B_WINS, S.A_WINS]) == S.INCONCLUSIVE
    assert S.combine_verdicts([S.NO_DIFFERENCE, S.NO_DIFFERENCE]) == S.NO_DIFFERENCE
    assert S.combine_verdicts([S.NO_DIFFERENCE, S.INCONCLUSIVE]) == S.INCONCLUSIVE
    assert S.combine_verdicts([]) == S.INCONCLUSIVE


# --- seeded simulations -----------------------------------------------------------------


def _sampling_margin(p: float, n: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / n)  # three standard errors of a simulated share


def test_no_true_difference_wins_at_most_alpha():
    rng = np.random.default_rng(20261128)
    experiments, n = 1000, 40
    wins = 0
    for _ in range(experiments):
        # Realistic 1-5 ordinal scores: a per-case quality, judged with noise, same for A and B.
        q = rng.uniform(1, 5, n)
        a = np.clip(np.rint(q + rng.normal(0, 0.8, n)), 1, 5)
        b = np.clip(np.rint(q + rng.normal(0, 0.8, n)), 1, 5)
        c = S.compare_scores(a, b, n_resamples=200, seed=1)
        wins += c.verdict in (S.A_WINS, S.B_WINS)
    assert wins / experiments <= S.ALPHA + _sampling_margin(S.ALPHA, experiments)


def test_power_estimate_is_borne_out_at_twice_the_floor():
    # Ordinal differences with mean 0.4 (= 2 x the 0.2 floor) and variance 0.84.
    values, probs = np.array([-1, 0, 1, 2]), [0.2, 0.3, 0.4, 0.1]
    effect = float(values @ probs)
    sd = math.sqrt(float(values**2 @ probs) - effect**2)
    assert effect == pytest.approx(2 * S.floor_points(S.DEFAULT_MIN_EFFECT, 1, 5))
    n = S.paired_t_sample_size(effect, sd)
    predicted = S.paired_t_power(n, effect, sd)
    assert 0.80 <= predicted < 0.83
    rng = np.random.default_rng(5)
    experiments = 600
    wins = 0
    for _ in range(experiments):
        d = rng.choice(values, n, p=probs)
        a = rng.integers(2, 4, n)  # 2 or 3, so a + d stays within 1-5
        wins += S.compare_scores(a, a + d, n_resamples=200, seed=1).verdict == S.B_WINS
    assert abs(wins / experiments - predicted) <= _sampling_margin(predicted, experiments)


def test_needed_n_from_a_pilot_delivers_the_promised_power():
    # A pilot that is inconclusive tells you N; running N cases on a true floor-sized effect
    # is then significant about 80% of the time.
    rng = np.random.default_rng(11)
    values, probs = np.array([-1, 0, 1]), [0.25, 0.3, 0.45]  # mean 0.2 = the floor
    pilot = rng.choice(values, 30, p=probs)
    c = S.compare_scores([3] * 30, 3 + pilot)
    assert c.verdict == S.INCONCLUSIVE and c.needed_n is not None
    true_sd = math.sqrt(float(values**2 @ probs) - 0.2**2)
    n = S.paired_t_sample_size(0.2, true_sd)
    assert abs(c.needed_n - n) / n < 0.35  # the pilot's SD estimates the true spread
    experiments, significant = 400, 0
    for _ in range(experiments):
        d = rng.choice(values, n, p=probs)
        significant += S.compare_scores([3] * n, 3 + d, n_resamples=200).significant
    assert abs(significant / experiments - 0.80) <= _sampling_margin(0.80, experiments) + 0.02
