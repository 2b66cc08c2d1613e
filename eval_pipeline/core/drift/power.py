"""What a day's sample can see: the minimum detectable drop of the engine's day test, the
daily sample a target drop needs, and the CUSUM's figure for a lasting drop.

A segment's figures are those of the test the engine runs (``detectors.shortfall`` with
the reference's 1-5 distribution, as ``incidents.run_history`` calls it): the exact lower
tail of today's score sum, its normal score shrunk by sqrt(se2_today / se2), where se2
holds today's sampling error, the reference mean's and the between-day variance tau2 that
the reference shows (``reference.between_day_variance``), and the practical floor: an
alarm needs p < alpha *and* a drop of at least ``min_drop`` points. ``DayTest`` holds what
that test depends on; ``exact_mde`` and ``exact_n_for_drop`` are exact for it.

The overall row (a weighted mean, Edgeworth tail) and a pinned reference keep the normal
approximation, a one-sided two-sample z-test of today's mean against the reference mean,

    z = drop / se,   se = sd * sqrt(1 / n + 1 / n_ref)

with the textbook sample-size formula for comparing two means (Chow, Shao & Wang, *Sample
Size Calculations in Clinical Research*, 2008, section 3.2.1) solved for the difference:

    MDE = (z_{1-alpha} + z_{1-beta}) * se.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from eval_pipeline.core.drift import detectors

POWER = 0.8


def se_of(sd: float, n: float, n_ref: float | None) -> float:
    """Standard error of today's mean minus the reference mean (``n_ref`` None: pinned)."""
    if n <= 0:
        return math.inf
    return sd * math.sqrt(1.0 / n + (1.0 / n_ref if n_ref else 0.0))


def mde(sd: float, n: float, n_ref: float | None, alpha: float, power: float = POWER) -> float:
    """The smallest drop (points) the one-sided z-test at ``alpha`` detects with ``power``."""
    return (stats.norm.isf(alpha) + stats.norm.ppf(power)) * se_of(sd, n, n_ref)


def power_at(drop: float, sd: float, n: float, n_ref: float | None, alpha: float) -> float:
    """Power of the one-sided z-test at ``alpha`` against a true drop of ``drop`` points."""
    se = se_of(sd, n, n_ref)
    if not math.isfinite(se):
        return 0.0
    return float(stats.norm.sf(stats.norm.isf(alpha) - drop / se))


def n_per_day_for_drop(
    drop: float, sd: float, alpha: float, ref_days: int, power: float = POWER
) -> int:
    """The daily sample at which, once the reference holds ``ref_days`` such days, the
    z-test detects ``drop`` with ``power``: n with sd^2 (1/n + 1/(ref_days n)) = se^2."""
    target_se = drop / (stats.norm.isf(alpha) + stats.norm.ppf(power))
    return math.ceil((sd / target_se) ** 2 * (1 + 1 / ref_days) - 1e-9)


# --- the CUSUM's side: persistent drops over several days -----------------------------
# Siegmund's approximation of a one-sided CUSUM's average run length for normal
# increments with mean mu (in standard-error units), reference value k and threshold h
# (Siegmund, *Sequential Analysis*, 1985; the 1.166 corrects for the overshoot):
#     ARL(mu) = (exp(-2 d b) + 2 d b - 1) / (2 d^2),  d = mu - k,  b = h + 1.166
# (b^2 when d = 0).


def cusum_arl(mu: float, k: float, h: float) -> float:
    d, b = mu - k, h + 1.166
    if abs(d) < 1e-9:
        return b * b
    return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)


def cusum_drop(se: float, days: float, k: float, h: float) -> float:
    """The persistent drop (points) the CUSUM pages on within ``days`` days on average,
    at the day's standard error ``se``."""
    mu = optimize.brentq(lambda m: cusum_arl(m, k, h) - days, k - 5.0, k + 50.0, xtol=1e-6)
    return mu * se


# --- the engine's segment day test: exact lattice tail ----------------------------------
# With se2 = var/n + var/n_ref + tau2, "p < alpha" is "P_ref(S <= s) < alpha_today",
#     alpha_today = P(Z >= z_{1-alpha} * sqrt(1 + n / n_ref + n * tau2 / var)),
# a fixed critical sum; the floor adds S <= n * (ref_mean - min_drop). The power against
# an alternative distribution q of one score is P_q(S <= s_crit), exact by convolution.
# Two shapes of a drop of D points:
# - "broken": more broken answers, q = (1 - w) ref + w broken, w = D / (ref mean - broken
#   mean) (the drift harness's model of a drop: the low tail grows, the spread widens);
# - "shift": every answer a little worse, each score s levels lower (floored at 1; a
#   whole level for every answer and one more for a share frac(s)), s such that the mean
#   drops by D: a location shift on the 1-5 lattice, the spread roughly kept.
# At the same D the test sees the shift more often (about 10 points of power more at the
# broken shape's 80% point), so no one figure is right for both: each has its own MDE.
# With tau2 > 0 the day's own true mean wobbles around its expectation by tau2 (what the
# reference shows between healthy days): the power is averaged over that wobble, a normal
# location shift of the day's mean (Gauss-Hermite, 9 nodes).

