"""Two detectors on one statistic: the day's shortfall against the reference, in
standard-error units.

    z_t = (reference mean - today's mean) / sqrt(var_ref / n_today + var_ref / n_ref)

(a one-sided two-sample z-test on means; by the central limit theorem the mean of >= 10
1-5 scores is close enough to normal, and the reference variance is the pooled one, so a
day with few traces gets a wide error, not a big z.)

- The **day test** (a Shewhart chart): p = P(Z >= z_t), Holm-adjusted over the day's rows
  (every segment plus the overall row), alarms when p_holm < ``day_alpha`` *and* the drop
  is at least ``min_drop`` points. It catches a big step on its first day.
- **CUSUM** (Page, 1954): S_t = max(0, S_{t-1} + z_t - k), alarm when S_t > h. It adds up
  small persistent shortfalls that no single day shows, so a gradual decline is caught.
  k = 0.5 is tuned to catch a shift of about one standard error fastest; h is the smallest
  value whose false-alarm rate on clean traffic, measured by ``calibration.calibrate_h``
  running the real incident engine, stays within the budget (see CUSUM_H).

Combining a Shewhart limit with a CUSUM is the classic "combined Shewhart-CUSUM" scheme
(Lucas, 1982). The false-alarm budget of 1 per 1,000 clean segment-days is split: the
day test's Holm family-wise alpha of 0.002 bounds it at 2 false days per 1,000 *days*
shared by all rows (under 0.5 per 1,000 segment-days with four or more rows), and CUSUM_H
gives the CUSUM at most 0.5 per 1,000 segment-days including warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from eval_pipeline.core.drift.reference import MIN_VARIANCE

CUSUM_K = 0.5
# Chosen by eval_pipeline.core.drift.calibration.calibrate_h (python -m
# eval_pipeline.core.drift.calibration): the smallest h on a 0.25 grid with at most
# 0.5 false alarms per 1,000 clean segment-days at 20-80 judged traces a segment-day
# (measured: h=6.0 gave 0.80, h=6.25 gave 0.45 per 1,000 over 40,000 segment-days).
CUSUM_H = 6.25
DAY_ALPHA = 0.002


@dataclass(frozen=True)
class Shortfall:
    drop: float  # reference mean - today's mean, in score points
    se: float
    z: float
    p: float  # one-sided: today lower than the reference


def shortfall(ref_mean: float, ref_var: float, ref_n: int | None, mean: float, n: int) -> Shortfall:
    """The day's shortfall; ``ref_n`` None for a pinned value (no reference sampling error)."""
    var = max(ref_var, MIN_VARIANCE)
    se2 = var / n + (var / ref_n if ref_n else 0.0)
    return stratified_shortfall([(1.0, ref_mean, mean, se2)])


def stratified_shortfall(parts: list[tuple[float, float, float, float]]) -> Shortfall:
    """Shortfall of a weighted mean: parts are (weight, ref_mean, mean, se²) per stratum.

    The overall row uses the reference's segment mix as weights (direct standardisation),
    so traffic moving between segments of different quality is not read as a drop.
    """
    total = sum(w for w, *_ in parts)
    drop = sum(w * (r - m) for w, r, m, _ in parts) / total
    se = math.sqrt(sum((w / total) ** 2 * s2 for w, _, _, s2 in parts))
    z = drop / se
    return Shortfall(drop=drop, se=se, z=z, p=float(stats.norm.sf(z)))


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
