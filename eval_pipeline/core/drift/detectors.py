"""Two detectors on one statistic: the day's shortfall against the reference, in
standard-error units.

The day's mean is compared with the reference mean. Three sources of error make up the
standard error, and all three are in it:

    se² = var_ref / n_today          (today's sampling error)
        + var_ref / n_ref            (the reference mean's own sampling error)
        + tau²                       (between-day variance of the true mean: overdispersion,
                                      estimated from the reference days, ``between_day_variance``)

The tail of today's mean is **not** taken as normal: judge scores are 1-5 integers piled on
4 and 5 with a tail of 1s, so the mean of 20-60 of them is skewed to the left, and the
normal approximation understates the chance of a low day 2-4 fold exactly where the day
test decides (z about 3.3-3.8; measured against the exact distribution in
``eval_pipeline_tests/drift/test_detectors.py``). So:

- a segment row takes the **exact** lower tail of today's score sum under the reference's
  score distribution (``lattice_lower_tail``: the n-fold convolution of the reference's
  1-5 distribution, P(sum <= today's sum), the usual conservative exact p; the reference
  counts get 0.5 each so a level never seen is rare, not impossible);
- the overall row (a weighted mean over segments, not on a lattice) takes a one-term
  Edgeworth correction for the skewness (``edgeworth_lower_tail``), accurate to about 10%
  at n >= 200.

That p (today's sampling error only) is turned into a normal score and shrunk by
sqrt(se²_today / se²), which folds in the reference's error and tau² (a normal-score
approximation: those two parts are means of many scores, close to normal). The result,
z_t, feeds both detectors, with p_t = P(Z >= z_t).

- The **day test** (a Shewhart chart): alarms when p_t < ``day_alpha`` *and* the drop is
  at least ``min_drop`` points. The false-alarm aim is a rate per segment-day, so the
  day test spends a fixed share of it per row: ``DAY_ALPHA`` = 0.0005, i.e. at most 0.5
  false alarms per 1,000 clean row-days (measured by ``calibration``). The Holm-adjusted
  p over the day's rows is still recorded (the family-wise view of one day), but it does
  not decide: a per-day family-wise limit is stricter than the per-segment-day aim and
  costs a step drop its first-day page.
- **CUSUM** (Page, 1954): S_t = max(0, S_{t-1} + z_t - k), alarm when S_t > h. It adds up
  small persistent shortfalls that no single day shows, so a gradual decline is caught.
  k = 0.5 is tuned to catch a shift of about one standard error fastest; h is the smallest
  value whose false-alarm rate on clean traffic, measured by ``calibration.calibrate_h``
  running the real incident engine, stays within its half of the budget (see CUSUM_H).

Combining a Shewhart limit with a CUSUM is the classic "combined Shewhart-CUSUM" scheme
(Lucas, 1982).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from eval_pipeline.core.drift.reference import MIN_VARIANCE

CUSUM_K = 0.5
# Chosen by eval_pipeline.core.drift.calibration.calibrate_h (python -m
# eval_pipeline.core.drift.calibration, its own seeds, not the harness's): the smallest h on
# a 0.25 grid with at most 0.5 false alarms per 1,000 clean segment-days at 20-80 judged
# traces a segment-day, for the statistic above (exact tail, reference error, overdispersion):
# h=5.0 gave 0.625, h=5.25 gave 0.40 per 1,000 over 40,000 segment-days.
CUSUM_H = 5.25
DAY_ALPHA = 0.0005
# p is floored here so its normal score stays finite.
_P_FLOOR = 1e-300


@dataclass(frozen=True)
class Shortfall:
    drop: float  # reference mean - today's mean, in score points
    se: float
    z: float
    p: float  # one-sided: today lower than the reference
    se2_today: float | None = None  # today's sampling share of se² (the rest is shared)


def sum_pmf(probs: np.ndarray, n: int) -> np.ndarray:
    """P(sum of ``n`` i.i.d. 1..5 scores = n + j) for j = 0..4n: the n-fold convolution of
    the score distribution by repeated squaring (cheap at the sample sizes of a day)."""
    result, base, k = np.array([1.0]), np.asarray(probs, dtype=float), n
    while k:
        if k & 1:
            result = np.convolve(result, base)
        k >>= 1
        if k:
            base = np.convolve(base, base)
    return result


def lattice_lower_tail(probs: np.ndarray, n: int, observed_sum: int) -> float:
    """Exact P(sum of ``n`` scores <= ``observed_sum``), scores i.i.d. on 1..5 with ``probs``."""
    upto = observed_sum - n
    if upto < 0:
        return 0.0
    return float(min(1.0, sum_pmf(probs, n)[: upto + 1].sum()))


def edgeworth_lower_tail(z: float, skew: float) -> float:
    """P(mean <= mu - z·sd) with a one-term Edgeworth correction for the mean's
    standardised skewness ``skew`` (negative: a heavier lower tail)."""
    p = stats.norm.sf(z) - skew / 6.0 * (z * z - 1.0) * stats.norm.pdf(z)
    return float(min(max(p, 0.0), 1.0))


def _combine(drop: float, p_today: float, se2_today: float, se2: float) -> Shortfall:
    """Today's tail p -> normal score, shrunk for the reference's error and overdispersion."""
    p_today = min(max(p_today, _P_FLOOR), 1.0 - 1e-16)
    # ndtri/ndtr are the normal quantile and CDF (scipy.stats.norm's, without its overhead:
    # the replay calls this for every segment-day).
    z = -float(special.ndtri(p_today)) * math.sqrt(se2_today / se2)
    return Shortfall(
        drop=drop, se=math.sqrt(se2), z=z, p=float(special.ndtr(-z)), se2_today=se2_today
    )


def shortfall(
    ref_mean: float,
    ref_var: float,
    ref_n: int | None,
    mean: float,
    n: int,
    *,
    ref_probs: np.ndarray | None = None,
    tau2: float = 0.0,
) -> Shortfall:
    """The day's shortfall; ``ref_n`` None for a pinned value (no reference sampling error).

    With ``ref_probs`` (the reference's P(score = 1..5)) the tail of today's mean is exact
    (``lattice_lower_tail``); without it (a pinned value), normal. ``tau2`` is the
    between-day variance of the true mean."""
    var = max(ref_var, MIN_VARIANCE)
    se2_today = var / n
    se2 = se2_today + (var / ref_n if ref_n else 0.0) + max(tau2, 0.0)
    drop = ref_mean - mean
    if ref_probs is None:
        p_today = float(special.ndtr(-drop / math.sqrt(se2_today)))
    else:
        p_today = lattice_lower_tail(ref_probs, n, int(round(mean * n)))
    return _combine(drop, p_today, se2_today, se2)


def stratified_shortfall(
    parts: list[tuple[float, float, float, float]],
    *,
    today_parts: list[tuple[float, float]] | None = None,
) -> Shortfall:
    """Shortfall of a weighted mean: parts are (weight, ref_mean, mean, se²) per stratum.

    The overall row uses the reference's segment mix as weights (direct standardisation),
    so traffic moving between segments of different quality is not read as a drop.
    ``today_parts`` (per stratum: today's sampling variance of its mean, and the third
    central moment of that mean) give the skewness correction of today's tail; without
    them the tail is normal and se² is all today's.
    """
    total = sum(w for w, *_ in parts)
    drop = sum(w * (r - m) for w, r, m, _ in parts) / total
    se2 = sum((w / total) ** 2 * s2 for w, _, _, s2 in parts)
    if today_parts is None:
        return _combine(drop, float(stats.norm.sf(drop / math.sqrt(se2))), se2, se2)
    weights = [w / total for w, *_ in parts]
    se2_today = sum(a * a * v for a, (v, _) in zip(weights, today_parts, strict=True))
    k3 = sum(a**3 * m3 for a, (_, m3) in zip(weights, today_parts, strict=True))
    skew = k3 / se2_today**1.5 if se2_today > 0 else 0.0
    p_today = edgeworth_lower_tail(drop / math.sqrt(se2_today), skew)
    return _combine(drop, p_today, se2_today, se2)


def recovery_z(days: list[tuple[Shortfall, int]], margin: float) -> float:
    """Evidence that a segment has recovered: a one-sided non-inferiority z over the pooled
    days ``(shortfall, n judged)``, for H0 "the true drop is at least ``margin`` points".

    The days' drops are pooled weighted by n. Their sampling errors are independent (the
    ``se2_today`` parts, weighted by n² / N²); the rest of each day's se² (the reference
    mean's error and the between-day variance) is counted as if it were shared by all the
    days, which overstates the pooled error a little (tau² does average out over days): a
    conservative test, so an incident is not closed on too little evidence. The z is normal:
    the mean of skewed-left scores has a lighter upper tail than the normal curve, so the
    normal p of "the mean is this high" is conservative too.
    """
    total = sum(n for _, n in days)
    if not days or total == 0:
        return float("-inf")
    drop = sum(sf.drop * n for sf, n in days) / total
    own = sum(
        (n / total) ** 2 * (sf.se * sf.se if sf.se2_today is None else sf.se2_today)
        for sf, n in days
    )
    shared = sum(
        sf.se * sf.se - (sf.se * sf.se if sf.se2_today is None else sf.se2_today) for sf, _ in days
    ) / len(days)
    return (margin - drop) / math.sqrt(max(own + shared, 1e-12))


def cusum_step(s_prev: float, z: float, k: float = CUSUM_K) -> float:
    """One step of the one-sided (downward shift) CUSUM on standardised shortfalls."""
    return max(0.0, s_prev + z - k)


def cusum_path(
    zs: list[float], k: float = CUSUM_K, h: float = CUSUM_H
) -> tuple[list[float], int | None]:
    """(S_t for each t, index of the first alarm or None), with no reset: for tests and docs."""
    s, path, first = 0.0, [], None
    for i, z in enumerate(zs):
        s = cusum_step(s, z, k)
        path.append(s)
        if first is None and s > h:
            first = i
    return path, first
