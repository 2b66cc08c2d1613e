"""Budgeted sampling against today's fixed 200 a day, on the drift evaluation harness.

The traffic model, kinds, truth and scoring are those of ``bench.drift_eval`` (42 days,
~2,000 traces a day over six segments, one of them 2% of traffic), generated here for the
whole population of each day (every trace has a latent judge score) so that both samplers
draw from the same traffic:

- fixed: 200 a day, stratified with a floor of 20 (``sampling.allocate``), the engine's
  default configuration;
- budgeted: ``budget_sampling.plan_budgeted`` with ``--calls`` judge calls a day (stage 1:
  a floor of ``--floor`` per segment, the calls above the floors to the watched segments —
  in an open incident or with CUSUM >= ``--watch-cusum`` the day before — else Neyman; risk
  slices oversampled ``--risk-oversample`` times: traces of a prompt_version first seen in
  the last 7 days and traces with thumbs-down feedback), then, with a ``--reserve``, the
  same-day follow-up: segments whose stage-1 z reaches z_follow get the reserve
  (``budget.suspects``: those already significant too, so the engine's one day test on the
  full day keeps its own alpha). Scores enter the incident engine as drawn
  (``budget_sampling.engine_counts``; ``--engine-counts weighted``: the weighted whole
  counts of ``weights.effective_counts``), the engine's ``min_n`` is ``--min-n``.
  ``--watch-split cusum`` splits the watched segments' calls in proportion to their CUSUM
  (``sampling.watch_weights``) instead of evenly; ``--watch-floor F`` gives a watched
  segment a floor of F, paid by the others' floors down to ``--min-n``; ``--hold-run-s S``
  keeps a building CUSUM run's days (CUSUM above S) out of the budgeted arm's reference
  (``IncidentConfig.hold_run_s``). All three are off by default. On tuning seeds 200-209
  (small_segment, gradual, clean; budgeted arm) against the defaults' small segment 94.8%,
  gradual 84.6%, clean FA 1.70 per 1,000: hold S=2 93.3%, 84.6%, 2.04; hold S=3 89.5%,
  84.6%, 1.70; CUSUM split 86.7%, 83.8%, 2.04; watch floor 20 94.8%, 87.1%, 1.70 (gradual
  FA 0.84 against 0.00); watch floor 26 93.3%, 84.6%, 1.70. The watch floor of 20 on seeds
  0-19: small segment 68.3%, gradual 87.7% (defaults 71.2%, 86.7%); on 100-119: 73.6%,
  89.0% (defaults 69.8%, 84.6%); step 93.8%, roll-out 95.5%, clean FA 0.00 on 0-19
  (defaults 96.7%, 95.9%, 0.51). Mixed, and short of the fixed 200 on every kind, so no
  default changed.

The incident engine, the cause attribution and the tally are the real ones
(``bench.drift_eval.evaluate``). Then two checks of the estimates:

- unbiasedness: the post-stratified overall mean of a budgeted day with oversampling on,
  minus the population's true mean, over many seeds (mean error and its standard error);
- what a day's sample can see (``bench.power_eval``): drops of the stated MDE, each shape
  at its own figure, detected in about 80% of runs by the engine's day test; and the
  same-day follow-up's false-alarm rate on clean traffic.

``--calls 66,100,133,200`` runs one budgeted arm per budget in one table (rows ``b66`` …);
``--allocation equal_power`` splits the calls above the floors by spread² instead of
Neyman's traffic x spread (``sampling.equal_power_allocate``; docs/sampling.md has what it
gave).

    python -m bench.budget_eval [--seeds 20] [--kinds clean,step,...] [--calls 66[,100,...]]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench import drift_eval as de
from bench import power_eval
from eval_pipeline.core.drift import budget, detectors
from eval_pipeline.core.drift.budget_sampling import (
    BudgetedSamplingConfig,
    engine_counts,
    follow_up,
    plan_budgeted,
)
from eval_pipeline.core.drift.calibration import score_probs
from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.records import SegmentDay
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.drift.sampling import allocate, watch_set, watch_weights
from eval_pipeline.core.drift.weights import effective_counts, estimates, trace_weights

NEW_DAYS = 7  # a prompt_version first seen within this many days is a risk
THUMBS_DOWN = {True: 0.10, False: 0.01}  # P(thumbs-down | broken answer), healthy answer
RULE = budget.FollowUpRule(z_follow=1.0)


@dataclass
class Day:
    pop: pd.DataFrame  # one row per trace
    truth: dict  # segment -> true drop


def population_day(rng: np.random.Generator, kind: str, d: int) -> Day:
    """The day's whole traffic, by the rules of ``drift_eval.simulate``."""
    shares = dict(de.SHARES)
    if kind == "mix_shift" and d >= de.EVENT_DAY:
        shares["account"] *= 2.0
        shares["search"] = max(0.01, shares["search"] - shares["account"] / 2)
    total = sum(shares.values())
    n_day = int(de.TRACES_PER_DAY * rng.uniform(0.95, 1.05))
    draws = rng.multinomial(n_day, [v / total for v in shares.values()])
    fail_rate = 0.35 if kind == "judge_failures" and d == de.EVENT_DAY + 4 else 0.005
    frames, truth = [], {}
    for seg, n in zip(shares, draws, strict=True):
        extra = 0.0
        if kind == "step" and seg == "billing" and de.EVENT_DAY <= d < de.FIX_DAY:
            extra = de.broken_for_drop(0.8)
        elif kind == "gradual" and seg == "returns" and d >= 14:
            extra = de.broken_for_drop(0.04 * (d - 13))
        elif kind == "small_segment" and seg == de.SMALL and d >= de.EVENT_DAY:
            extra = de.broken_for_drop(0.5)
        wobble = max(0.0, de.BASE_BROKEN[seg] + rng.normal(0, 0.01))
        v2 = np.zeros(n, dtype=bool)
        if kind == "rollout" and d >= de.EVENT_DAY:
            v2 = rng.random(n) < 0.3
        broken = rng.random(n) < np.where(v2, wobble + de.broken_for_drop(1.0), wobble + extra)
        score = np.where(
            broken,
            rng.choice(np.arange(1, 6), size=n, p=score_probs(1)),
            rng.choice(np.arange(1, 6), size=n, p=score_probs(0)),
        )
        truth[seg] = de.GAP * (0.3 * de.broken_for_drop(1.0) if kind == "rollout"
                               and d >= de.EVENT_DAY else extra)  # fmt: skip
        frames.append(
            pd.DataFrame(
                {
                    "trace_id": [f"{d}-{seg}-{i}" for i in range(n)],
                    "segment": seg,
                    "score": score.astype(float),
                    "failed": rng.random(n) < fail_rate,
                    "prompt_version": np.where(v2, "v2", "v1"),
                    "model": rng.choice(["m-large", "m-small"], size=n, p=[0.7, 0.3]),
                    "channel": rng.choice(["web", "app", "email"], size=n),
                    "thumbs_down": rng.random(n)
                    < np.where(broken, THUMBS_DOWN[True], THUMBS_DOWN[False]),
                }
            )  # fmt: skip
        )
    return Day(pd.concat(frames, ignore_index=True), truth)


