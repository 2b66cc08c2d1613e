"""The counts a budgeted day hands the incident engine (``budget_sampling.engine_counts``):
the judged scores as drawn. The day test against a reference drawn by the same design
keeps its size on clean traffic with the risk slice oversampled, and an oversampled new
prompt_version's drop reaches the test undiluted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eval_pipeline.core.drift import detectors
from eval_pipeline.core.drift.budget_sampling import engine_counts
from eval_pipeline.core.drift.calibration import score_probs
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.drift.sampling import split_risk
from eval_pipeline.core.drift.weights import effective_counts, trace_weights

LEVELS = np.arange(1, 6)
HEALTHY, BROKEN = score_probs(0), score_probs(1)


def day_sample(rng, n, size=400, base_broken=0.05, new_share=0.0, new_broken=0.0, over=3.0):
    """One segment-day drawn as the budgeted sampler draws it: the risk slice (a new
    version's traces, and thumbs-down traces, which are mostly broken answers) is its own
    stratum, drawn ``over`` times as often as the rest. Returns the drawn rows."""
    new = rng.random(size) < new_share
    broken = rng.random(size) < np.where(new, base_broken + new_broken, base_broken)
    score = np.where(
        broken, rng.choice(LEVELS, size, p=BROKEN), rng.choice(LEVELS, size, p=HEALTHY)
    )
    down = rng.random(size) < np.where(broken, 0.10, 0.01)
    risk = new | down
    n_r, n_b = split_risk(n, int(risk.sum()), int((~risk).sum()), over)
    pick_r = rng.permutation(np.flatnonzero(risk))[:n_r]
    pick_b = rng.permutation(np.flatnonzero(~risk))[:n_b]
    return pd.DataFrame(
        {
            "score": np.concatenate([score[pick_r], score[pick_b]]).astype(float),
            "stratum": ["s | risk"] * len(pick_r) + ["s"] * len(pick_b),
            "stratum_size": [int(risk.sum())] * len(pick_r) + [int((~risk).sum())] * len(pick_b),
        }
    )


def reference(rng, n, days=21):
    """A segment's reference: ``days`` clean days drawn by the same design."""
    return sum((engine_counts(day_sample(rng, n)) for _ in range(days)), Counts())


def test_engine_counts_are_the_drawn_scores():
    ok = pd.DataFrame({"score": [5.0, 4.0, 4.0, 1.0], "stratum": ["a", "a", "a | risk", "a"]})
    assert engine_counts(ok) == Counts.of([5, 4, 4, 1])


def test_the_day_test_on_drawn_counts_keeps_its_size_on_clean_traffic():
    # A reference of 21 days drawn by the same design, then a clean day: the one-sided
    # normal day test at 5% (ref_n given, as the engine does) should alarm about 5% of the
    # time although thumbs-down traces (mostly broken answers) are oversampled 3x.
    rng = np.random.default_rng(7)
    runs, n, hits = 1500, 10, 0
    for _ in range(runs):
        ref = reference(rng, n)
        today = engine_counts(day_sample(rng, n))
        sf = detectors.shortfall(ref.mean, ref.variance, ref.n, today.mean, today.n)
        hits += sf.p < 0.05
    rate, se = hits / runs, (0.05 * 0.95 / runs) ** 0.5
    assert abs(rate - 0.05) < 3 * se + 0.01, rate


def test_a_new_versions_drop_reaches_the_test_undiluted():
    # A roll-out: 30% of the segment on a new version one point worse. The drawn counts
    # (the new version oversampled 3x) see a larger z than the weighted counts, which
    # dilute the drop to its share of traffic and pay the design effect on top.
    rng = np.random.default_rng(11)
    drawn_z, weighted_z = [], []
    broken = 1.0 / float(HEALTHY @ LEVELS - BROKEN @ LEVELS)
    for _ in range(200):
        ref = reference(rng, 12)
        rows = day_sample(rng, 12, new_share=0.3, new_broken=broken)
        for counts, out in (
            (engine_counts(rows), drawn_z),
            (effective_counts(rows["score"], trace_weights(rows), rows["stratum"]), weighted_z),
        ):
            out.append(detectors.shortfall(ref.mean, ref.variance, ref.n, counts.mean,
                                           counts.n).z)  # fmt: skip
    assert np.mean(drawn_z) > 1.3 * np.mean(weighted_z) > 0
