"""Statistics for A/B prompt comparisons on paired outcomes (the same cases, two variants).

Pure functions over numbers: no I/O, no dagster. Distributions come from scipy; only the
bookkeeping (rank sums, Holm's step-down, the Agresti-Min interval) is written out here.

Decision rule, fixed before looking at data (a statistician signs a pre-specified rule):

- scores (1-5 judge scores): the paired t-test is the primary test, because the question is
  "did the mean score move" and the bootstrap CI is a CI of that mean. The Wilcoxon
  signed-rank test is reported beside it (scores are ordinal) and a disagreement between
  the two is flagged in the verdict, never hidden.
- pass/fail (rules graders): McNemar's exact test on the discordant pairs.
- a variant *wins* only when its test is significant (after Holm, with several variants)
  AND the point estimate clears the practical floor ``min_effect`` (a fraction of the
  outcome's range: 5 % = 0.2 points on 1-5, 5 percentage points on pass/fail).
- "no significant difference" is said only when the 95 % CI lies inside +-floor, i.e. the
  data rule out a difference that matters. Otherwise a non-win is "inconclusive", with the
  number of cases that 80 % power to detect the floor would need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from eval_pipeline.core.stats import holm

ALPHA = 0.05
DEFAULT_MIN_EFFECT = 0.05  # fraction of the outcome's range
SCORE_RANGE = (1.0, 5.0)
TARGET_POWER = 0.80

B_WINS = "B wins"
A_WINS = "A wins"
NO_DIFFERENCE = "no significant difference"
INCONCLUSIVE = "inconclusive"
VERDICTS = (B_WINS, A_WINS, NO_DIFFERENCE, INCONCLUSIVE)


def floor_points(min_effect: float, lo: float, hi: float) -> float:
    """The practical floor in outcome units: ``min_effect`` of the range (0.05 * 4 = 0.2)."""
    if not 0 < min_effect < 1:
        raise ValueError(f"min_effect must be a fraction of the range in (0, 1), got {min_effect}")
    return min_effect * (hi - lo)


# --- power and sample size --------------------------------------------------------------


def paired_t_power(n: int, effect: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs to detect a mean difference ``effect``
    when the differences have standard deviation ``sd``.

    Exact under normal differences: the t statistic follows a noncentral t with n-1 degrees
    of freedom and noncentrality effect/sd*sqrt(n) (scipy.stats.nct), not the normal
    approximation, which overstates power at small n.
    """
    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if effect != 0 else alpha
    df = n - 1
    nc = abs(effect) / sd * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def paired_t_sample_size(
    effect: float, sd: float, alpha: float = ALPHA, power: float = TARGET_POWER
) -> int | None:
    """Smallest n whose paired t-test reaches ``power`` for ``effect`` (noncentral t, exact
    under normality). None when the spread is unknown (sd is 0 or not finite)."""
    if effect == 0:
        raise ValueError("effect must be non-zero")
    if not math.isfinite(sd) or sd <= 0:
        return None
    # The normal approximation is a lower bound; walk up from it with the exact power.
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.floor((z * sd / abs(effect)) ** 2))
    while paired_t_power(n, effect, sd, alpha) < power:
        n += 1
    return n


def mcnemar_sample_size(
    effect: float, discordant: float, alpha: float = ALPHA, power: float = TARGET_POWER
) -> int | None:
    """Pairs needed for McNemar's test to detect a pass-rate difference ``effect`` when a
    share ``discordant`` of the pairs disagree.

    Normal approximation (Connor 1987, Biometrics 43:207-211):
    n = (z_a * sqrt(psi) + z_b * sqrt(psi - d^2))^2 / d^2, psi the discordant share. The exact
    test is slightly conservative, so this is a lower bound of about the right size.
    """
    d = abs(effect)
    if d == 0:
        raise ValueError("effect must be non-zero")
    if discordant <= 0:
        return None  # no discordant pair seen: the spread is unknown
    psi = min(1.0, max(discordant, d))  # psi >= |d| by definition
    za = stats.norm.ppf(1 - alpha / 2)
    zb = stats.norm.ppf(power)
    return math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - d * d, 0.0))) ** 2 / d**2)


