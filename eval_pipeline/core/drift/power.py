"""What a day's sample can see: minimum detectable drop, sample needed, and the two-look
threshold of the adaptive follow-up.

A segment's stated minimum detectable drop is that of the engine's exact-tail day test
(``exact_mde``, at the end of this module). The other figures are for the normal
approximation of the day test, a one-sided two-sample z-test of today's mean against the
reference mean,

    z = drop / se,   se = sd * sqrt(1 / n + 1 / n_ref)

(normal approximation to the mean of >= 10 scores on a 1-5 scale; ``sd`` is the healthy
reference's spread; ``n`` is today's effective sample size when the sample is weighted).

- Minimum detectable drop at power 1 - beta (the textbook sample-size formula for
  comparing two means, e.g. Chow, Shao & Wang, *Sample Size Calculations in Clinical
  Research*, 2008, section 3.2.1, solved for the difference):

      MDE = (z_{1-alpha} + z_{1-beta}) * se

  and, the other way round, the n that makes ``se`` small enough for a target drop.
- The two-look design of the follow-up: stage 1 judges ``n1`` traces; a segment whose
  stage-1 statistic lands in [z_follow, c) gets ``n2`` more the same day and is tested on
  all ``n1 + n2``; any other segment is tested on stage 1. The day test then alarms when
  either look's z reaches c, so its false-alarm probability is

      P(Z1 >= c) + P(z_follow <= Z1 < c, Z >= c),   corr(Z1, Z) = sqrt(n1 / (n1 + n2)),

  larger than P(Z >= c) of one look. ``two_look_threshold`` finds the c that spends
  exactly ``alpha`` across both looks (a Pocock-type constant boundary, Pocock 1977),
  with the bivariate normal from scipy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

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


def n_for_drop(
    drop: float, sd: float, n_ref: float | None, alpha: float, power: float = POWER
) -> int | None:
    """Judged traces needed today to detect ``drop`` with ``power``; None when even an
    unlimited sample could not (the reference itself is too noisy)."""
    target_se = drop / (stats.norm.isf(alpha) + stats.norm.ppf(power))
    room = (target_se / sd) ** 2 - (1.0 / n_ref if n_ref else 0.0)
    if room <= 0:
        return None
    return math.ceil(1.0 / room - 1e-9)


def n_per_day_for_drop(
    drop: float, sd: float, alpha: float, ref_days: int, power: float = POWER
) -> int:
    """The daily sample at which, once the reference holds ``ref_days`` such days, the
    day test detects ``drop`` with ``power``: n with sd^2 (1/n + 1/(ref_days n)) = se^2."""
    target_se = drop / (stats.norm.isf(alpha) + stats.norm.ppf(power))
    return math.ceil((sd / target_se) ** 2 * (1 + 1 / ref_days) - 1e-9)


def _two_look_size(c: float, z_follow: float, rho: float) -> float:
    """P(Z1 >= c) + P(z_follow <= Z1 < c, Z >= c) with corr(Z1, Z) = rho, under the null."""
    first = stats.norm.sf(c)
    if z_follow >= c:
        return float(first)
    mvn = stats.multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]])
    # P(a <= Z1 < c, Z >= c) = P(Z1 < c) - P(Z1 < a) - [P(Z1 < c, Z < c) - P(Z1 < a, Z < c)]
    below_c = mvn.cdf([c, c])
    below_a = mvn.cdf([z_follow, c])
    second = stats.norm.cdf(c) - stats.norm.cdf(z_follow) - (below_c - below_a)
    return float(first + max(second, 0.0))


@dataclass(frozen=True)
class TwoLook:
    alpha: float  # spent across both looks
    c: float  # the boundary on either look's z
    alpha_per_look: float  # P(Z >= c): the nominal alpha to give a one-look test
    z_follow: float
    info_fraction: float  # n1 / (n1 + n2)


def two_look_threshold(alpha: float, z_follow: float, info_fraction: float) -> TwoLook:
    """The constant boundary c whose two-look false-alarm probability is ``alpha``."""
    if not 0 < info_fraction <= 1:
        raise ValueError("info_fraction must be in (0, 1]")
    rho = math.sqrt(info_fraction)
    one_look = stats.norm.isf(alpha)
    if info_fraction == 1 or z_follow >= one_look:
        return TwoLook(alpha, one_look, alpha, z_follow, info_fraction)
    c = optimize.brentq(
        lambda x: _two_look_size(x, z_follow, rho) - alpha, one_look, one_look + 3.0, xtol=1e-6
    )
    return TwoLook(alpha, float(c), float(stats.norm.sf(c)), z_follow, info_fraction)


def two_look_size(look: TwoLook) -> float:
    """The false-alarm probability of the design (for checks and docs)."""
    return _two_look_size(look.c, look.z_follow, math.sqrt(look.info_fraction))


def simulate_two_look_size(look: TwoLook, rng: np.random.Generator, runs: int = 200_000) -> float:
    """Monte Carlo of the same probability from independent stage increments."""
    t = look.info_fraction
    z1 = rng.standard_normal(runs)
    z2 = rng.standard_normal(runs)
    z_all = math.sqrt(t) * z1 + math.sqrt(1 - t) * z2
    follow = (z1 >= look.z_follow) & (z1 < look.c)
    alarm = (z1 >= look.c) | (follow & (z_all >= look.c))
    return float(alarm.mean())


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


# --- the MDE of the test the engine runs: exact lattice tail ----------------------------
# The segment rows' day test (``detectors.shortfall`` with ``ref_probs``) is the exact
# lower tail of today's score sum under the reference's 1-5 distribution, its normal score
# shrunk by sqrt(se2_today / se2). With no between-day variance that ratio is
# n_ref / (n + n_ref), so "p < alpha" is "P_ref(S <= s) < alpha_today" with
#     alpha_today = P(Z >= z_{1-alpha} * sqrt(1 + n / n_ref)),
# a fixed critical sum, and the power against any alternative distribution q of one score
# is P_q(S <= s_crit), exact by convolution. The alternative is the drift harness's "more
# broken answers": today = (1 - w) * reference + w * BROKEN_SCORES, a drop of
# w * (reference mean - broken mean) points. The MDE is the drop where that power is 80%
# (continuous in w, found by brentq).

_LEVELS = np.arange(1, 6, dtype=float)


def _sum_pmf(probs: np.ndarray, n: int) -> np.ndarray:
    """P(sum of ``n`` i.i.d. 1..5 scores = n + j) for j = 0..4n (repeated squaring)."""
    result, base, k = np.array([1.0]), np.asarray(probs, dtype=float), n
    while k:
        if k & 1:
            result = np.convolve(result, base)
        k >>= 1
        if k:
            base = np.convolve(base, base)
    return result


def exact_critical_index(
    ref_probs: np.ndarray, n: int, n_ref: float | None, alpha: float
) -> int | None:
    """The largest j with P_ref(S <= n + j) < alpha_today (None: no sum alarms)."""
    shrink = math.sqrt(1.0 + (n / n_ref if n_ref else 0.0))
    alpha_today = float(stats.norm.sf(stats.norm.isf(alpha) * shrink))
    below = np.flatnonzero(np.cumsum(_sum_pmf(ref_probs, n)) < alpha_today)
    return int(below[-1]) if below.size else None


def exact_power_at(
    share: float, ref_probs: np.ndarray, n: int, n_ref: float | None, alpha: float,
    broken: np.ndarray,
) -> float:  # fmt: skip
    """Power of the exact day test when a ``share`` of today's answers are broken."""
    crit = exact_critical_index(ref_probs, n, n_ref, alpha)
    if crit is None:
        return 0.0
    q = (1.0 - share) * np.asarray(ref_probs, dtype=float) + share * broken
    return float(min(1.0, _sum_pmf(q, n)[: crit + 1].sum()))