def judged(day_idx: int, rows: pd.DataFrame) -> pd.DataFrame:
    """What the judge returns for the drawn rows (failures have no score)."""
    out = rows.copy()
    out["state"] = np.where(out["failed"], "error", "ok")
    out["day"] = de.START + dt.timedelta(days=day_idx)
    return out


def segment_days(
    day: dt.date, rows: pd.DataFrame, weighted: bool, engine: str = "drawn"
) -> list[SegmentDay]:
    """``engine``: a budgeted day's counts as drawn (the product's) or ``weighted``."""
    if engine not in ("drawn", "weighted"):
        raise ValueError(f"engine counts {engine!r}: 'drawn' or 'weighted'")
    out = []
    for seg, g in rows.groupby("segment", sort=True):
        ok = g[g["state"] == "ok"]
        if weighted and len(ok) and engine == "drawn":
            counts = engine_counts(ok)
        elif weighted and len(ok):
            counts = effective_counts(ok["score"], trace_weights(ok), ok["stratum"])
        else:
            counts = Counts.of(ok["score"])
        failed = int((g["state"] != "ok").sum())
        out.append(SegmentDay(day, seg, counts, failed, n_judged=len(ok) if weighted else None))
    return out


def risk_flags(pop: pd.DataFrame, first_seen: dict, day_idx: int) -> np.ndarray:
    new_version = pop["prompt_version"].map(
        lambda v: first_seen.get(v, day_idx) > 0 and first_seen.get(v, day_idx) > day_idx - NEW_DAYS
    )
    return (new_version.to_numpy(dtype=bool)) | pop["thumbs_down"].to_numpy(dtype=bool)