SHAPES = ("broken", "shift")
_LEVELS = np.arange(1, 6, dtype=float)
_HERMITE = np.polynomial.hermite.hermgauss(9)


@dataclass(frozen=True)
class DayTest:
    """What the engine's day test of one segment depends on (``detectors.shortfall``)."""

    ref_probs: tuple[float, ...]  # the reference's P(score = 1..5), as Counts.probs()
    n_ref: float  # the reference's scores
    alpha: float  # the per-row day alpha (IncidentConfig.day_alpha)
    var: float  # the reference's score variance, floored as the engine floors it
    ref_mean: float  # the reference mean the drop is measured from
    broken: tuple[float, ...]  # P(score = 1..5) of a broken answer
    tau2: float = 0.0  # between-day variance of the true mean (0 when Cochran's Q holds)
    min_drop: float = 0.0  # the day test's practical floor, points
    shape: str = "broken"  # which alternative (SHAPES)

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r} (known: {', '.join(SHAPES)})")

    @classmethod
    def of(cls, probs: Sequence[float], n_ref: float, var: float, mean: float,
           alpha: float, broken: Sequence[float], **kw) -> DayTest:  # fmt: skip
        return cls(tuple(float(x) for x in probs), float(n_ref), float(alpha), float(var),
                   float(mean), tuple(float(x) for x in broken), **kw)  # fmt: skip

    @property
    def gap(self) -> float:
        """Points lost when every answer is broken."""
        return float(np.asarray(self.ref_probs) @ _LEVELS - np.asarray(self.broken) @ _LEVELS)


def _critical(test: DayTest, n: int, n_ref: float, ref_cdf: np.ndarray) -> int | None:
    """The largest j such that a sum of n + j alarms (None: no sum alarms)."""
    shrink = math.sqrt(1.0 + n / n_ref + n * test.tau2 / test.var)
    # ndtr/ndtri: the normal CDF and quantile without scipy.stats' per-call overhead
    # (this runs once per day size of every scan).
    alpha_today = float(special.ndtr(special.ndtri(test.alpha) * shrink))
    below = np.flatnonzero(ref_cdf < alpha_today)
    if not below.size:
        return None
    j = min(int(below[-1]), math.floor(n * (test.ref_mean - test.min_drop) + 1e-9) - n)
    return j if j >= 0 else None


def _shift_down(probs: np.ndarray, k: int) -> np.ndarray:
    """Every score ``k`` levels lower, floored at 1."""
    out = np.zeros(5)
    for level, p in enumerate(probs):
        out[max(level - k, 0)] += p
    return out


def alternative(probs: Sequence[float], broken: Sequence[float], shape: str, drop: float):
    """P(score = 1..5) of a day ``drop`` points below ``probs``, in ``shape`` (SHAPES)."""
    ref, drop = np.asarray(probs, dtype=float), max(drop, 0.0)
    if shape == "broken":
        gap = float(ref @ _LEVELS - np.asarray(broken) @ _LEVELS)
        w = min(drop / gap, 1.0) if gap > 0 else 0.0
        return (1.0 - w) * ref + w * np.asarray(broken, dtype=float)
    # A shift of s levels: floor(s) levels for every answer, one more for a share frac(s)
    # of them; the mean is linear in s between whole levels, so s is found exactly.
    steps = [_shift_down(ref, k) for k in range(5)]
    lost = [float((ref - d) @ _LEVELS) for d in steps]
    if drop >= lost[-1]:
        return steps[-1]
    k = int(np.searchsorted(lost, drop, side="right")) - 1
    frac = (drop - lost[k]) / (lost[k + 1] - lost[k])
    return (1.0 - frac) * steps[k] + frac * steps[k + 1]


def _wobble(tau2: float) -> list[tuple[float, float]]:
    """(offset of the day's mean, weight): N(0, tau2) by Gauss-Hermite, or no wobble."""
    if tau2 <= 0:
        return [(0.0, 1.0)]
    x, w = _HERMITE
    return list(zip(math.sqrt(2 * tau2) * x, w / math.sqrt(math.pi), strict=True))