def exact_mde(
    ref_probs: np.ndarray,
    n: float,
    n_ref: float | None,
    alpha: float,
    broken: np.ndarray,
    power: float = POWER,
) -> float | None:
    """The drop (points) of "more broken answers" the exact day test detects with
    ``power`` at ``n`` judged traces (rounded: the engine tests whole counts); None when
    even all answers broken would not reach it."""
    n_int = int(round(n))
    if n_int < 1:
        return None
    ref = tuple(float(x) for x in ref_probs)
    bad = tuple(float(x) for x in broken)
    # The lattice makes the raw figure a sawtooth in n (a larger day can have a smaller
    # attainable size): state the largest over n..1.25n + 2, so it never rises with n and
    # holds at every larger day too (the sawtooth's teeth are ~1%, the decline over 25%
    # of n ~10%).
    found = [_exact_mde(ref, m, n_ref, alpha, bad, power) for m in range(n_int, n_int * 5 // 4 + 3)]
    return None if any(f is None for f in found) else max(found)


@functools.lru_cache(maxsize=4096)
def _exact_mde(ref, n, n_ref, alpha, broken, power) -> float | None:
    ref_a, broken_a = np.array(ref), np.array(broken)
    gap = float(ref_a @ _LEVELS - broken_a @ _LEVELS)
    if gap <= 0:
        return None

    def f(w: float) -> float:
        return exact_power_at(w, ref_a, n, n_ref, alpha, broken_a) - power

    if f(1.0) < 0:
        return None
    if f(0.0) >= 0:
        return 0.0
    return float(optimize.brentq(f, 0.0, 1.0, xtol=1e-6)) * gap