def run_budgeted(
    kind: str,
    seed: int,
    cfg: BudgetedSamplingConfig,
    inc_cfg: IncidentConfig,
    watch_split: str = "even",
    watch_floor: int | None = None,
    engine: str = "drawn",
):
    rng = np.random.default_rng([seed, de.KINDS.index(kind)])
    truth = de.Truth()
    days_out: list[SegmentDay] = []
    frames = []
    first_seen: dict[str, int] = {}
    counts_by_day: dict[tuple[dt.date, str], Counts] = {}
    calls = 0
    history = None
    for d in range(de.N_DAYS):
        day = de.START + dt.timedelta(days=d)
        today = population_day(rng, kind, d)
        for v in sorted(set(today.pop["prompt_version"])):
            first_seen.setdefault(v, d)
        pop = today.pop.assign(risk=risk_flags(today.pop, first_seen, d))
        spreads = {}
        if history is not None:
            for seg in today.truth:
                days_ok = [
                    counts_by_day[(v.day, seg)]
                    for v in history.verdicts
                    if v.segment == seg and v.state == "healthy"
                ][-21:]
                pooled = sum(days_ok, Counts())
                if pooled.n >= 30:
                    spreads[seg] = math.sqrt(pooled.variance)
        watch = frozenset()
        if history is not None and cfg.watch_cusum is not None:
            prev = de.START + dt.timedelta(days=d - 1)
            watch = (watch_weights if watch_split == "cusum" else watch_set)(
                [(v.segment, v.state, v.cusum, v.incident_id) for v in history.verdicts
                 if v.day == prev and v.segment in today.truth],
                cfg.watch_cusum,
            )  # fmt: skip
        plan = plan_budgeted(
            pop[["trace_id", "segment", "risk"]],
            cfg,
            spreads,
            watch=watch,
            watch_floor=watch_floor,
            keep=inc_cfg.min_n,
        )
        indexed = pop.set_index("trace_id")

        def drawn(plan=plan, indexed=indexed, d=d):
            rows = plan.rows()
            return judged(d, indexed.loc[rows["trace_id"]].reset_index().assign(
                stratum=rows["stratum"].to_numpy(),
                stratum_size=rows["stratum_size"].to_numpy()))  # fmt: skip

        stage1 = drawn()
        h1 = run_history(days_out + segment_days(day, stage1, True, engine), inc_cfg)
        zs = {
            v.segment: detectors.Shortfall(v.drop, 0.0, v.z, v.p)
            for v in h1.verdicts
            if v.day == day and v.z is not None and v.segment in today.truth
        }
        extra = follow_up(
            plan,
            budget.suspects(zs, RULE),
            cfg.reserve,
            cfg.risk_oversample,
        )
        final = drawn() if extra else stage1
        calls += len(final)
        sds = segment_days(day, final, True, engine)
        for sd_ in sds:
            counts_by_day[(day, sd_.segment)] = sd_.counts
        days_out.extend(sds)
        # Earlier days' states do not depend on later days: the stage-1 replay serves as
        # tomorrow's history (today's own state there is from stage 1; it only feeds the
        # spreads of the allocation).
        history = h1
        for seg, drop in today.truth.items():
            truth.drop[(day, seg)] = drop
        ok = final[final["state"] == "ok"]
        frames.append(ok[["day", "segment", "score", "prompt_version", "model", "channel"]])
    for (day, seg), drop in sorted(truth.drop.items()):
        if drop >= 0.2 - 1e-9 and seg not in truth.episode_start:
            truth.episode_start[seg] = day
    return (days_out, pd.concat(frames, ignore_index=True), truth), calls


def run_fixed(kind: str, seed: int):
    rng = np.random.default_rng([seed, de.KINDS.index(kind)])
    truth = de.Truth()
    days_out, frames, calls = [], [], 0
    for d in range(de.N_DAYS):
        day = de.START + dt.timedelta(days=d)
        today = population_day(rng, kind, d)
        pop = today.pop
        counts = pop["segment"].value_counts().to_dict()
        alloc = allocate({s: int(n) for s, n in counts.items()}, de.SAMPLE, de.FLOOR)
        # Rows are independent draws, so the first n of a segment are a simple random sample.
        rows = pd.concat([pop[pop["segment"] == s].head(n) for s, n in sorted(alloc.items())])
        rows = judged(d, rows)
        calls += len(rows)
        days_out.extend(segment_days(day, rows, False))
        for seg, drop in today.truth.items():
            truth.drop[(day, seg)] = drop
        ok = rows[rows["state"] == "ok"]
        frames.append(ok[["day", "segment", "score", "prompt_version", "model", "channel"]])
    for (day, seg), drop in sorted(truth.drop.items()):
        if drop >= 0.2 - 1e-9 and seg not in truth.episode_start:
            truth.episode_start[seg] = day
    return (days_out, pd.concat(frames, ignore_index=True), truth), calls


