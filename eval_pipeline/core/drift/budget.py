"""The judge budget: how many calls (or how much money) a judge may spend a day, where it
went, and what the day's sample can see.

- ``Budget``: per judge identity (name/model/rubric), a daily cap in calls, in money (with
  the judge's prices: the expected cost of one call is the judge's price applied to the
  mean tokens of its recent calls), or both; the tighter one binds.
- The ledger (``judge_spend``) has one line per day, judge and purpose: ``drift`` (the
  day's sample), ``drift-follow-up`` (the same-day second stage), ``anchors``, ``repeats``,
  ``ab`` and ``gate``. Every line draws on the same daily budget; ``accounting`` shows each
  line and the total against the budget.
- The stop: ``trim_to_budget`` keeps the sampled traces the remaining calls can pay for
  (cache hits and same-day duplicates are free) and returns the others, which are recorded
  in ``judge_budget_skips`` and counted in ``judge_accounting.not_judged_budget``, never as
  judge failures. It drops traces from the end of each stratum's content order, evenly
  across strata, so what is judged stays a simple random sample of each stratum and the
  weights (``weights``) stay right.
- The follow-up rule and what the sample can see (``power``): which segments are
  suspicious after stage 1, the day-test alpha that accounts for the second look, and per
  segment the minimum detectable drop at 80% power and the sample a target drop needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd

from eval_pipeline.core.drift import detectors, power
from eval_pipeline.core.drift.budget_sampling import engine_counts
from eval_pipeline.core.drift.calibration import BROKEN_SCORES
from eval_pipeline.core.drift.detectors import Shortfall
from eval_pipeline.core.drift.records import SegmentDay
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.drift.report import ALL_SEGMENTS
from eval_pipeline.core.drift.weights import Estimate, estimates
from eval_pipeline.core.judge.cache import DayPlan

# The ledger lives in core/judge (below the gate and the A/B run); re-exported here.
from eval_pipeline.core.judge.spend import PURPOSES as PURPOSES
from eval_pipeline.core.judge.spend import record_spend as record_spend
from eval_pipeline.core.store import replace_rows

BUDGET_REASON = "budget: the judge's daily budget was spent"
REFERENCE_DAYS = 21  # the incident reference's trailing healthy days (ReferenceConfig.days)
CUSUM_DAYS = 5  # the report states the persistent drop the CUSUM pages on within this


@dataclass(frozen=True)
class Budget:
    judge: str  # judge identity: name/model/rubric (see history.judge_key)
    calls_per_day: int | None = None
    money_per_day: float | None = None

    def __post_init__(self) -> None:
        if self.calls_per_day is None and self.money_per_day is None:
            raise ValueError("a budget needs calls_per_day, money_per_day or both")
        if self.calls_per_day is not None and self.calls_per_day < 0:
            raise ValueError("calls_per_day cannot be negative")
        if self.money_per_day is not None and self.money_per_day < 0:
            raise ValueError("money_per_day cannot be negative")

    def calls_left(self, spent_calls: int, spent_cost: float, cost_per_call: float | None) -> int:
        """Calls still allowed today. A money budget needs the judge's prices: without a
        known cost per call it cannot be honoured, so it allows nothing (said, not guessed)."""
        left = math.inf
        if self.calls_per_day is not None:
            left = self.calls_per_day - spent_calls
        if self.money_per_day is not None:
            if not cost_per_call:
                raise ValueError(
                    f"judge {self.judge}: a money budget needs the judge's token prices"
                )
            left = min(left, math.floor((self.money_per_day - spent_cost) / cost_per_call + 1e-9))
        return max(0, int(left))


def expected_cost_per_call(
    conn: duckdb.DuckDBPyConnection, judge, recent: int = 500
) -> float | None:
    """The judge's price applied to the mean tokens of its last ``recent`` calls."""
    cost = getattr(judge, "cost_estimate", None)
    if not callable(cost):
        return None
    row = conn.execute(
        "SELECT avg(prompt_tokens), avg(completion_tokens) FROM (SELECT prompt_tokens, "
        "completion_tokens FROM judgments WHERE judge_name = ? AND judge_model IS NOT "
        "DISTINCT FROM ? AND rubric_version = ? AND prompt_tokens IS NOT NULL "
        "ORDER BY judged_at DESC LIMIT ?)",
        [judge.name, judge.model, judge.rubric_version, recent],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return cost(float(row[0]), float(row[1] or 0.0))


# --- the ledger ---------------------------------------------------------------------------


def spent(
    conn: duckdb.DuckDBPyConnection, day: dt.date, judge: str, excluding: Iterable[str] = ()
) -> tuple[int, float]:
    """(calls, cost) spent today by the judge, leaving out the ``excluding`` lines (the
    line about to be re-run replaces its old figure)."""
    skip = list(excluding)
    where = " AND purpose NOT IN (SELECT unnest(?))" if skip else ""
    row = conn.execute(
        "SELECT coalesce(sum(calls), 0), coalesce(sum(cost), 0) FROM judge_spend "
        f"WHERE partition_date = ? AND judge = ?{where}",
        [day, judge, *([skip] if skip else [])],
    ).fetchone()
    return int(row[0]), float(row[1])


def accounting(conn: duckdb.DuckDBPyConnection, day: dt.date, budget: Budget) -> dict:
    """The day's spend against the budget, line by line."""
    lines = conn.execute(
        "SELECT purpose, calls, cost FROM judge_spend WHERE partition_date = ? AND judge = ? "
        "ORDER BY purpose",
        [day, budget.judge],
    ).fetchall()
    skipped = conn.execute(
        "SELECT count(*) FROM judge_budget_skips WHERE partition_date = ? AND judge = ?",
        [day, budget.judge],
    ).fetchone()[0]
    calls = sum(c for _, c, _ in lines)
    costs = [x for _, _, x in lines if x is not None]
    return {
        "day": day.isoformat(),
        "judge": budget.judge,
        "lines": {p: {"calls": c, "cost": x} for p, c, x in lines},
        "calls": calls,
        "cost": sum(costs) if costs else None,
        "budget_calls": budget.calls_per_day,
        "budget_money": budget.money_per_day,
        "not_judged_budget": int(skipped),
    }


# --- the stop -----------------------------------------------------------------------------


def keep_order(rows: Sequence[tuple[str, str]], seed: str) -> dict[str, float]:
    """trace_id -> priority: its position in its stratum's content order as a fraction of
    the stratum's sample, so cutting at any priority shrinks every stratum evenly and
    keeps each a prefix of its content order."""
    by_stratum: dict[str, list[str]] = {}
    for trace_id, stratum in rows:
        by_stratum.setdefault(stratum, []).append(trace_id)
    out = {}
    for ids in by_stratum.values():
        ordered = sorted(ids, key=lambda t: (hashlib.md5((seed + t).encode()).hexdigest(), t))
        for i, t in enumerate(ordered):
            out[t] = (i + 1) / len(ordered)
    return out


def trim_to_budget(
    plan: DayPlan, calls_left: int, priority: dict[str, float]
) -> tuple[DayPlan, list[tuple[str, str]]]:
    """The plan cut to ``calls_left`` fresh judge calls, and the (trace_id, segment) pairs
    left out. Cached judgments and same-day duplicates of a kept call cost nothing."""
    order = sorted(
        range(len(plan.rows)), key=lambda i: (priority.get(plan.rows[i][0], 2.0), plan.rows[i][0])
    )
    kept_idx, kept_calls, skipped = [], set(), []
    for i in order:
        key = plan.keys[i]
        if key in plan.cached or key in kept_calls:
            kept_idx.append(i)
        elif len(kept_calls) < calls_left:
            kept_calls.add(key)
            kept_idx.append(i)
        else:
            skipped.append((plan.rows[i][0], plan.rows[i][1]))
    kept_idx.sort()
    rows = [plan.rows[i] for i in kept_idx]
    keys = [plan.keys[i] for i in kept_idx]
    todo = {k: r for k, r in plan.todo.items() if k in kept_calls}
    return DayPlan(plan.day, rows, keys, plan.cached, todo), skipped


def record_skips(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    judge: str,
    skipped: Sequence[tuple[str, str]],
) -> None:
    """The traces the budget left unjudged, and their count on the accounting row."""
    frame = pd.DataFrame(
        {
            "partition_date": day,
            "trace_id": pd.Series([t for t, _ in skipped], dtype=object),
            "segment": pd.Series([s for _, s in skipped], dtype=object),
            "judge": judge,
            "reason": BUDGET_REASON,
        }
    )
    replace_rows(
        conn, "judge_budget_skips", "partition_date = ?", [day], frame=frame if len(frame) else None
    )
    conn.execute(
        "UPDATE judge_accounting SET not_judged_budget = (SELECT count(*) FROM "
        "judge_budget_skips WHERE partition_date = ?) WHERE partition_date = ?",
        [day, day],
    )


# --- the follow-up and what the sample can see --------------------------------------------


@dataclass(frozen=True)
class FollowUpRule:
    """A segment whose stage-1 shortfall z lands in [z_follow, c) is suspicious: it gets
    part of the reserve the same day. ``info_fraction`` is the planned n1 / (n1 + n2) of a
    suspicious segment; ``c`` comes from ``power.two_look_threshold``."""

    z_follow: float = 1.0
    info_fraction: float = 0.4


def row_alpha(day_alpha: float, rows: int) -> float:
    """The per-row level of the day test's first Holm step (Bonferroni over the rows)."""
    return day_alpha / max(rows, 1)


def two_look_day_alpha(day_alpha: float, rows: int, rule: FollowUpRule) -> float:
    """The family alpha to give the one-look day test so that, with the follow-up's second
    look, each row still spends ``day_alpha / rows`` (see ``power.two_look_threshold``)."""
    look = power.two_look_threshold(row_alpha(day_alpha, rows), rule.z_follow, rule.info_fraction)
    return look.alpha_per_look * max(rows, 1)


def suspects(
    stage1: dict[str, Shortfall], day_alpha: float, rows: int, rule: FollowUpRule
) -> list[str]:
    """Segments worth a second look, most suspicious first: z in [z_follow, c)."""
    c = power.two_look_threshold(row_alpha(day_alpha, rows), rule.z_follow, rule.info_fraction).c
    hits = [(s, sf.z) for s, sf in stage1.items() if rule.z_follow <= sf.z < c]
    return [s for s, _ in sorted(hits, key=lambda x: (-x[1], x[0]))]


@dataclass(frozen=True)
class SegmentPower:
    segment: str
    n: int
    n_eff: float
    population: int
    weighted_mean: float | None
    weighted_se: float | None
    reference_sd: float | None
    reference_n: float | None
    mde: float | None  # points; None without a reference
    target_drop: float
    n_for_target: int | None
    cusum_drop: float | None = None  # persistent drop paged within CUSUM_DAYS on average

    def sentence(self) -> str:
        if self.reference_sd is None:
            return f"{self.segment}: no reference yet, nothing to compare with"
        if self.mde is None:
            return f"{self.segment}: today's sample is too small to detect any drop at 80%"
        need = f"{self.n_for_target} judged traces a day"
        persistent = (
            f"; a lasting drop of {self.cusum_drop:.2f} within {CUSUM_DAYS} days (CUSUM)"
            if self.cusum_drop is not None
            else ""
        )
        return (
            f"{self.segment}: a drop of {self.mde:.2f} points or more today "
            f"({self.target_drop:.2f} needs {need}){persistent}"
        )


def sample_power(
    estimates: dict[str, Estimate],
    reference: dict[str, tuple[float, float]],
    alpha: float,
    target_drop: float = 0.3,
    min_drop: float = 0.0,
    ref_probs: dict[str, Sequence[float]] | None = None,
) -> list[SegmentPower]:
    """Per segment: the minimum drop detectable at 80% power with today's effective sample
    (never below the day test's practical floor ``min_drop``): for a segment with its
    reference's score distribution in ``ref_probs``, that of the engine's exact day test
    against more broken answers (``power.exact_mde``), else the normal formula (the overall
    row, a pinned value); the judged traces a day a
    ``target_drop`` would need (once the reference holds 21 days of that size); the lasting
    drop the CUSUM pages on within ``CUSUM_DAYS`` days on average.
    reference: segment -> (sd, n) of its healthy reference."""
    out = []
    for seg in sorted(estimates):
        est = estimates[seg]
        sd, n_ref = reference.get(seg, (None, None))
        m = need = lasting = None
        if sd is not None and est.n_eff > 0:
            probs = (ref_probs or {}).get(seg)
            if probs is None:
                m = max(power.mde(sd, est.n_eff, n_ref, alpha), min_drop)
            else:
                exact = power.exact_mde(probs, est.n_eff, n_ref, alpha, BROKEN_SCORES)
                m = None if exact is None else max(exact, min_drop)
            lasting = power.cusum_drop(
                power.se_of(sd, est.n_eff, n_ref), CUSUM_DAYS, detectors.CUSUM_K, detectors.CUSUM_H
            )
            need = power.n_per_day_for_drop(target_drop, sd, alpha, REFERENCE_DAYS)
            if est.n_eff > 0 and est.n:
                # In judged traces: the weights cost n / n_eff of them per effective one.
                need = math.ceil(need * est.n / est.n_eff)
        out.append(
            SegmentPower(
                seg,
                est.n,
                est.n_eff,
                est.population,
                est.mean,
                est.se,
                sd,
                n_ref,
                m,
                target_drop,
                need,
                lasting,
            )
        )
    return out


# --- against the store -------------------------------------------------------------------


def day_sample(conn: duckdb.DuckDBPyConnection, day: dt.date) -> pd.DataFrame:
    """The day's judged sample with its strata: a budgeted day's from sample_strata, a
    fixed day's segment is its stratum. Traces the budget left unjudged are not in it."""
    frame = conn.execute(
        "SELECT s.segment, coalesce(x.stratum, s.segment) AS stratum, "
        "coalesce(x.stratum_size, s.stratum_size) AS stratum_size, j.state, "
        "j.score::DOUBLE AS score FROM sampled_traces s "
        "JOIN judge_scores j USING (partition_date, trace_id) "
        "LEFT JOIN sample_strata x USING (partition_date, trace_id) "
        "WHERE s.partition_date = ? AND j.criterion = 'quality'",
        [day],
    ).df()
    return frame


def healthy_reference(
    conn: duckdb.DuckDBPyConnection, day: dt.date, days: int = 21
) -> dict[str, Counts]:
    """Each segment's scores on its healthy days (per the incident history) before ``day``."""
    rows = conn.execute(
        "SELECT s.segment, "
        + ", ".join(f"count(*) FILTER (WHERE s.score = {v})" for v in range(1, 6))
        + " FROM judge_scores s JOIN drift_day_states d USING (partition_date, segment) "
        "WHERE d.state = 'healthy' AND s.state = 'ok' AND s.criterion = 'quality' "
        "AND s.partition_date < ? "
        "AND s.partition_date >= ? GROUP BY 1",
        [day, day - dt.timedelta(days=days)],
    ).fetchall()
    return {seg: Counts(tuple(int(x) for x in c)) for seg, *c in rows}


def stage1_shortfalls(
    frame: pd.DataFrame, reference: dict[str, Counts], min_ref: int = 30
) -> dict[str, Shortfall]:
    """Each segment's weighted stage-1 shortfall against its healthy reference."""
    out = {}
    ok = frame[frame["state"] == "ok"]
    for seg, g in ok.groupby("segment", sort=True):
        ref = reference.get(seg)
        if ref is None or ref.n < min_ref or len(g) == 0:
            continue
        c = engine_counts(g)  # what the day test will see (budget_sampling.engine_counts)
        out[seg] = detectors.shortfall(ref.mean, ref.variance, ref.n, c.mean, c.n)
    return out


def store_suspects(
    conn: duckdb.DuckDBPyConnection, day: dt.date, day_alpha: float, rule: FollowUpRule
) -> list[str]:
    frame = day_sample(conn, day)
    shortfalls = stage1_shortfalls(frame, healthy_reference(conn, day))
    rows = frame["segment"].nunique() + 1  # the segments and the overall row
    return suspects(shortfalls, day_alpha, rows, rule)


def day_power(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    day_alpha: float,
    target_drop: float = 0.3,
    min_drop: float = 0.2,
) -> list[SegmentPower]:
    """The day's weighted estimates and what its sample can see, stored in sample_power."""
    frame = day_sample(conn, day)
    est = estimates(frame, ALL_SEGMENTS) if len(frame) else {}
    ref_counts = healthy_reference(conn, day)
    reference = {s: (math.sqrt(c.variance), float(c.n)) for s, c in ref_counts.items() if c.n}
    pooled = sum(ref_counts.values(), Counts())
    if pooled.n:
        reference[ALL_SEGMENTS] = (math.sqrt(pooled.variance), float(pooled.n))
    rows = sample_power(
        est,
        reference,
        row_alpha(day_alpha, max(len(est), 1)),
        target_drop,
        min_drop,
        ref_probs={s: c.probs() for s, c in ref_counts.items() if c.n},
    )
    out = pd.DataFrame(
        {
            "partition_date": day,
            "segment": [r.segment for r in rows],
            "n": [r.n for r in rows],
            "n_eff": [float(r.n_eff) for r in rows],
            "population": [r.population for r in rows],
            "weighted_mean": pd.array([r.weighted_mean for r in rows], dtype="Float64"),
            "weighted_se": pd.array([r.weighted_se for r in rows], dtype="Float64"),
            "reference_sd": pd.array([r.reference_sd for r in rows], dtype="Float64"),
            "reference_n": pd.array([r.reference_n for r in rows], dtype="Float64"),
            "mde": pd.array([r.mde for r in rows], dtype="Float64"),
            "target_drop": [r.target_drop for r in rows],
            "n_for_target": pd.array([r.n_for_target for r in rows], dtype="Int64"),
            "cusum_drop": pd.array([r.cusum_drop for r in rows], dtype="Float64"),
        }
    )
    replace_rows(conn, "sample_power", "partition_date = ?", [day], frame=out if rows else None)
    return rows


def reweight_segment_days(
    conn: duckdb.DuckDBPyConnection, days: Sequence[SegmentDay]
) -> list[SegmentDay]:
    """The incident engine's day counts of a budgeted day: each segment-day whose sample
    has strata gets ``budget_sampling.engine_counts`` (its judged scores as drawn: the
    reference days were drawn by the same design, see there); a fixed day's are as loaded."""
    frame = conn.execute(
        "SELECT j.partition_date AS day, j.segment, x.stratum, x.stratum_size, "
        "j.score::DOUBLE AS score FROM judge_scores j "
        "JOIN sample_strata x USING (partition_date, trace_id) "
        "WHERE j.state = 'ok' AND j.criterion = 'quality'"
    ).df()
    if frame.empty:
        return list(days)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    weighted = {
        (d, seg): (engine_counts(g), len(g))
        for (d, seg), g in frame.groupby(["day", "segment"], sort=True)
    }
    return [
        dataclasses.replace(
            sd, counts=weighted[(sd.day, sd.segment)][0], n_judged=weighted[(sd.day, sd.segment)][1]
        )
        if (sd.day, sd.segment) in weighted
        else sd
        for sd in days
    ]
