"""Drift evaluation harness: traffic with known truth, the real incident engine, the figures.

For each kind of traffic and each seed it generates 42 days of traffic (~2,000 traces a
day over six segments, one of them 2% of traffic), samples 200 a day with the project's
stratified allocation (floor 20 a segment), simulates the judge's 1-5 scores (healthy
answers mostly 4-5 with a tail of low scores; broken answers mostly 1-2; a small
day-to-day wobble per segment), and replays the days through
``core.drift.incidents.run_history`` with cause attribution from ``core.drift.cause``
(no Dagster, for speed). It prints, per kind and overall:

- covered: share of degraded segment-days (true drop >= 0.2 points, segments only) inside
  an incident, as the incident history records it; "live" counts only days on or after
  the page (what on-call saw at the time);
- delay: days from the start of the degradation (for the gradual decline: from the day
  its cumulative drop passed 0.2 points) to the first page, mean and worst;
- false alarms per 1,000 clean row-days (segments and the overall row, warm-up included);
- notifications per incident (open + resolve) and pages per degradation episode;
- cause: share of roll-out runs whose incidents all name prompt_version=v2 (the
  incidents open on or after the roll-out's first day; one that ended before it is a
  false alarm, counted as such).

    python -m bench.drift_eval [--seeds 20] [--kinds clean,step,...] [--first-seed 0]
                               [--k K] [--h H] [--recovery-alpha A] [--hold-run-s S]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from eval_pipeline.core.drift.calibration import score_probs
from eval_pipeline.core.drift.cause import attribute
from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.records import ALL, SegmentDay, planned_events
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.drift.sampling import allocate

START = dt.date(2026, 3, 1)
N_DAYS = 42
EVENT_DAY = 21  # day index where the injected change starts (three weeks of history first)
FIX_DAY = 33  # the step drop is fixed on this day
TRACES_PER_DAY = 2000
SAMPLE = 200
FLOOR = 20
SEGMENTS = {"orders": 0.30, "billing": 0.24, "returns": 0.20, "account": 0.14, "search": 0.10}
SMALL = "gifts"  # 2% of traffic
SHARES = {**{s: v * 0.98 / sum(SEGMENTS.values()) for s, v in SEGMENTS.items()}, SMALL: 0.02}
BASE_BROKEN = {"orders": 0.02, "billing": 0.05, "returns": 0.03, "account": 0.08,
               "search": 0.01, SMALL: 0.04}  # fmt: skip
GAP = float(score_probs(0) @ np.arange(1, 6) - score_probs(1) @ np.arange(1, 6))
KINDS = ["clean", "step", "gradual", "small_segment", "rollout", "mix_shift", "judge_failures"]
DIMENSIONS = ["prompt_version", "model", "channel"]


def broken_for_drop(points: float) -> float:
    """The extra share of broken answers that lowers a segment's mean by ``points``."""
    return points / GAP


@dataclass
class Truth:
    drop: dict = field(default_factory=dict)  # (day, segment) -> true drop in points
    episode_start: dict = field(default_factory=dict)  # segment -> day a page is due from