# --- multiple comparisons ---------------------------------------------------------------


# --- scores (1-5) -----------------------------------------------------------------------


@dataclass
class ScoreComparison:
    """Paired comparison of numeric scores, B minus A."""

    n: int
    n_excluded: int
    mean_a: float | None
    mean_b: float | None
    delta: float | None
    sd_diff: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    t_stat: float | None
    t_df: int | None
    t_p: float | None
    w_stat: float | None  # W+: sum of the ranks of the positive differences (B > A)
    w_p: float | None
    w_method: str
    d_z: float | None  # Cohen's d_z: mean difference / SD of differences
    floor: float
    min_effect: float
    alpha: float
    n_comparisons: int = 1
    t_p_adjusted: float | None = None
    w_p_adjusted: float | None = None
    significant: bool = False
    clears_floor: bool = False
    tests_disagree: bool = False
    needed_n: int | None = None
    verdict: str = INCONCLUSIVE
    explanation: str = ""
    notes: list[str] = field(default_factory=list)


def _wilcoxon(d: np.ndarray) -> tuple[float | None, float | None, str]:
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 0.0, 1.0, "all differences are zero"
    ranks = stats.rankdata(np.abs(nonzero))
    w_plus = float(ranks[nonzero > 0].sum())
    # zero_method="wilcox" drops zero differences (Wilcoxon's original). The exact null
    # distribution assumes no ties, so with tied |differences| (the rule on 1-5 scores) or
    # many pairs we use the tie-corrected normal approximation, and say so.
    ties = len(np.unique(np.abs(nonzero))) < nonzero.size
    method = "exact" if nonzero.size <= 50 and not ties else "approx"
    res = stats.wilcoxon(nonzero, zero_method="wilcox", method=method)
    method = "exact" if method == "exact" else "normal approximation, tie-corrected"
    return w_plus, float(res.pvalue), method


