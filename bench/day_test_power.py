"""Day-one power of candidate day tests for the harness's step drop, at the same size.

The step of ``bench/drift_eval.py`` (billing: 39 judged traces a day, a 0.8-point drop
from more broken answers) against a reference of 21 healthy days. Each statistic's
threshold is its own simulated null quantile at 5e-4 (the day test's share of the
false-alarm budget), so the tests are compared at equal size, whatever their
approximations: the difference of means in standard errors (what the engine's day test
ranks days by), the one-sided Mann-Whitney U (midranks, tie-corrected normal score), the
share of scores <= 2, the share of 5s, and two ways of combining the mean with the share
of scores <= 2 (a test for "some answers break"): Bonferroni (either statistic beyond its
own null quantile at level/2) and the min-p of the two calibrated by the same simulation
(the least conservative valid combination of the two).

The last row is the ceiling: the Neyman-Pearson likelihood-ratio test of the reference's
score distribution against the step's true one, both known exactly. No test at this size
and this sample can page more often on day one; if it is short of 1, "paged on its first
day" in every run is out of reach at 200 judged a day within the false-alarm budget.

    python -m bench.day_test_power [--n 39] [--drop 0.8] [--segment billing] [--level 5e-4]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy import stats

from bench.drift_eval import BASE_BROKEN, broken_for_drop
from eval_pipeline.core.drift.calibration import score_probs

LEVELS = np.arange(1, 6)
REF_DAYS = 21


def statistics(
    rng: np.random.Generator,
    base: np.ndarray,
    probs: np.ndarray,
    alt: np.ndarray,
    n_today: int,
    sims: int,
) -> dict[str, np.ndarray]:
    """Per simulated day: each statistic, larger = worse today. ``base`` is the segment's
    healthy score distribution, ``probs`` today's, ``alt`` the step's (for the ceiling)."""
    n_ref = n_today * REF_DAYS
    ref = rng.multinomial(n_ref, base, size=sims)
    day = rng.multinomial(n_today, probs, size=sims)
    m_ref, m_day = ref @ LEVELS / n_ref, day @ LEVELS / n_today
    v_ref = ref @ LEVELS**2 / n_ref - m_ref**2
    total = ref + day
    midrank = np.cumsum(total, 1) - total + (total + 1) / 2
    u = (day * midrank).sum(1) - n_today * (n_today + 1) / 2
    n_all = n_today + n_ref
    ties = (total**3 - total).sum(1)
    sd_u = np.sqrt(n_today * n_ref / 12 * ((n_all + 1) - ties / (n_all * (n_all - 1))))
    return {
        "difference of means": (m_ref - m_day) / np.sqrt(v_ref / n_today + v_ref / n_ref),
        "Mann-Whitney U": (n_today * n_ref / 2 - u) / sd_u,
        "share of scores <= 2": day[:, :2].sum(1) / n_today - ref[:, :2].sum(1) / n_ref,
        "share of 5s": ref[:, 4] / n_ref - day[:, 4] / n_today,
        "likelihood ratio (ceiling)": day @ np.log(alt / base),
    }


def upper_rank(null: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Simulated one-sided p: the share of the null at or above each value."""
    ordered = np.sort(null)
    return 1.0 - np.searchsorted(ordered, values, side="left") / len(ordered)


def powers(
    n_today: int,
    drop: float,
    segment: str,
    level: float,
    *,
    seed: int = 7,
    null_sims: int = 400_000,
    hit_sims: int = 20_000,
) -> dict[str, float]:
    """Each test's share of step days beyond its own simulated null quantile at ``level``."""
    rng = np.random.default_rng(seed)
    base = score_probs(BASE_BROKEN[segment])
    # drop 0 makes the alternative the null itself (the ceiling's statistic is then 0).
    alt = score_probs(BASE_BROKEN[segment] + broken_for_drop(drop)) if drop > 0 else base
    null = statistics(rng, base, base, alt, n_today, null_sims)
    hit = statistics(rng, base, alt, alt, n_today, hit_sims)
    # A second null sample calibrates the min-p combination (its own quantile).
    null2 = statistics(rng, base, base, alt, n_today, null_sims)
    out = {
        name: float(np.mean(hit[name] > np.quantile(values, 1 - level)))
        for name, values in null.items()
    }
    a, b = "difference of means", "share of scores <= 2"
    out["mean or share <= 2, Bonferroni"] = float(
        np.mean(
            (hit[a] > np.quantile(null[a], 1 - level / 2))
            | (hit[b] > np.quantile(null[b], 1 - level / 2))
        )
    )
    min_p_null = np.minimum(upper_rank(null[a], null2[a]), upper_rank(null[b], null2[b]))
    min_p_hit = np.minimum(upper_rank(null[a], hit[a]), upper_rank(null[b], hit[b]))
    out["mean or share <= 2, min-p"] = float(np.mean(min_p_hit < np.quantile(min_p_null, level)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=39, help="judged traces today")
    parser.add_argument("--drop", type=float, default=0.8, help="the step, in points")
    parser.add_argument("--segment", default="billing", choices=sorted(BASE_BROKEN))
    parser.add_argument("--level", type=float, default=5e-4, help="simulated null rate")
    args = parser.parse_args(argv)
    result = powers(args.n, args.drop, args.segment, args.level)
    print(
        f"day-one power at a simulated null rate of {args.level} "
        f"({args.segment}, {args.n} judged today, a {args.drop}-point drop, "
        f"reference {REF_DAYS} days)"
    )
    for name, power in result.items():
        print(f"  {name:<32} {power:.3f}")
    # The normal reading of the ceiling, for the docs' arithmetic: z needed vs z expected.
    print(f"  (one-sided normal quantile at this level: z > {stats.norm.isf(args.level):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
