"""The anchor set's judge-drift rule: is today's scoring of the anchors the same judge?

The rule (pre-specified): a within-anchor permutation test on the anchors scored ok on every
scoring involved. With no change, today's score of an anchor is one more draw of the same
judge on the same answer, so the K + 1 scorings of each anchor (the first scoring, its K
repeats and today's) are exchangeable; the null distribution comes from re-choosing, anchor
by anchor, which of them plays "today" (``PERMUTATIONS`` seeded draws). Two statistics on d,
an anchor's score minus the mean of its other scorings, each at ``alpha / 2`` (Bonferroni,
so the day's false-finding rate is at most ``alpha``, default 0.01):

- shift: mean d, two-sided; a finding when p < alpha/2 and the mean shift is at least
  ``effect_floor`` (default 0.2 points) in size;
- spread: mean d², one-sided (today further away); a finding when p < alpha/2 and the
  judge's per-anchor change beyond its noise (the standard deviation solving
  E[d²] = change² + noise·(1 + 1/K), noise the first scorings' pooled within-anchor
  variance) is at least ``effect_floor``. This catches a new judge that scores differently
  without moving the mean (a different ranking, other idiosyncrasies).

Assumptions: anchors are independent, and a judge's scorings of an anchor on different days
are exchangeable when nothing changed (no day-to-day drift of the judge's noise). A
deterministic judge gives identical scorings on a clean day and no finding can be raised.
Without repeats of the first scoring (K = 0) only the shift is tested (a sign-flip test).

"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.01
EFFECT_FLOOR = 0.2
PERMUTATIONS = 2000
TEST_NAME = (
    "within-anchor permutation test against the first scoring and its repeats: "
    "shift (two-sided) and spread (one-sided), Bonferroni"
)


@dataclass
class PairedResult:
    p_shift: float
    p_spread: float | None  # None: no repeat of the first scoring to measure noise with
    shift: float  # mean of today - the first scoring's mean
    spread_excess: float | None  # the judge's per-anchor change beyond its noise (an sd)
    changed_share: float
    judge_drift: bool


def _deviations(x: np.ndarray) -> np.ndarray:
    """Per anchor (rows) and scoring (columns): the scoring minus the mean of the others."""
    k = x.shape[1]
    return x - (x.sum(axis=1, keepdims=True) - x) / (k - 1)


def paired_test(
    baseline,
    today,
    repeats=None,
    alpha: float = ALPHA,
    floor: float = EFFECT_FLOOR,
    permutations: int = PERMUTATIONS,
) -> PairedResult:
    """The judge-drift rule (module docstring) on the anchors' scores.

    ``baseline`` is the first scoring, ``repeats`` its repeats (one array or a sequence of
    arrays, one per repeat), ``today`` the day's scoring, all in anchor order.
    """
    b = np.asarray(baseline, dtype=float)
    t = np.asarray(today, dtype=float)
    reps = np.empty((0, len(b))) if repeats is None else np.atleast_2d(np.asarray(repeats, float))
    first = np.vstack([b, reps])  # the first scoring and its repeats: (K, anchors)
    x = np.column_stack([first.T, t])  # (anchors, K + 1); today is the last column
    d = _deviations(x)
    n, k1 = x.shape
    # Within-anchor permutations: which of the K + 1 scorings plays "today". Seeded, so
    # the same scores always give the same p-values.
    pick = np.random.default_rng(0).integers(0, k1, size=(permutations, n))
    perm = d[np.arange(n), pick]
    shift_obs, sq_obs = d[:, -1].mean(), np.mean(d[:, -1] ** 2)
    tol = 1e-9  # ties count against a finding
    p_shift = (1 + np.sum(np.abs(perm.mean(axis=1)) >= abs(shift_obs) - tol)) / (1 + permutations)
    if not np.any(d):
        p_shift = 1.0  # every scoring agrees: nothing moved
    shift = float(t.mean() - first.mean())
    drift = p_shift < alpha / 2 and abs(shift) >= floor
    p_spread = excess = None
    if len(reps):
        p_spread = (1 + np.sum(np.mean(perm**2, axis=1) >= sq_obs - tol)) / (1 + permutations)
        if not np.any(d):
            p_spread = 1.0
        k = first.shape[0]
        noise = float(np.mean(first.var(axis=0, ddof=1)))  # pooled within-anchor variance
        # E[(today - mean of K)^2] = change^2 + noise * (1 + 1/K): solve for the change.
        excess = math.sqrt(max(0.0, sq_obs - noise * (1 + 1 / k)))
        drift = drift or (p_spread < alpha / 2 and excess >= floor)
    changed = float(np.mean(t != b))
    p_spread = None if p_spread is None else float(p_spread)
    return PairedResult(float(p_shift), p_spread, shift, excess, changed, bool(drift))