def unbiasedness(seeds: int, cfg: BudgetedSamplingConfig) -> str:
    """Weighted vs unweighted overall mean of a roll-out day, oversampling on."""
    errs_w, errs_u, risk_share = [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 99])
        today = population_day(rng, "rollout", de.EVENT_DAY + 2)
        first_seen = {"v1": 0, "v2": de.EVENT_DAY}
        pop = today.pop.assign(risk=risk_flags(today.pop, first_seen, de.EVENT_DAY + 2))
        plan = plan_budgeted(pop[["trace_id", "segment", "risk"]], cfg)
        rows = plan.rows()
        got = pop.set_index("trace_id").loc[rows["trace_id"]].reset_index()
        got = got.assign(
            stratum=rows["stratum"].to_numpy(),
            stratum_size=rows["stratum_size"].to_numpy(),
            state=np.where(got["failed"], "error", "ok"),
        )
        est = estimates(got, "__all__")["__all__"]
        true_mean = float(pop["score"].mean())
        errs_w.append(est.mean - true_mean)
        ok = got[got["state"] == "ok"]
        errs_u.append(float(ok["score"].mean()) - true_mean)
        risk_share.append(float(ok["stratum"].str.endswith("| risk").mean()))
    ew, eu = np.array(errs_w), np.array(errs_u)
    se_w, se_u = ew.std(ddof=1) / math.sqrt(seeds), eu.std(ddof=1) / math.sqrt(seeds)
    return (
        f"unbiasedness ({seeds} seeds, roll-out day, risk slices oversampled "
        f"{cfg.risk_oversample:g}x, {np.mean(risk_share):.0%} of judged traces from them):\n"
        f"  weighted   overall mean error {ew.mean():+.4f} (se {se_w:.4f}, "
        f"{ew.mean() / se_w:+.2f} se)\n"
        f"  unweighted overall mean error {eu.mean():+.4f} (se {se_u:.4f}, "
        f"{eu.mean() / se_u:+.2f} se)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--kinds", default=",".join(de.KINDS))
    parser.add_argument(
        "--calls",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[66],
        help="judge calls a day; a list (66,100,133,200) runs one budgeted arm per value",
    )
    parser.add_argument("--reserve", type=float, default=0.0, help="share held for stage 2")
    parser.add_argument("--floor", type=int, default=10)
    parser.add_argument("--min-n", type=int, default=8, help="engine min_n for the budgeted arm")
    parser.add_argument(
        "--watch-cusum",
        type=lambda v: None if v == "off" else float(v),
        default=0.5,
        help="segments in an incident or with CUSUM >= this get the calls above the floors "
        "('off': Neyman for all)",
    )
    parser.add_argument("--risk-oversample", type=float, default=6.0)
    parser.add_argument(
        "--hold-run-s",
        type=lambda v: None if v == "off" else float(v),
        default=None,
        help="budgeted arm: a day with CUSUM above this stays out of the reference ('off')",
    )
    parser.add_argument(
        "--watch-split",
        default="even",
        choices=["even", "cusum"],
        help="the watched segments' calls: evenly, or in proportion to their CUSUM",
    )
    parser.add_argument(
        "--watch-floor",
        type=int,
        default=None,
        help="a watched segment's floor, paid by the others' floors down to --min-n",
    )
    parser.add_argument(
        "--allocation",
        default="neyman",
        choices=["neyman", "equal_power"],
        help="the calls above the floors when no segment is watched (sampling.ALLOCATIONS)",
    )
    parser.add_argument("--engine-counts", default="drawn", choices=["drawn", "weighted"])
    parser.add_argument("--arms", default="fixed,budget", help="which samplers to run")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (tune off 0..)")
    parser.add_argument("--bias-seeds", type=int, default=1000)
    parser.add_argument("--mde-references", type=int, default=100)
    parser.add_argument("--mde-days", type=int, default=40, help="days per reference")
    parser.add_argument("--two-stage-seeds", type=int, default=200)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    arms = [a for a in ("fixed", "budget") if a in args.arms.split(",")]
    unknown = set(kinds) - set(de.KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)} (known: {', '.join(de.KINDS)})")
    if not args.calls or min(args.calls) < 0:
        parser.error("--calls: one or more non-negative whole numbers, comma-separated")
    cfgs = {
        ("budget" if len(args.calls) == 1 else f"b{c}"): BudgetedSamplingConfig(
            calls=c,
            reserve_fraction=args.reserve,
            floor_per_segment=args.floor,
            watch_cusum=args.watch_cusum,
            risk_oversample=args.risk_oversample,
            allocation=args.allocation,
        )
        for c in args.calls
    }
    cfg = BudgetedSamplingConfig(
        calls=args.calls[0],
        reserve_fraction=args.reserve,
        floor_per_segment=args.floor,
        watch_cusum=args.watch_cusum,
        risk_oversample=args.risk_oversample,
        allocation=args.allocation,
    )
    fixed_cfg = IncidentConfig()
    budget_cfg = IncidentConfig(min_n=args.min_n, hold_run_s=args.hold_run_s)
    began = time.monotonic()
    print(
        f"budget-eval: {args.seeds} seeds x {len(kinds)} kinds, {de.N_DAYS} days; fixed "
        f"{de.SAMPLE}/day (floor {de.FLOOR}) vs budgeted {','.join(map(str, args.calls))}/day "
        f"(stage 1 of the first "
        f"{cfg.stage1_calls}, reserve {cfg.reserve}, floor {cfg.floor_per_segment}, risk "
        f"x{cfg.risk_oversample:g}, watch CUSUM {cfg.watch_cusum}); seeds from {args.seed_start}; day alpha {fixed_cfg.day_alpha} "
        f"(follow-up at z >= {RULE.z_follow}, decided on the full day); engine min_n {fixed_cfg.min_n} vs {args.min_n}, "
        f"hold run S {budget_cfg.hold_run_s}, watch split {args.watch_split}, "
        f"watch floor {args.watch_floor}, allocation {cfg.allocation}"
    )
    print(f"{'sampler':<9}{de.HEADER} {'calls/day':>9}")
    labels = (["fixed"] if "fixed" in arms else []) + (list(cfgs) if "budget" in arms else [])
    totals = {a: [de.Tally(), 0, 0] for a in labels}
    for kind in kinds:
        per = {a: [de.Tally(), 0, 0] for a in labels}
        for seed in range(args.seed_start, args.seed_start + args.seeds):
            if "fixed" in arms:
                sim, calls = run_fixed(kind, seed)
                per["fixed"][0].add(de.evaluate(kind, seed, fixed_cfg, sim))
                per["fixed"][1] += calls
                per["fixed"][2] += de.N_DAYS
            for label, arm_cfg in cfgs.items() if "budget" in arms else ():
                sim, calls = run_budgeted(
                    kind,
                    seed,
                    arm_cfg,
                    budget_cfg,
                    args.watch_split,
                    args.watch_floor,
                    args.engine_counts,
                )
                per[label][0].add(de.evaluate(kind, seed, budget_cfg, sim))
                per[label][1] += calls
                per[label][2] += de.N_DAYS
        for arm in labels:
            t, calls, ndays = per[arm]
            totals[arm][0].add(t)
            totals[arm][1] += calls
            totals[arm][2] += ndays
            print(f"{arm:<9}{de.fmt_row(kind, t)} {calls / ndays:9.1f}", flush=True)
    if kinds:
        for arm in labels:
            t, calls, ndays = totals[arm]
            print(f"{arm:<9}{de.fmt_row('overall', t)} {calls / ndays:9.1f}")
        if len(arms) == 2:
            for label in cfgs:
                ratio = totals[label][1] / totals["fixed"][1]
                name = "budgeted" if label == "budget" else label
                print(f"judge calls, {name} / fixed: {ratio:.3f}")
    print(unbiasedness(args.bias_seeds, cfg))
    if args.mde_references > 0:
        print(power_eval.mde_check(args.mde_references, args.mde_days, fixed_cfg.day_alpha))
    if args.two_stage_seeds > 0:
        print(power_eval.two_stage_check(args.two_stage_seeds, 5000, fixed_cfg.day_alpha))
    print(f"({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
