"""What a day's sample can see, checked by simulation through the engine's own day test.

- ``mde_check``: is the stated minimum detectable drop right? For each day size and
  day-to-day wobble, many healthy references are drawn (21 days, each day's share of
  broken answers wobbling around 5% with the given standard deviation, as the drift
  harness's traffic does with 0.01); the MDE is stated from each reference exactly as the
  report states it (``budget.sample_power``'s test: the reference's own distribution,
  variance, between-day variance estimate, the engine's alpha and 0.2-point floor); then
  days whose expected mean is exactly that drop below the healthy mean (with the same
  wobble) go through ``detectors.shortfall`` with the engine's alarm rule (p < alpha and
  a drop of at least the floor). The aim: 80% +- 5% detected, for each shape of drop at
  its own stated figure.
- ``two_stage_check``: the same-day follow-up on clean traffic. Stage 1 judges n1 traces;
  a segment whose stage-1 z reaches z_follow gets n2 more. Per segment-day, the false-alarm
  rate of: one look at n1 (no follow-up); the follow-up as built (every segment at or past
  z_follow followed up, the alarm decided on the full day only: ``budget.suspects``); and
  the naive two-look design (follow up only segments not yet significant, either look may
  alarm). And the power of each against a drop, so the price of the design shows.

    python -m bench.power_eval [--references 100] [--days 40] [--two-stage-seeds 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time

import numpy as np

from eval_pipeline.core.drift import budget, detectors, power
from eval_pipeline.core.drift.calibration import BROKEN_SCORES, score_probs
from eval_pipeline.core.drift.incidents import IncidentConfig
from eval_pipeline.core.drift.reference import Counts, between_day_variance

LEVELS = np.arange(1, 6)
BASE_BROKEN = 0.05  # a segment's everyday share of broken answers
REF_DAYS = budget.REFERENCE_DAYS
MIN_DROP = IncidentConfig.min_drop  # the engine's practical floor


def _reference(rng: np.random.Generator, n: int, wobble: float) -> tuple[Counts, float]:
    days = [
        Counts(tuple(int(x) for x in rng.multinomial(n, score_probs(BASE_BROKEN + rng.normal(0, wobble)))))
        for _ in range(REF_DAYS)
    ]  # fmt: skip
    return sum(days, Counts()), between_day_variance(days)


def _z_table(ref: Counts, tau2: float, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per possible sum n..5n: the engine's z and whether the day test alarms."""
    z, alarm = np.empty(4 * n + 1), np.empty(4 * n + 1, dtype=bool)
    for j in range(4 * n + 1):
        sf = detectors.shortfall(ref.mean, ref.variance, ref.n, (n + j) / n, n,
                                 ref_probs=ref.probs(), tau2=tau2)  # fmt: skip
        z[j], alarm[j] = sf.z, sf.p < alpha and sf.drop >= MIN_DROP - 1e-12
    return z, alarm


def mde_check(references: int, days: int, alpha: float, seed: int = 2026) -> str:
    rng = np.random.default_rng(seed)
    lines = [
        f"minimum detectable drop, stated as the report states it, through the engine's day "
        f"test (alpha={alpha:g}, floor {MIN_DROP}; {references} references x {days} days per "
        f"row; 21-day references):",
        f"  {'n today':>7} {'wobble':>6} {'tau2>0':>6} {'MDE broken':>10} {'detected':>8} "
        f"{'MDE shift':>9} {'detected':>8}",
    ]
    for wobble in (0.01, 0.04):
        for n in (10, 20, 40, 80):
            stated = {s: [] for s in power.SHAPES}
            hits = {s: 0 for s in power.SHAPES}
            runs = {s: 0 for s in power.SHAPES}
            overdispersed = 0
            for _ in range(references):
                ref, tau2 = _reference(rng, REF_DAYS * n, wobble)
                overdispersed += tau2 > 0
                _, alarm_of = _z_table(ref, tau2, n, alpha)
                test = power.DayTest.of(ref.probs(), ref.n, ref.variance, ref.mean, alpha,
                                        BROKEN_SCORES, tau2=tau2, min_drop=MIN_DROP)  # fmt: skip
                for shape in power.SHAPES:
                    m = power.exact_mde(dataclasses.replace(test, shape=shape), n)
                    if m is None:
                        continue
                    stated[shape].append(m)
                    sums = np.empty(days, dtype=int)
                    for d in range(days):
                        healthy = score_probs(BASE_BROKEN + rng.normal(0, wobble))
                        # The drop is from the true healthy mean, as a real drop would be.
                        q = power.alternative(healthy, BROKEN_SCORES, shape, m)
                        sums[d] = int(rng.multinomial(n, q) @ LEVELS)
                    hits[shape] += int(alarm_of[sums - n].sum())
                    runs[shape] += days
            cells = []
            for shape in power.SHAPES:
                mean_mde = np.mean(stated[shape]) if stated[shape] else float("nan")
                rate = hits[shape] / runs[shape] if runs[shape] else float("nan")
                cells.append(f"{mean_mde:10.2f} {rate:8.1%}" if shape == "broken"
                             else f"{mean_mde:9.2f} {rate:8.1%}")  # fmt: skip
            lines.append(
                f"  {n:>7} {wobble:>6.2f} {overdispersed / references:>6.0%} " + " ".join(cells)
            )
    return "\n".join(lines)


