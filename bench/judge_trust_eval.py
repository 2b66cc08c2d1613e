"""`make judge-eval`: does the judge-trust machinery tell the truth? A simulation.

The world: traces of true quality q in 1..5 (a skewed mix). A person labels q with noise; a
judge scores q with a bias, a per-trace idiosyncrasy (fixed for a given judge model: it gives
the same trace the same error every time) and, for a judge sampled at temperature > 0,
call-to-call noise. All scores are rounded and clipped to 1..5.

1. Coverage: the product's 95% BCa interval for weighted kappa (eval_pipeline.core.judge.
   agreement, unchanged), on iid labelled items, against the true kappa of the judge and
   the person (Monte Carlo on 400,000 items).
2. Trust status: the share of runs in which the product calls the judge *validated* at a
   given number of labels (rule: >= 50 labels and kappa's lower bound >= 0.6).
3. Anchors: 50 anchors (150 in one row) scored 1 + anchors.BASELINE_REPEATS times by the
   baseline judge (the first scoring and its repeats, as the product does), then on a later day by the same judge (clean day) or by a different judge
   behind the same name (swap: a new model's own idiosyncrasies, sd from [0.3, 1.2], and a
   bias from [-1, 1]); the product's rule (eval_pipeline.core.judge.anchors.paired_test:
   within-anchor permutation tests of shift and spread, alpha 0.01 Bonferroni-split, effect
   floor 0.2) decides judge drift on that first day. Last rows of each block: the same model
   with only a bias added (same per-trace idiosyncrasies), |bias| from [0, 0.5]; and a
   related model whose idiosyncrasies correlate 0.5 with the old one's (harder than a swap).
   Then the clean-day false rate alone over 10,000 more days (JUDGE_EVAL_CLEAN_DAYS).

Seeds are fixed: the figures are the same on every run. JUDGE_EVAL_SEEDS (default 120) sets
the runs per cell of sections 1-2.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from eval_pipeline.core.judge import agreement as ag
from eval_pipeline.core.judge import anchor_stats, anchors

QUALITY_MIX = np.array([0.10, 0.15, 0.25, 0.30, 0.20])  # true quality 1..5
PERSON_SD = 0.6


@dataclass(frozen=True)
class JudgeModel:
    name: str
    bias: float
    item_sd: float  # per-trace idiosyncrasy, fixed for this judge model
    call_sd: float = 0.0  # call-to-call noise (temperature > 0)


CONFIGS = [
    JudgeModel("good (bias 0, sd 0.5)", 0.0, 0.5),
    JudgeModel("biased (bias +0.6, sd 0.6)", 0.6, 0.6),
    JudgeModel("borderline (bias 0, sd 1.0)", 0.0, 1.0),
    JudgeModel("poor (bias -0.3, sd 1.5)", -0.3, 1.5),
]


def _round(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 1, 5).astype(int)


def world(rng: np.random.Generator, n: int):
    q = rng.choice(np.arange(1, 6), size=n, p=QUALITY_MIX)
    person = _round(q + rng.normal(0, PERSON_SD, n))
    return q, person


def judge_scores(rng, m: JudgeModel, q: np.ndarray, item_err: np.ndarray | None = None):
    if item_err is None:
        item_err = rng.normal(0, m.item_sd, len(q))
    call = rng.normal(0, m.call_sd, len(q)) if m.call_sd else 0.0
    return _round(q + m.bias + item_err + call), item_err


def true_kappa(m: JudgeModel) -> float:
    rng = np.random.default_rng(12345)
    q, person = world(rng, 400_000)
    j, _ = judge_scores(rng, m, q)
    return ag.weighted_kappa(j, person)


def coverage_and_status(seeds: int) -> None:
    counts = (30, 49, 50, 100, 200)
    print(f"1-2. kappa interval coverage and trust status ({seeds} runs per cell; iid labels)")
    print(
        f"{'judge':<30}{'true κ':>8}{'labels':>8}{'mean κ':>8}{'mean CI width':>15}"
        f"{'coverage':>10}{'validated':>11}"
    )
    covered_all: dict[int, list[bool]] = {c: [] for c in counts}
    for ci, m in enumerate(CONFIGS):
        truth = true_kappa(m)
        for n in counts:
            covered, widths, kappas, validated = [], [], [], []
            for s in range(seeds):
                rng = np.random.default_rng([ci, n, s])
                q, person = world(rng, n)
                j, _ = judge_scores(rng, m, q)
                res = ag.agreement(j, person, seed=s)
                status = ag.trust_from("sim", res)
                validated.append(status.validated)
                kappas.append(res.kappa)
                if not np.isnan(res.kappa_low):
                    covered.append(res.kappa_low <= truth <= res.kappa_high)
                    widths.append(res.kappa_high - res.kappa_low)
                else:
                    covered.append(False)  # no interval counts as a miss
            covered_all[n].extend(covered)
            print(
                f"{m.name:<30}{truth:>8.3f}{n:>8}{np.nanmean(kappas):>8.3f}"
                f"{np.mean(widths):>15.3f}{np.mean(covered):>10.1%}{np.mean(validated):>11.1%}"
            )
    print("coverage pooled over judges (nominal 95%):")
    for n in counts:
        print(f"  {n:>4} labels: {np.mean(covered_all[n]):.1%} of {len(covered_all[n])} runs")


def anchor_detection(days: int) -> None:
    print(f"\n3. anchor set ({days} simulated days per row): judge drift found on day 1")
    k = anchors.BASELINE_REPEATS
    print(
        f"   (first scoring made 1 + {k} times, once per judge identity: {1 + k} x anchors calls;"
        " then 1 x anchors calls a day)"
    )
    print(f"{'baseline judge (item sd 0.7)':<38}{'day':<34}{'runs':>6}{'judge drift':>13}")
    bases = [
        (JudgeModel("temp 0, 50 anchors", 0.0, 0.7, 0.0), 50),
        (JudgeModel("temp > 0 (call sd 0.5), 50 anchors", 0.0, 0.7, 0.5), 50),
        (JudgeModel("temp > 0 (call sd 0.5), 150 anchors", 0.0, 0.7, 0.5), 150),
    ]
    by_bucket: dict[str, list[bool]] = {}
    for bi, (base, n_anchors) in enumerate(bases):
        clean, swaps = [], []
        for s in range(days):
            rng = np.random.default_rng([100 + bi, s])
            q = rng.choice(np.arange(1, 6), size=n_anchors, p=QUALITY_MIX)
            first, item_err = judge_scores(rng, base, q)
            # The first scoring's repeats (the judge's own noise per anchor).
            repeat = [
                judge_scores(rng, base, q, item_err)[0] for _ in range(anchors.BASELINE_REPEATS)
            ]
            again, _ = judge_scores(rng, base, q, item_err)  # the same judge, a later day
            clean.append(anchor_stats.paired_test(first, again, repeat).judge_drift)
            new = JudgeModel("swap", rng.uniform(-1, 1), rng.uniform(0.3, 1.2), base.call_sd)
            swapped, _ = judge_scores(rng, new, q)
            caught = anchor_stats.paired_test(first, swapped, repeat).judge_drift
            swaps.append(caught)
            size = abs(new.bias)
            bucket = "< 0.25" if size < 0.25 else "0.25-0.5" if size < 0.5 else ">= 0.5"
            by_bucket.setdefault(f"{base.name}|{bucket}", []).append(caught)
            # The same model shifted (a new quantisation, a prompt wrapper): its per-trace
            # idiosyncrasies stay, only a bias from [-0.5, 0.5] is added. Own random stream,
            # so the rows above do not depend on this one.
            rng2 = np.random.default_rng([200 + bi, s])
            shifted_model = JudgeModel("shift", rng2.uniform(-0.5, 0.5), base.item_sd, base.call_sd)
            shifted, _ = judge_scores(rng2, shifted_model, q, item_err)
            hit = anchor_stats.paired_test(first, shifted, repeat).judge_drift
            bucket = "< 0.25" if abs(shifted_model.bias) < 0.25 else ">= 0.25"
            by_bucket.setdefault(f"{base.name}|shift {bucket}", []).append(hit)
            # Harder than the swap above, reported beside it (not instead): a related model
            # (a new version of the same family) whose idiosyncrasies correlate 0.5 with the
            # old one's, same sd and bias drawn as for the swap. Own random stream.
            rng3 = np.random.default_rng([400 + bi, s])
            sd, rho = rng3.uniform(0.3, 1.2), 0.5
            own = rho * item_err * sd / base.item_sd + np.sqrt(1 - rho**2) * rng3.normal(
                0, sd, n_anchors
            )
            related = JudgeModel("related", rng3.uniform(-1, 1), sd, base.call_sd)
            moved, _ = judge_scores(rng3, related, q, own)
            by_bucket.setdefault(f"{base.name}|related", []).append(
                anchor_stats.paired_test(first, moved, repeat).judge_drift
            )
        print(f"{base.name:<38}{'clean (same judge)':<34}{days:>6}{np.mean(clean):>13.2%}")
        print(f"{'':<38}{'swap, bias change in [-1, 1]':<34}{days:>6}{np.mean(swaps):>13.2%}")
        for bucket in ("< 0.25", "0.25-0.5", ">= 0.5"):
            hits = by_bucket.get(f"{base.name}|{bucket}", [])
            label = f"  swaps with |bias change| {bucket}"
            print(f"{'':<38}{label:<34}{len(hits):>6}{np.mean(hits):>13.2%}")
        for bucket in ("< 0.25", ">= 0.25"):
            hits = by_bucket.get(f"{base.name}|shift {bucket}", [])
            label = f"same model, |bias shift| {bucket}"
            print(f"{'':<38}{label:<34}{len(hits):>6}{np.mean(hits):>13.2%}")
        hits = by_bucket[f"{base.name}|related"]
        label = "related model (idiosyncrasy r 0.5)"
        print(f"{'':<38}{label:<34}{len(hits):>6}{np.mean(hits):>13.2%}")


def clean_days_many(days: int) -> None:
    """The false judge-drift rate on clean days alone, over many more seeds (own streams)."""
    base = JudgeModel("temp > 0 (call sd 0.5)", 0.0, 0.7, 0.5)
    for n_anchors in (50, 150):
        found = []
        for s in range(days):
            rng = np.random.default_rng([300, n_anchors, s])
            q = rng.choice(np.arange(1, 6), size=n_anchors, p=QUALITY_MIX)
            first, item_err = judge_scores(rng, base, q)
            repeat = [
                judge_scores(rng, base, q, item_err)[0] for _ in range(anchors.BASELINE_REPEATS)
            ]
            again, _ = judge_scores(rng, base, q, item_err)
            found.append(anchor_stats.paired_test(first, again, repeat).judge_drift)
        rate = np.mean(found)
        se = np.sqrt(rate * (1 - rate) / days)
        print(
            f"clean days only, {base.name}, {n_anchors} anchors: {rate:.2%} false judge drift"
            f" in {days} days (binomial se {se:.2%}; the rule's alpha is 1%)"
        )


def main() -> int:
    started = time.monotonic()
    seeds = int(os.environ.get("JUDGE_EVAL_SEEDS", "120"))
    days = int(os.environ.get("JUDGE_EVAL_DAYS", "1000"))
    coverage_and_status(seeds)
    anchor_detection(days)
    clean_days_many(int(os.environ.get("JUDGE_EVAL_CLEAN_DAYS", "10000")))
    print(f"\n(judge_trust_eval took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