def simulate(kind: str, seed: int) -> tuple[list[SegmentDay], pd.DataFrame, Truth]:
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    truth = Truth()
    days_out: list[SegmentDay] = []
    frames = []
    for d in range(N_DAYS):
        day = START + dt.timedelta(days=d)
        shares = dict(SHARES)
        if kind == "mix_shift" and d >= EVENT_DAY:
            # The lowest-quality segment doubles, the best one shrinks: no quality change.
            shares["account"] *= 2.0
            shares["search"] = max(0.01, shares["search"] - shares["account"] / 2)
        total = sum(shares.values())
        n_day = int(TRACES_PER_DAY * rng.uniform(0.95, 1.05))
        draws = rng.multinomial(n_day, [v / total for v in shares.values()])
        population = dict(zip(shares, draws, strict=True))
        alloc = allocate({s: int(n) for s, n in population.items()}, SAMPLE, FLOOR)
        fail_rate = 0.35 if kind == "judge_failures" and d == EVENT_DAY + 4 else 0.005
        for seg, n in alloc.items():
            extra = 0.0
            if kind == "step" and seg == "billing" and EVENT_DAY <= d < FIX_DAY:
                extra = broken_for_drop(0.8)
            elif kind == "gradual" and seg == "returns" and d >= 14:
                extra = broken_for_drop(0.04 * (d - 13))
            elif kind == "small_segment" and seg == SMALL and d >= EVENT_DAY:
                extra = broken_for_drop(0.5)
            wobble = max(0.0, BASE_BROKEN[seg] + rng.normal(0, 0.01))
            v2 = np.zeros(n, dtype=bool)
            if kind == "rollout" and d >= EVENT_DAY:
                v2 = rng.random(n) < 0.3
            broken_p = np.where(v2, wobble + broken_for_drop(1.0), wobble + extra)
            broken = rng.random(n) < broken_p
            healthy_scores = rng.choice(np.arange(1, 6), size=n, p=score_probs(0))
            broken_scores = rng.choice(np.arange(1, 6), size=n, p=score_probs(1))
            scores = np.where(broken, broken_scores, healthy_scores).astype(float)
            failed = rng.random(n) < fail_rate
            ok = scores[~failed]
            true_drop = GAP * (float(np.mean(np.where(v2, broken_for_drop(1.0), 0))) + extra)
            if kind == "rollout" and d >= EVENT_DAY:
                true_drop = GAP * 0.3 * broken_for_drop(1.0)
            truth.drop[(day, seg)] = true_drop
            days_out.append(SegmentDay(day, seg, Counts.of(ok), int(failed.sum())))
            frames.append(
                pd.DataFrame(
                    {
                        "day": day,
                        "segment": seg,
                        "score": ok,
                        "prompt_version": np.where(v2, "v2", "v1")[~failed],
                        "model": rng.choice(["m-large", "m-small"], size=n, p=[0.7, 0.3])[~failed],
                        "channel": rng.choice(["web", "app", "email"], size=n)[~failed],
                    }
                )
            )
    for (day, seg), drop in sorted(truth.drop.items()):
        if drop >= 0.2 - 1e-9 and seg not in truth.episode_start:
            truth.episode_start[seg] = day
    return days_out, pd.concat(frames, ignore_index=True), truth


def make_cause_fn(traces: pd.DataFrame):
    by_seg = {s: g for s, g in traces.groupby("segment")}

    @functools.cache
    def cause_fn(segment, ref_days, cur_days, hypothesis=None):
        frame = traces if segment == ALL else by_seg.get(segment, traces.iloc[:0])
        dims = DIMENSIONS + (["segment"] if segment == ALL else [])
        ref = frame[frame["day"].isin(set(ref_days))]
        cur = frame[frame["day"].isin(set(cur_days))]
        return attribute(ref, cur, dims, where=segment, hypothesis=hypothesis)

    return cause_fn


@dataclass
class Tally:
    degraded: int = 0
    covered: int = 0
    covered_live: int = 0
    clean_rows: int = 0
    false_alarms: int = 0
    incidents: int = 0
    notifications: int = 0
    episodes: int = 0
    episode_pages: int = 0
    delays: list = field(default_factory=list)
    missed: int = 0
    rollouts: int = 0
    rollouts_named: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(other, name)
            if isinstance(value, list):
                getattr(self, name).extend(value)
            else:
                setattr(self, name, getattr(self, name) + value)


def evaluate(kind: str, seed: int, config: IncidentConfig, sim=None) -> Tally:
    """``sim``: a (days, traces, truth) triple made elsewhere (the budget harness)."""
    days, traces, truth = sim or simulate(kind, seed)
    history = run_history(days, config, cause_fn=make_cause_fn(traces))
    last = START + dt.timedelta(days=N_DAYS - 1)
    t = Tally()
    all_days = sorted({d.day for d in days})
    segments = sorted({d.segment for d in days})

    def degraded(day, seg):
        if seg == ALL:
            return any(truth.drop.get((day, s), 0) >= 0.2 - 1e-9 for s in segments)
        return truth.drop.get((day, seg), 0) >= 0.2 - 1e-9

    def any_drop(day, seg):
        if seg == ALL:
            return any(truth.drop.get((day, s), 0) > 0 for s in segments)
        return truth.drop.get((day, seg), 0) > 0

    for day in all_days:
        for seg in segments:
            if not degraded(day, seg):
                continue
            t.degraded += 1
            live = hist = False
            for inc in history.incidents:
                if seg in inc.segments and inc.opened_on <= day <= (inc.resolved_on or last):
                    hist = True
                    live = live or inc.detected_on <= day
            t.covered += hist
            t.covered_live += live
        for seg in [ALL, *segments]:
            t.clean_rows += not any_drop(day, seg)
    events = planned_events(history.incidents)
    t.incidents = len(history.incidents)
    t.notifications = len(events)
    for inc in history.incidents:
        for seg in inc.segments:
            window = [
                inc.opened_on + dt.timedelta(days=i)
                for i in range((inc.detected_on - inc.opened_on).days + 1)
            ]
            if not any(any_drop(d, seg) for d in window):
                t.false_alarms += 1
    for seg, start in truth.episode_start.items():
        t.episodes += 1
        pages = [
            i
            for i in history.incidents
            if seg in i.segments and i.detected_on >= start - dt.timedelta(days=3)
        ]
        t.episode_pages += sum(
            1
            for e in events
            if e["event"] == "opened" and any(e["incident_id"] == i.incident_id for i in pages)
        )
        if pages:
            t.delays.append((min(i.detected_on for i in pages) - start).days)
        else:
            t.missed += 1
    if kind == "rollout":
        t.rollouts += 1
        # The roll-out's incidents: those still open on or after a segment's change. A
        # false alarm that ended before the roll-out began is counted under FA/1000, not
        # here (it has no roll-out to name).
        true_incs = [
            i
            for i in history.incidents
            if any(
                s in truth.episode_start and (i.resolved_on or last) >= truth.episode_start[s]
                for s in i.segments
                if s != ALL
            )
        ]
        t.rollouts_named += bool(true_incs) and all(
            i.cause_key == "prompt_version=v2" for i in true_incs
        )
    return t