def _power(test: DayTest, n: int, crit: int | None, alt_cdf: np.ndarray) -> float:
    """P(alarm) given the CDF of today's sum under the alternative, averaged over the
    day's wobble."""
    if crit is None:
        return 0.0
    out = 0.0
    for u, weight in _wobble(test.tau2):
        i = math.floor(crit - n * u + 0.5)  # the day's sum is a whole count
        out += weight * (0.0 if i < 0 else min(float(alt_cdf[min(i, len(alt_cdf) - 1)]), 1.0))
    return out


def _alt_cdf(test: DayTest, n: int, drop: float) -> np.ndarray:
    return np.cumsum(
        detectors.sum_pmf(alternative(test.ref_probs, test.broken, test.shape, drop), n)
    )


def exact_power(test: DayTest, n: int, drop: float) -> float:
    """Power of the day test on ``n`` scores against a true drop of ``drop`` points."""
    ref_cdf = np.cumsum(detectors.sum_pmf(np.asarray(test.ref_probs), n))
    crit = _critical(test, n, test.n_ref, ref_cdf)
    return _power(test, n, crit, _alt_cdf(test, n, drop))


def exact_mde(test: DayTest, n: float, power: float = POWER) -> float | None:
    """The drop (points) the day test detects with ``power`` at ``n`` effective traces
    (rounded down: the engine tests whole counts, never more than the design has); None
    when even every answer broken would not reach it.

    The lattice makes the raw figure a sawtooth in n (a larger day can have a smaller
    attainable size): the stated figure is the largest over n..1.25n + 2, i.e. the
    smallest drop whose power is at least ``power`` at every day size in that window, so
    it never rises with n and holds at every larger day too (the teeth are ~1%, the
    decline over 25% of n ~10%)."""
    n_int = math.floor(n + 1e-9)
    if n_int < 1 or test.gap <= 0:
        return None
    return _stated_mde(test, n_int, power)


@functools.lru_cache(maxsize=4096)
def _stated_mde(test: DayTest, n: int, power: float) -> float | None:
    sizes = range(n, n * 5 // 4 + 3)
    ref_pmf, crits = detectors.sum_pmf(np.asarray(test.ref_probs), n), []
    for m in sizes:  # the critical sums depend on the reference only: once per window
        crits.append(_critical(test, m, test.n_ref, np.cumsum(ref_pmf)))
        ref_pmf = np.convolve(ref_pmf, test.ref_probs)
    if any(c is None for c in crits):
        return None

    def f(drop: float) -> float:
        alt = alternative(test.ref_probs, test.broken, test.shape, drop)
        pmf, worst = detectors.sum_pmf(alt, n), 1.0
        for m, crit in zip(sizes, crits, strict=True):
            worst = min(worst, _power(test, m, crit, np.cumsum(pmf)))
            pmf = np.convolve(pmf, alt)
        return worst - power

    if f(test.gap) < 0:
        return None
    if f(0.0) >= 0:
        return 0.0
    return float(optimize.brentq(f, 0.0, test.gap, xtol=1e-6))


def exact_n_for_drop(
    test: DayTest, drop: float, ref_days: int, power: float = POWER, max_n: int = 5000
) -> int | None:
    """The daily sample whose stated MDE (``exact_mde``) is at most ``drop`` once the
    reference holds ``ref_days`` days of that size (n_ref = ref_days * n); None when no
    sample up to ``max_n`` reaches it (a large tau2 puts a floor under the MDE).

    The same rule as the stated figure: the smallest n with power >= ``power`` at every
    m in n..1.25n + 2. The sum's distributions are grown one score at a time."""
    # Below the floor, more traces only make the observed drop settle under it.
    if test.gap <= 0 or drop <= test.min_drop:
        return None
    # As n grows the critical drop tends to z_{1-alpha} * tau and the day's drop to the
    # true one plus its wobble: power tends to Phi(drop / tau - z_{1-alpha}).
    if test.tau2 > 0:
        limit = special.ndtr(drop / math.sqrt(test.tau2) + special.ndtri(test.alpha))
        if limit < power:
            return None
    p_ref = np.asarray(test.ref_probs)
    p_alt = alternative(test.ref_probs, test.broken, test.shape, drop)
    ref_pmf, alt_pmf = np.array([1.0]), np.array([1.0])
    last_fail = 0
    for m in range(1, max_n + 1):
        ref_pmf, alt_pmf = np.convolve(ref_pmf, p_ref), np.convolve(alt_pmf, p_alt)
        crit = _critical(test, m, ref_days * m, np.cumsum(ref_pmf))
        if _power(test, m, crit, np.cumsum(alt_pmf)) < power:
            last_fail = m
        n = last_fail + 1
        if m >= n * 5 // 4 + 2:
            return n
    return None