def two_stage_rates(
    seeds: int, days: int, alpha: float, drop: float = 0.0, n1: int = 20, n2: int = 30,
    z_follow: float = budget.FollowUpRule().z_follow, wobble: float = 0.01,
) -> dict[str, float]:  # fmt: skip
    """Per segment-day alarm rates of the three designs (module docstring), over ``seeds``
    references of 21 days x (n1 + n2) and ``days`` days each; ``drop`` > 0: a drop of
    that many points (more broken answers) on every simulated day."""
    out = {"one look, n1": 0, "follow-up as built": 0, "naive two looks": 0}
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 16])
        ref, tau2 = _reference(rng, REF_DAYS * (n1 + n2), wobble)
        z1_of, alarm1_of = _z_table(ref, tau2, n1, alpha)
        _, alarm_all_of = _z_table(ref, tau2, n1 + n2, alpha)
        healthy = [score_probs(BASE_BROKEN + rng.normal(0, wobble)) for _ in range(days)]
        today = [power.alternative(h, BROKEN_SCORES, "broken", drop) for h in healthy]
        s1 = np.array([rng.multinomial(n1, q) @ LEVELS for q in today]) - n1
        s2 = np.array([rng.multinomial(n2, q) @ LEVELS for q in today]) - n2
        z1, alarm1, alarm_all = z1_of[s1], alarm1_of[s1], alarm_all_of[s1 + s2]
        follow = z1 >= z_follow
        out["one look, n1"] += int(alarm1.sum())
        out["follow-up as built"] += int((follow & alarm_all).sum())
        out["naive two looks"] += int((alarm1 | (follow & ~alarm1 & alarm_all)).sum())
    return {k: v / (seeds * days) for k, v in out.items()}


def two_stage_check(seeds: int, days: int, alpha: float) -> str:
    clean = two_stage_rates(seeds, days, alpha)
    hit = two_stage_rates(max(seeds // 10, 1), days, alpha, drop=0.5)
    total = seeds * days
    lines = [
        f"same-day follow-up (stage 1: 20 traces, +30 when z >= {budget.FollowUpRule().z_follow}"
        f"), engine day test at alpha={alpha:g}: false alarms per 1,000 clean segment-days "
        f"({total:,}: {seeds} references x {days} days) and power against a 0.5-point drop:",
    ]
    for design, rate in clean.items():
        se = math.sqrt(rate * (1 - rate) / total) * 1000
        lines.append(
            f"  {design:<20} {1000 * rate:6.3f} (se {se:.3f}; alpha is {1000 * alpha:.3f})  "
            f"power {hit[design]:6.1%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=100)
    parser.add_argument("--days", type=int, default=40, help="simulated days per reference")
    parser.add_argument("--two-stage-seeds", type=int, default=200)
    parser.add_argument("--two-stage-days", type=int, default=5000)
    args = parser.parse_args(argv)
    began = time.monotonic()
    print(mde_check(args.references, args.days, detectors.DAY_ALPHA))
    print(two_stage_check(args.two_stage_seeds, args.two_stage_days, detectors.DAY_ALPHA))
    print(f"({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
