"""How the CUSUM threshold h was chosen: by simulation, running the real incident engine
on clean traffic and counting the incidents it opens.

Clean segment-days are drawn from a realistic judge-score distribution (``CLEAN_SCORES``:
mostly 4s and 5s, a tail of low scores) with 20-80 judged traces a segment-day (the
sample sizes of a 200-a-day stratified sample with a floor of 20), each segment with its
own baseline quality and a small day-to-day wobble. The day test is switched off so only
the CUSUM's false alarms are counted; the warm-up days are included. ``calibrate_h``
returns the smallest h on the grid whose rate stays within the target.
``day_test_false_alarm_rate`` measures the day test alone (CUSUM off) on the same traffic.

The seeds here (0-3 of this module's own generator) are not the evaluation harness's
(``bench/drift_eval.py`` draws its traffic from another generator keyed by seed and kind),
so h is never tuned on the traffic it is judged on.

    python -m eval_pipeline.core.drift.calibration [--first-seed N] [--grid-from H]
                                                     # prints the table and the chosen h
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import numpy as np

from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.records import SegmentDay
from eval_pipeline.core.drift.reference import Counts

# P(score = 1..5) for a healthy answer, and for a broken one (a refusal, a cut-off answer).
CLEAN_SCORES = np.array([0.03, 0.05, 0.12, 0.35, 0.45])
BROKEN_SCORES = np.array([0.50, 0.30, 0.15, 0.05, 0.0])
START = dt.date(2026, 1, 1)


def score_probs(broken_share: float) -> np.ndarray:
    b = min(max(broken_share, 0.0), 1.0)
    return (1 - b) * CLEAN_SCORES + b * BROKEN_SCORES


def clean_days(
    rng: np.random.Generator, n_segments: int, n_days: int, n_range=(20, 80)
) -> list[SegmentDay]:
    base = rng.uniform(0.0, 0.08, n_segments)  # each segment's own everyday breakage
    out = []
    for d in range(n_days):
        day = START + dt.timedelta(days=d)
        for s in range(n_segments):
            n = int(rng.integers(n_range[0], n_range[1] + 1))
            wobble = max(0.0, base[s] + rng.normal(0, 0.01))
            counts = Counts(tuple(int(x) for x in rng.multinomial(n, score_probs(wobble))))
            out.append(SegmentDay(day, f"s{s:02d}", counts))
    return out


def false_alarm_rate(
    h: float,
    k: float = 0.5,
    *,
    seeds: int = 4,
    first_seed: int = 0,
    n_segments: int = 40,
    n_days: int = 250,
    hold_run_s: float | None = None,
) -> tuple[float, int, int]:
    """(incidents per 1,000 clean segment-days, incidents, segment-days) for the CUSUM alone."""
    config = IncidentConfig(k=k, h=h, use_day_test=False, overall=False, hold_run_s=hold_run_s)
    alarms = segment_days = 0
    for seed in range(first_seed, first_seed + seeds):
        days = clean_days(np.random.default_rng(seed), n_segments, n_days)
        history = run_history(days, config)
        alarms += len(history.incidents)
        segment_days += len(days)
    return 1000 * alarms / segment_days, alarms, segment_days


def day_test_false_alarm_rate(
    day_alpha: float | None = None,
    *,
    seeds: int = 4,
    first_seed: int = 0,
    n_segments: int = 40,
    n_days: int = 250,
) -> tuple[float, int, int]:
    """(incidents per 1,000 clean segment-days, incidents, segment-days) for the day test."""
    config = IncidentConfig(h=float("inf"), overall=False)
    if day_alpha is not None:
        config = IncidentConfig(h=float("inf"), overall=False, day_alpha=day_alpha)
    alarms = segment_days = 0
    for seed in range(first_seed, first_seed + seeds):
        days = clean_days(np.random.default_rng(seed), n_segments, n_days)
        history = run_history(days, config)
        alarms += len(history.incidents)
        segment_days += len(days)
    return 1000 * alarms / segment_days, alarms, segment_days


def calibrate_h(
    target_per_1000: float = 0.5, k: float = 0.5, grid=None, **kwargs
) -> tuple[float, list[tuple[float, float, int, int]]]:
    grid = list(grid if grid is not None else np.arange(4.0, 8.01, 0.25))
    table = []
    chosen = None
    for h in grid:
        rate, alarms, n = false_alarm_rate(float(h), k, **kwargs)
        table.append((float(h), rate, alarms, n))
        if chosen is None and rate <= target_per_1000:
            chosen = float(h)
            break
    return chosen, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+3")
    parser.add_argument("--grid-from", type=float, default=4.0, help="smallest h tried")
    parser.add_argument(
        "--hold-run-s",
        type=float,
        default=None,
        help="hold a CUSUM run's days out of the reference above this S (default: off)",
    )
    args = parser.parse_args(argv)
    chosen, table = calibrate_h(
        grid=np.arange(args.grid_from, 8.01, 0.25),
        first_seed=args.first_seed,
        hold_run_s=args.hold_run_s,
    )
    print("h      false alarms / 1,000 clean segment-days   (alarms / segment-days)")
    for h, rate, alarms, n in table:
        print(f"{h:<6.2f} {rate:8.3f}   ({alarms} / {n})")
    print(f"chosen h = {chosen} (k = 0.5, target <= 0.5 per 1,000, seeds from {args.first_seed})")
    rate, alarms, n = day_test_false_alarm_rate(first_seed=args.first_seed)
    print(f"day test alone (alpha per row as configured): {rate:.3f} per 1,000 ({alarms} / {n})")
    return 0 if chosen is not None else 1


if __name__ == "__main__":
    sys.exit(main())
