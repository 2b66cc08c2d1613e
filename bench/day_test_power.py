"""Day-one power of candidate day tests for the harness's step drop, at the same size.

The step of ``bench/drift_eval.py`` (billing: 39 judged traces a day, a 0.8-point drop
from more broken answers) against a reference of 21 healthy days. Each statistic's
threshold is its own simulated null quantile at 5e-4 (the day test's share of the
false-alarm budget), so the tests are compared at equal size, whatever their
approximations: the difference of means in standard errors (what the engine's day test
ranks days by), the one-sided Mann-Whitney U (midranks, tie-corrected normal score), the
share of scores <= 2, and the share of 5s.

    python -m bench.day_test_power
"""

from __future__ import annotations

import sys

import numpy as np

from bench.drift_eval import BASE_BROKEN, broken_for_drop
from eval_pipeline.core.drift.calibration import score_probs

N_TODAY = 39
N_REF = 39 * 21
LEVEL = 5e-4
LEVELS = np.arange(1, 6)


def statistics(rng: np.random.Generator, probs: np.ndarray, sims: int) -> dict[str, np.ndarray]:
    """Per simulated day: each statistic, larger = worse today."""
    ref = rng.multinomial(N_REF, score_probs(BASE_BROKEN["billing"]), size=sims)
    day = rng.multinomial(N_TODAY, probs, size=sims)
    m_ref, m_day = ref @ LEVELS / N_REF, day @ LEVELS / N_TODAY
    v_ref = ref @ LEVELS**2 / N_REF - m_ref**2
    total = ref + day
    midrank = np.cumsum(total, 1) - total + (total + 1) / 2
    u = (day * midrank).sum(1) - N_TODAY * (N_TODAY + 1) / 2
    n_all = N_TODAY + N_REF
    ties = (total**3 - total).sum(1)
    sd_u = np.sqrt(N_TODAY * N_REF / 12 * ((n_all + 1) - ties / (n_all * (n_all - 1))))
    return {
        "difference of means": (m_ref - m_day) / np.sqrt(v_ref / N_TODAY + v_ref / N_REF),
        "Mann-Whitney U": (N_TODAY * N_REF / 2 - u) / sd_u,
        "share of scores <= 2": day[:, :2].sum(1) / N_TODAY - ref[:, :2].sum(1) / N_REF,
        "share of 5s": ref[:, 4] / N_REF - day[:, 4] / N_TODAY,
    }


def main() -> int:
    rng = np.random.default_rng(7)
    null = statistics(rng, score_probs(BASE_BROKEN["billing"]), 400_000)
    step = score_probs(BASE_BROKEN["billing"] + broken_for_drop(0.8))
    alt = statistics(rng, step, 20_000)
    print(f"step day-one power at a simulated null rate of {LEVEL} (n today {N_TODAY})")
    for name, values in null.items():
        threshold = np.quantile(values, 1 - LEVEL)
        print(f"  {name:<22} {np.mean(alt[name] > threshold):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
