"""Weighted estimates: post-stratification over the sampling strata, and the effective
counts the incident engine tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval_pipeline.core.drift.budget_sampling import BudgetedSamplingConfig, plan_budgeted
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.drift.weights import (
    effective_counts,
    estimates,
    integer_counts,
    kish_n_eff,
    post_stratified,
    trace_weights,
)


def test_post_stratified_mean_weights_each_stratum_by_its_size():
    frame = pd.DataFrame(
        {
            "stratum": ["a"] * 4 + ["b"] * 4,
            "stratum_size": [900] * 4 + [100] * 4,
            "score": [5, 5, 4, 4, 1, 1, 2, 2],
        }
    )
    est = post_stratified(frame)
    assert est.mean == pytest.approx(0.9 * 4.5 + 0.1 * 1.5)  # not the raw 3.0
    var = (
        0.9**2 * (1 - 4 / 900) * np.var([5, 5, 4, 4], ddof=1) / 4
        + 0.1**2 * (1 - 4 / 100) * np.var([1, 1, 2, 2], ddof=1) / 4
    )
    assert est.se == pytest.approx(np.sqrt(var))
    assert est.population == 1000


def test_failures_shrink_their_stratum_and_a_stratum_with_none_is_reported():
    frame = pd.DataFrame(
        {
            "segment": ["s"] * 6,
            "stratum": ["s", "s", "s", "s | risk", "s | risk", "t"],
            "stratum_size": [90, 90, 90, 10, 10, 5],
            "state": ["ok", "ok", "error", "error", "error", "ok"],
            "score": [4, 5, None, None, None, 3],
        }
    )
    frame.loc[5, "segment"] = "t"
    est = estimates(frame, "__all__")
    assert est["s"].mean == pytest.approx(4.5) and est["s"].missing_share == pytest.approx(0.1)
    assert est["__all__"].mean == pytest.approx((90 * 4.5 + 5 * 3) / 95)


def test_oversampling_never_biases_the_weighted_mean():
    rng = np.random.default_rng(5)
    n = 2000
    risk = rng.random(n) < 0.1
    # Risk traces score lower: oversampling them biases a plain mean downwards.
    score = np.where(risk, rng.choice([1, 2, 3], n), rng.choice([3, 4, 5], n)).astype(float)
    pop = pd.DataFrame({"trace_id": [f"t{i}" for i in range(n)], "segment": "s", "risk": risk})
    truth = score.mean()
    errs_w, errs_plain = [], []
    for seed in range(300):
        cfg = BudgetedSamplingConfig(calls=60, reserve_fraction=0, seed=str(seed))
        rows = plan_budgeted(pop, cfg).rows()
        rows["score"] = score[rows["trace_id"].str[1:].astype(int)]
        errs_w.append(post_stratified(rows).mean - truth)
        errs_plain.append(rows["score"].mean() - truth)
    se = np.std(errs_w, ddof=1) / np.sqrt(len(errs_w))
    assert abs(np.mean(errs_w)) < 3 * se
    assert np.mean(errs_plain) < -10 * se  # what the weights correct


def test_effective_counts_are_exact_for_equal_weights_and_shrink_for_unequal_ones():
    scores = [5, 5, 4, 3, 1]
    assert effective_counts(scores, [7.0] * 5) == Counts.of(scores)
    w = [1.0, 1.0, 1.0, 1.0, 4.0]
    assert kish_n_eff(w) == pytest.approx(64 / 20)
    c = effective_counts(scores, w)
    # Whole counts (the engine's exact tail needs them): n_eff 3.2 rounded down, and the
    # weighted mean to within half a point over n.
    assert c.n == 3 and all(isinstance(x, int) for x in c.c)
    assert abs(c.mean - np.average(scores, weights=w)) <= 0.5 / 3 + 1e-12


def test_design_effective_counts_credit_strata_that_track_the_score():
    frame = pd.DataFrame(
        {
            "stratum": ["a"] * 10 + ["b"] * 10,
            "stratum_size": [900] * 10 + [100] * 10,
            "score": [5, 4] * 5 + [1, 2] * 5,
        }
    )
    w = trace_weights(frame)
    kish = effective_counts(frame["score"], w)
    design = effective_counts(frame["score"], w, frame["stratum"])
    for c in (kish, design):
        assert abs(c.mean - (0.9 * 4.5 + 0.1 * 1.5)) <= 0.5 / c.n + 1e-12
    assert kish.n < design.n <= 20


@pytest.mark.parametrize("seed", range(200))
def test_integer_counts_keep_the_size_and_the_mean(seed):
    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.full(5, 0.7))
    n_eff = float(rng.uniform(1, 60))
    c = integer_counts(share, n_eff)
    assert c.n == max(int(np.floor(n_eff)), 1)
    assert min(c.c) >= 0
    target = float(share @ np.arange(1, 6))
    assert abs(c.mean - target) <= 0.5 / c.n + 1e-12
