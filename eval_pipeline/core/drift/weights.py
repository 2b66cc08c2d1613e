"""Honest estimates from an unequal-probability sample.

The budgeted sampler draws each stratum (a segment, or a risk slice of one: new
prompt_version, thumbs-down, ...) as a simple random sample of its own size, so a trace
of stratum h stands for N_h / n_h traces. Estimates are post-stratified over the strata
(the Horvitz-Thompson estimator with weights N_h / n_h, normalised by the known total):

    mean = sum_h N_h * ybar_h / sum_h N_h
    var  = sum_h (N_h / N)^2 * (1 - n_h / N_h) * s_h^2 / n_h

with n_h the judged (ok) traces of stratum h, so judge failures and traces left out by
the budget only shrink n_h; a stratum with no ok judgment drops out of both sums (its
share is then said in ``missing_share``). Oversampling a risk slice never biases a mean:
it only changes how many traces stand for that slice.

The incident engine tests a budgeted day as drawn (``budget_sampling.engine_counts``), not
weighted. ``effective_counts`` (the weighted score distribution scaled to Kish's effective
sample size n_eff = (sum w)^2 / sum w^2; Kish, *Survey Sampling*, 1965) is kept for the
harness's ``--engine-counts weighted`` comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from eval_pipeline.core.drift.reference import MIN_VARIANCE, Counts


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    se: float | None
    n: int  # ok judgments used
    n_eff: float  # Kish effective sample size of their weights
    population: int  # traces the strata stand for
    missing_share: float  # share of the population in strata with no ok judgment


def kish_n_eff(weights: Sequence[float]) -> float:
    w = np.asarray(weights, dtype=float)
    if len(w) == 0 or w.sum() <= 0:
        return 0.0
    return float(w.sum() ** 2 / (w**2).sum())


def post_stratified(frame: pd.DataFrame) -> Estimate:
    """frame: one row per ok judgment with columns stratum, stratum_size, score."""
    if len(frame) == 0:
        return Estimate(None, None, 0, 0.0, 0, 0.0)
    groups = frame.groupby("stratum", sort=True)
    sizes = groups["stratum_size"].first().astype(float)
    n_h = groups["score"].size().astype(float)
    means = groups["score"].mean()
    var_h = groups["score"].var(ddof=1).fillna(MIN_VARIANCE).clip(lower=MIN_VARIANCE)
    total = float(sizes.sum())
    shares = sizes / total
    mean = float((shares * means).sum())
    fpc = (1 - n_h / sizes).clip(lower=0.0)
    var = float((shares**2 * fpc * var_h / n_h).sum())
    weights = (sizes / n_h).reindex(frame["stratum"]).to_numpy()
    return Estimate(
        mean=mean,
        se=math.sqrt(var),
        n=len(frame),
        n_eff=kish_n_eff(weights),
        population=int(total),
        missing_share=0.0,
    )


def estimates(frame: pd.DataFrame, all_key: str) -> dict[str, Estimate]:
    """Per segment and overall (``all_key``), from one row per *sampled* trace with columns
    segment, stratum, stratum_size, state, score. Strata are nested in segments."""
    out = {}
    ok = frame[frame["state"] == "ok"]
    for key, part, ok_part in [(all_key, frame, ok)] + [
        (seg, g, ok[ok["segment"] == seg]) for seg, g in frame.groupby("segment", sort=True)
    ]:
        est = post_stratified(ok_part)
        sizes = part.groupby("stratum")["stratum_size"].first()
        total = float(sizes.sum())
        missing = float(sizes[~sizes.index.isin(set(ok_part["stratum"]))].sum())
        out[key] = Estimate(
            est.mean,
            est.se,
            est.n,
            est.n_eff,
            int(total),
            missing / total if total else 0.0,
        )
    return out


def trace_weights(frame: pd.DataFrame) -> np.ndarray:
    """N_h / n_h for each row (rows are the ok judgments of their strata)."""
    _, inverse, n_h = np.unique(
        frame["stratum"].to_numpy(), return_inverse=True, return_counts=True
    )
    return frame["stratum_size"].to_numpy(dtype=float) / n_h[inverse]


def effective_counts(
    scores: Sequence[float], weights: Sequence[float], strata: Sequence[str] | None = None
) -> Counts:
    """The weighted distribution of 1-5 scores, as counts summing to an effective sample
    size: Kish's n_eff without ``strata``; with them (the post-stratified design), the
    n_eff whose simple-random-sample variance equals the design's, s_w^2 / var(mean), so
    a risk slice that tracks the score is credited for what it explains. A stratum with
    fewer than two scores gets the segment's weighted variance (it has none of its own)."""
    s = np.asarray(scores, dtype=float)
    w = np.asarray(weights, dtype=float)
    if len(s) == 0:
        return Counts()
    levels = np.arange(1, 6, dtype=float)
    share = np.array([w[s == level].sum() for level in levels]) / w.sum()
    n_eff = kish_n_eff(w)
    if strata is not None:
        mean = float(share @ levels)
        var_w = max(float(share @ (levels - mean) ** 2), MIN_VARIANCE)
        _, inv, n_h = np.unique(np.asarray(strata, dtype=object), return_inverse=True,
                                return_counts=True)  # fmt: skip
        size_h = np.bincount(inv, weights=w)  # N_h: each score stands for its weight
        sum_h = np.bincount(inv, weights=s)
        sq_h = np.bincount(inv, weights=s * s)
        with np.errstate(invalid="ignore", divide="ignore"):
            var_h = (sq_h - sum_h**2 / n_h) / (n_h - 1)
        var_h = np.where(n_h >= 2, var_h, var_w).clip(min=MIN_VARIANCE)
        fpc = (1 - n_h / size_h).clip(min=0.0)
        var_mean = float(((size_h / size_h.sum()) ** 2 * fpc * var_h / n_h).sum())
        # Never more than the judged traces: the design cannot beat a census of them.
        n_eff = min(var_w / var_mean, float(len(s))) if var_mean > 0 else float(len(s))
    return integer_counts(share, n_eff)


def integer_counts(share: np.ndarray, n_eff: float) -> Counts:
    """Whole counts for a score distribution ``share`` at an effective size ``n_eff``.

    The engine's day test takes the exact tail of today's score *sum* on the 1-5 lattice,
    which needs a whole number of scores and a whole sum. The size is rounded down (never
    credit the design with more than it has); the counts are the largest-remainder
    rounding of share * n, then moved one level at a time until their sum is the nearest
    whole number to the weighted mean times n, so the mean the engine tests is the
    weighted mean to within 0.5 / n."""
    n = max(int(math.floor(n_eff + 1e-9)), 1)
    levels = np.arange(1, 6)
    ideal = np.asarray(share, dtype=float) * n
    c = np.floor(ideal + 1e-12).astype(int)
    for i in np.argsort(-(ideal - c), kind="stable")[: n - int(c.sum())]:
        c[i] += 1
    diff = int(round(float(share @ levels) * n)) - int(c @ levels)
    while diff:
        step = 1 if diff > 0 else -1
        # Move one score a level up (or down) where the rounding overshot most.
        over = c - ideal
        movable = [i for i in range(5) if c[i] > 0 and 0 <= i + step <= 4]
        i = max(movable, key=lambda j: (over[j] - over[j + step], -j * step))
        c[i] -= 1
        c[i + step] += 1
        diff -= step
    return Counts(tuple(int(x) for x in c))