def _bootstrap_ci(d: np.ndarray, seed: int, n_resamples: int) -> tuple[float, float, str]:
    if d.size < 2 or np.all(d == d[0]):
        return float(d.mean()), float(d.mean()), "degenerate (no spread)"
    rng = np.random.default_rng(seed)
    res = stats.bootstrap(
        (d,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="BCa", rng=rng
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi, f"bootstrap BCa, {n_resamples} resamples, seed {seed}"
    # BCa can fail on very lumpy data (e.g. nearly all differences equal): fall back.
    res = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return (
        float(res.confidence_interval.low),
        float(res.confidence_interval.high),
        f"bootstrap percentile, {n_resamples} resamples, seed {seed}",
    )


def compare_scores(
    a: Sequence[float],
    b: Sequence[float],
    *,
    min_effect: float = DEFAULT_MIN_EFFECT,
    score_range: tuple[float, float] = SCORE_RANGE,
    alpha: float = ALPHA,
    seed: int = 0,
    n_resamples: int = 9999,
    n_excluded: int = 0,
) -> ScoreComparison:
    """Paired tests, CI, effect size and verdict for scores a[i], b[i] of the same case i.

    ``n_excluded`` is the number of cases already dropped from both arms (judge failures):
    it is carried into the report, never turned into a score.
    """
    a_arr = np.asarray(a, dtype=float)
    b_arr = np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError("a and b must be 1-D and paired (same length)")
    if not (np.all(np.isfinite(a_arr)) and np.all(np.isfinite(b_arr))):
        raise ValueError("scores must be finite: drop failed cases before comparing")
    n = int(a_arr.size)
    floor = floor_points(min_effect, *score_range)
    out = ScoreComparison(
        n=n,
        n_excluded=n_excluded,
        mean_a=None,
        mean_b=None,
        delta=None,
        sd_diff=None,
        ci_low=None,
        ci_high=None,
        ci_method="",
        t_stat=None,
        t_df=None,
        t_p=None,
        w_stat=None,
        w_p=None,
        w_method="",
        d_z=None,
        floor=floor,
        min_effect=min_effect,
        alpha=alpha,
    )
    if n == 0:
        return decide_scores(out)
    d = b_arr - a_arr
    out.mean_a, out.mean_b, out.delta = float(a_arr.mean()), float(b_arr.mean()), float(d.mean())
    if n >= 2:
        sd = float(d.std(ddof=1))
        out.sd_diff = sd
        out.t_df = n - 1
        if sd > 0:
            res = stats.ttest_rel(b_arr, a_arr)
            out.t_stat, out.t_p = float(res.statistic), float(res.pvalue)
            out.d_z = out.delta / sd
        elif out.delta == 0:
            out.t_stat, out.t_p, out.d_z = 0.0, 1.0, 0.0
            out.notes.append("every case scored the same under A and B")
        else:
            # Every case moved by exactly the same amount: no sampling noise at all.
            out.t_stat, out.t_p, out.d_z = math.copysign(math.inf, out.delta), 0.0, None
            out.notes.append("every case moved by exactly the same amount (no spread)")
        out.w_stat, out.w_p, out.w_method = _wilcoxon(d)
        out.ci_low, out.ci_high, out.ci_method = _bootstrap_ci(d, seed, n_resamples)
    out.t_p_adjusted, out.w_p_adjusted = out.t_p, out.w_p
    return decide_scores(out)


def decide_scores(c: ScoreComparison) -> ScoreComparison:
    """Set significance, floor, disagreement, needed n and the verdict from the (adjusted)
    p-values. Re-run after Holm adjustment."""
    c = replace(c, notes=list(c.notes))
    if c.n < 2 or c.t_p_adjusted is None or c.delta is None:
        c.significant = c.clears_floor = c.tests_disagree = False
        c.needed_n = None
        c.verdict = INCONCLUSIVE
        c.explanation = f"only {c.n} usable case(s): too few to compare"
        return c
    level = c.alpha
    c.significant = c.t_p_adjusted < level
    c.clears_floor = abs(c.delta) >= c.floor - 1e-12
    w_sig = c.w_p_adjusted is not None and c.w_p_adjusted < level
    c.tests_disagree = c.significant != w_sig
    ci_inside = (
        c.ci_low is not None
        and c.ci_high is not None
        and -c.floor < c.ci_low <= c.ci_high < c.floor
    )
    better = "B" if c.delta > 0 else "A"
    delta_txt = f"{c.delta:+.2f} points (B - A)"
    c.needed_n = None
    if c.significant and c.clears_floor:
        c.verdict = B_WINS if c.delta > 0 else A_WINS
        c.explanation = (
            f"{better} scores higher by {abs(c.delta):.2f} points, significant "
            f"(t-test p={c.t_p_adjusted:.3g}) and above the {c.floor:.2f}-point floor"
        )
    elif ci_inside:
        c.verdict = NO_DIFFERENCE
        if c.significant:
            c.explanation = (
                f"a detectable but unimportant difference ({delta_txt}, p={c.t_p_adjusted:.3g}): "
                f"the 95% CI lies inside the +-{c.floor:.2f}-point floor"
            )
        else:
            c.explanation = (
                f"{delta_txt}, not significant (p={c.t_p_adjusted:.3g}), and the 95% CI "
                f"rules out a difference as large as the {c.floor:.2f}-point floor"
            )
    else:
        c.verdict = INCONCLUSIVE
        if c.significant:
            c.explanation = (
                f"{better} is significantly better (p={c.t_p_adjusted:.3g}) but by "
                f"{abs(c.delta):.2f} points, below the {c.floor:.2f}-point floor, and the CI "
                f"does not rule out a difference that matters"
            )
        else:
            # Bonferroni level for the estimate when several variants share the baseline:
            # conservative, and Holm's first step uses exactly this level.
            c.needed_n = paired_t_sample_size(
                c.floor, c.sd_diff or 0.0, alpha=level / c.n_comparisons
            )
            need = (
                f"you need about {c.needed_n} cases"
                if c.needed_n is not None
                else "the differences show no spread, so the needed sample size is unknown"
            )
            c.explanation = (
                f"{delta_txt}, not significant (p={c.t_p_adjusted:.3g}) with {c.n} cases; "
                f"to tell a true {c.floor:.2f}-point difference from none (80% power) {need}"
            )
    if c.tests_disagree:
        c.notes.append(
            f"the t-test (p={c.t_p_adjusted:.3g}) and the Wilcoxon signed-rank test "
            f"(p={c.w_p_adjusted:.3g}) disagree: the mean and the typical case move "
            "differently (look at the largest changes)"
        )
    return c


# --- pass/fail --------------------------------------------------------------------------


@dataclass
class PassFailComparison:
    """Paired pass/fail outcomes: McNemar's exact test on the discordant pairs."""

    n: int
    n_excluded: int
    both_pass: int
    a_only: int  # A passed, B failed
    b_only: int  # B passed, A failed
    both_fail: int
    pass_a: float | None
    pass_b: float | None
    delta: float | None  # pass_b - pass_a
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    p: float | None
    floor: float
    min_effect: float
    alpha: float
    n_comparisons: int = 1
    p_adjusted: float | None = None
    significant: bool = False
    clears_floor: bool = False
    needed_n: int | None = None
    verdict: str = INCONCLUSIVE
    explanation: str = ""
    notes: list[str] = field(default_factory=list)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: a binomial test of the discordant pairs against 1/2."""
    k = a_only + b_only
    if k == 0:
        return 1.0
    return float(stats.binomtest(b_only, k, 0.5, alternative="two-sided").pvalue)


def paired_difference_ci(
    both_pass: int, a_only: int, b_only: int, both_fail: int, confidence: float = 0.95
) -> tuple[float, float]:
    """CI of pass_b - pass_a for matched pairs: Agresti & Min (2005, Statistics in Medicine
    24:729-740) adjusted Wald, which adds 1/2 to each cell. Plain Wald collapses to a
    zero-width interval when there are no discordant pairs; this one does not."""
    n = both_pass + a_only + b_only + both_fail + 2.0
    p12 = (a_only + 0.5) / n
    p21 = (b_only + 0.5) / n
    diff = p21 - p12
    se = math.sqrt(max(p12 + p21 - (p21 - p12) ** 2, 0.0) / n)
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    return max(-1.0, diff - z * se), min(1.0, diff + z * se)


def compare_pass_fail(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    min_effect: float = DEFAULT_MIN_EFFECT,
    alpha: float = ALPHA,
    n_excluded: int = 0,
) -> PassFailComparison:
    if len(a) != len(b):
        raise ValueError("a and b must be paired (same length)")
    pairs = list(zip((bool(x) for x in a), (bool(y) for y in b), strict=True))
    both_pass = sum(1 for x, y in pairs if x and y)
    a_only = sum(1 for x, y in pairs if x and not y)
    b_only = sum(1 for x, y in pairs if y and not x)
    both_fail = sum(1 for x, y in pairs if not x and not y)
    n = len(pairs)
    out = PassFailComparison(
        n=n,
        n_excluded=n_excluded,
        both_pass=both_pass,
        a_only=a_only,
        b_only=b_only,
        both_fail=both_fail,
        pass_a=None,
        pass_b=None,
        delta=None,
        ci_low=None,
        ci_high=None,
        ci_method="Agresti-Min adjusted Wald",
        p=None,
        floor=floor_points(min_effect, 0.0, 1.0),
        min_effect=min_effect,
        alpha=alpha,
    )
    if n:
        out.pass_a = (both_pass + a_only) / n
        out.pass_b = (both_pass + b_only) / n
        out.delta = out.pass_b - out.pass_a
        out.ci_low, out.ci_high = paired_difference_ci(both_pass, a_only, b_only, both_fail)
        out.p = mcnemar_exact(a_only, b_only)
    out.p_adjusted = out.p
    return decide_pass_fail(out)


def decide_pass_fail(c: PassFailComparison) -> PassFailComparison:
    c = replace(c, notes=list(c.notes))
    if c.n < 2 or c.p_adjusted is None or c.delta is None:
        c.significant = c.clears_floor = False
        c.needed_n = None
        c.verdict = INCONCLUSIVE
        c.explanation = f"only {c.n} usable case(s): too few to compare"
        return c
    c.significant = c.p_adjusted < c.alpha
    c.clears_floor = abs(c.delta) >= c.floor - 1e-12
    ci_inside = -c.floor < c.ci_low <= c.ci_high < c.floor
    better = "B" if c.delta > 0 else "A"
    discordant = f"{c.b_only} cases only B passes, {c.a_only} only A passes"
    c.needed_n = None
    if c.significant and c.clears_floor:
        c.verdict = B_WINS if c.delta > 0 else A_WINS
        c.explanation = (
            f"{better} passes {abs(c.delta):.1%} more cases ({discordant}), significant "
            f"(McNemar exact p={c.p_adjusted:.3g}) and above the {c.floor:.0%} floor"
        )
    elif ci_inside:
        c.verdict = NO_DIFFERENCE
        c.explanation = (
            f"pass rates differ by {c.delta:+.1%} ({discordant}, p={c.p_adjusted:.3g}); the "
            f"95% CI rules out a difference as large as the {c.floor:.0%} floor"
        )
    else:
        c.verdict = INCONCLUSIVE
        if c.significant:
            c.explanation = (
                f"{better} passes significantly more (p={c.p_adjusted:.3g}) but by "
                f"{abs(c.delta):.1%}, below the {c.floor:.0%} floor"
            )
        else:
            c.needed_n = mcnemar_sample_size(
                c.floor, (c.a_only + c.b_only) / c.n, alpha=c.alpha / c.n_comparisons
            )
            need = (
                f"you need about {c.needed_n} cases"
                if c.needed_n is not None
                else "no case changed outcome, so the needed sample size is unknown"
            )
            c.explanation = (
                f"pass rates differ by {c.delta:+.1%} ({discordant}), not significant "
                f"(p={c.p_adjusted:.3g}) with {c.n} cases; to tell a true {c.floor:.0%} "
                f"difference from none (80% power) {need}"
            )
    return c


# --- several variants against one baseline ----------------------------------------------


def holm_adjust(
    scores: Sequence[ScoreComparison], pass_fail: Sequence[PassFailComparison]
) -> tuple[list[ScoreComparison], list[PassFailComparison]]:
    """Holm-correct every primary test of an experiment together and redo the verdicts.

    The family is every variant-vs-baseline comparison in every outcome family (the score
    t-tests and the pass/fail McNemar tests): the headline picks a winner from any of them,
    so all of them share one error budget. The Wilcoxon p-values are adjusted in a parallel
    family (Wilcoxon in place of t) so the disagreement check compares like with like.
    """
    m = len(scores) + len(pass_fail)
    pf_raw = [c.p if c.p is not None else 1.0 for c in pass_fail]
    t_adj = holm([c.t_p if c.t_p is not None else 1.0 for c in scores] + pf_raw)
    w_adj = holm([c.w_p if c.w_p is not None else 1.0 for c in scores] + pf_raw)
    new_scores = []
    for i, c in enumerate(scores):
        c2 = replace(c, n_comparisons=m)
        c2.t_p_adjusted = t_adj[i] if c.t_p is not None else None
        c2.w_p_adjusted = w_adj[i] if c.w_p is not None else None
        new_scores.append(decide_scores(c2))
    new_pf = []
    for j, c in enumerate(pass_fail):
        c2 = replace(c, n_comparisons=m)
        c2.p_adjusted = t_adj[len(scores) + j] if c.p is not None else None
        new_pf.append(decide_pass_fail(c2))
    return new_scores, new_pf


# --- pairwise judging -------------------------------------------------------------------

PAIRWISE_CHOICES = ("A", "B", "tie")


@dataclass
class PairwiseComparison:
    """The judge saw both answers, in both orders, and picked one (or a tie)."""

    n_cases: int
    n_valid: int
    n_failed: int  # a judge call failed in at least one order: excluded, counted
    wins_a: int
    wins_b: int
    ties: int  # includes order-inconsistent verdicts
    inconsistent: int  # the pick changed with the order: counted as a tie
    consistency_rate: float | None  # consistent verdicts / valid cases
    win_rate_b: float | None  # (wins_b + ties/2) / n_valid
    net_preference: float | None  # (wins_b - wins_a) / n_valid
    ci_low: float | None
    ci_high: float | None
    p: float | None  # sign test on the decisive cases
    floor: float
    alpha: float
    significant: bool = False
    verdict: str = INCONCLUSIVE
    explanation: str = ""


def aggregate_pairwise(
    verdicts: Sequence[tuple[str | None, str | None]],
    *,
    min_effect: float = DEFAULT_MIN_EFFECT,
    alpha: float = ALPHA,
    seed: int = 0,
    n_resamples: int = 9999,
) -> PairwiseComparison:
    """``verdicts[i]`` = (pick when A was shown first, pick when B was shown first), each
    already mapped back to the variant ("A", "B", "tie") or None when the judge failed.

    Order-inconsistent picks count as ties: a verdict that flips with the position is the
    judge's position bias, not a preference. The floor applies to the net preference
    (wins_b - wins_a) / n, a fraction of its range [-1, 1] halved so 5% means 5 points net.
    """
    wins_a = wins_b = ties = inconsistent = failed = 0
    outcome = []  # +1 B, -1 A, 0 tie, per valid case
    for first, second in verdicts:
        for v in (first, second):
            if v is not None and v not in PAIRWISE_CHOICES:
                raise ValueError(f"pairwise verdict must be A, B, tie or None, got {v!r}")
        if first is None or second is None:
            failed += 1
            continue
        if first != second:
            inconsistent += 1
            ties += 1
            outcome.append(0)
        elif first == "tie":
            ties += 1
            outcome.append(0)
        elif first == "B":
            wins_b += 1
            outcome.append(1)
        else:
            wins_a += 1
            outcome.append(-1)
    n_valid = len(outcome)
    floor = min_effect
    out = PairwiseComparison(
        n_cases=len(verdicts),
        n_valid=n_valid,
        n_failed=failed,
        wins_a=wins_a,
        wins_b=wins_b,
        ties=ties,
        inconsistent=inconsistent,
        consistency_rate=(n_valid - inconsistent) / n_valid if n_valid else None,
        win_rate_b=(wins_b + ties / 2) / n_valid if n_valid else None,
        net_preference=(wins_b - wins_a) / n_valid if n_valid else None,
        ci_low=None,
        ci_high=None,
        p=None,
        floor=floor,
        alpha=alpha,
    )
    if n_valid < 2:
        out.explanation = f"only {n_valid} usable pairwise verdict(s): too few to compare"
        return out
    decisive = wins_a + wins_b
    out.p = float(stats.binomtest(wins_b, decisive, 0.5).pvalue) if decisive else 1.0
    out.ci_low, out.ci_high, _ = _bootstrap_ci(np.asarray(outcome, float), seed, n_resamples)
    out.significant = out.p < alpha
    net = out.net_preference
    better = "B" if net > 0 else "A"
    tally = (
        f"B preferred on {wins_b}, A on {wins_a}, {ties} ties ({inconsistent} order-inconsistent)"
    )
    if out.significant and abs(net) >= floor:
        out.verdict = B_WINS if net > 0 else A_WINS
        out.explanation = (
            f"the judge prefers {better}: {tally}; sign test p={out.p:.3g}, net preference "
            f"{net:+.0%} above the {floor:.0%} floor"
        )
    elif -floor < out.ci_low <= out.ci_high < floor:
        out.verdict = NO_DIFFERENCE
        out.explanation = f"{tally}; the CI of the net preference lies inside +-{floor:.0%}"
    else:
        out.verdict = INCONCLUSIVE
        out.explanation = f"{tally}; sign test p={out.p:.3g}, net preference {net:+.0%}"
    return out


# --- the headline -----------------------------------------------------------------------


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """One headline from the verdicts of several outcome families (scores, pass/fail).

    A side wins when at least one family says so and none says the other side wins; two
    families pointing opposite ways are inconclusive; "no significant difference" needs all.
    """
    vs = [v for v in verdicts if v]
    if not vs:
        return INCONCLUSIVE
    if B_WINS in vs and A_WINS in vs:
        return INCONCLUSIVE
    for win in (B_WINS, A_WINS):
        if win in vs:
            return win
    if all(v == NO_DIFFERENCE for v in vs):
        return NO_DIFFERENCE
    return INCONCLUSIVE