def fmt_row(name: str, t: Tally) -> str:
    def pct(a, b):
        return f"{a / b:6.1%}" if b else "     –"

    delay = f"{np.mean(t.delays):4.1f} / {max(t.delays):2d}" if t.delays else "   –     "
    fa = 1000 * t.false_alarms / t.clean_rows if t.clean_rows else float("nan")
    per_inc = f"{t.notifications / t.incidents:4.2f}" if t.incidents else "   –"
    per_ep = f"{t.episode_pages / t.episodes:4.2f}" if t.episodes else "   –"
    cause = pct(t.rollouts_named, t.rollouts)
    return (
        f"{name:<15} {pct(t.covered, t.degraded)} {pct(t.covered_live, t.degraded)} "
        f"{t.degraded:>6} {delay:>9} {t.missed:>6} {fa:8.2f} {t.clean_rows:>7} "
        f"{t.incidents:>5} {per_inc:>7} {per_ep:>8} {cause:>7}"
    )


HEADER = (
    f"{'kind':<15} {'covered':>6} {'live':>6} {'degr.':>6} {'delay m/max':>9} {'missed':>6} "
    f"{'FA/1000':>8} {'clean':>7} {'inc.':>5} {'notif/i':>7} {'pages/ep':>8} {'cause':>7}"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--first-seed",
        "--seed-start",
        type=int,
        default=0,
        help="seeds first..first+seeds-1 (tune settings on other seeds than the reported 0-19)",
    )
    parser.add_argument("--k", type=float, default=None, help="CUSUM allowance")
    parser.add_argument(
        "--h", type=float, default=None, help="CUSUM threshold (default: detectors.CUSUM_H)"
    )
    parser.add_argument(
        "--recovery-alpha",
        type=float,
        default=IncidentConfig.recovery_alpha,
        help="level of the recovery test before an incident resolves (<= 0: K days only)",
    )
    parser.add_argument(
        "--hold-run-s",
        type=float,
        default=IncidentConfig.hold_run_s,
        help="a day tested with the CUSUM above this waits out of the reference until the "
        "run ends (< 0: off, every day without an alarm enters the reference at once)",
    )
    parser.add_argument(
        "--hold-max-n",
        type=int,
        default=IncidentConfig.hold_max_n,
        help="with --hold-run-s: hold only segment-days with fewer judged scores than this",
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)} (known: {', '.join(KINDS)})")
    config = IncidentConfig(recovery_alpha=args.recovery_alpha if args.recovery_alpha > 0 else None)
    if args.h is not None:
        config = dataclasses.replace(config, h=args.h)
    if args.k is not None:
        config = dataclasses.replace(config, k=args.k)
    hold = args.hold_run_s if args.hold_run_s is not None and args.hold_run_s >= 0 else None
    config = dataclasses.replace(config, hold_run_s=hold, hold_max_n=args.hold_max_n)

    began = time.monotonic()
    print(
        f"drift-eval: {args.seeds} seeds x {len(kinds)} kinds, {N_DAYS} days, "
        f"{SAMPLE} judged a day, k={config.k}, h={config.h}, day alpha={config.day_alpha}, "
        f"recovery alpha={config.recovery_alpha}, hold run S>{config.hold_run_s}"
        f"{f' n<{config.hold_max_n}' if config.hold_max_n is not None else ''}, "
        f"seeds from {args.first_seed}"
    )
    print(HEADER)
    overall = Tally()
    for kind in kinds:
        t = Tally()
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t.add(evaluate(kind, seed, config))
        overall.add(t)
        print(fmt_row(kind, t), flush=True)
    print(fmt_row("overall", overall))
    print(f"({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
