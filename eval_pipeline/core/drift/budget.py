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
- The follow-up rule (``suspects``: which segments get the same-day second stage, chosen
  so that the engine's one test at its own alpha still holds the day's false-alarm rate)
  and what the sample can see (``power``): per segment the minimum detectable drop at 80%
  power of the engine's day test, the sample a target drop needs, and the CUSUM's figure.
- The cheap signals' say (``moved_segments``): segments whose ``trace_signals`` test
  fired today, for the budgeted sampler's ``moved=``.
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

from eval_pipeline.core.drift import detectors, history, power
from eval_pipeline.core.drift.budget_sampling import engine_counts
from eval_pipeline.core.drift.calibration import BROKEN_SCORES
from eval_pipeline.core.drift.detectors import Shortfall
from eval_pipeline.core.drift.incidents import IncidentConfig
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
    """The same-day follow-up: a segment whose stage-1 shortfall z is at least
    ``z_follow`` gets a share of the reserve (``suspects``)."""

    z_follow: float = 1.0


def suspects(stage1: dict[str, Shortfall], rule: FollowUpRule) -> list[str]:
    """Segments for the second stage: stage-1 z >= z_follow, those already past the day
    test's line included, in name order.

    Why this keeps the day test's false-alarm rate with no adjusted boundary: every
    segment that could alarm on stage 1 (z >= c > z_follow) gets stage 2, so an alarm is
    only ever raised on the day's full sample, by the engine's one test at its own alpha:
    P(alarm) <= P(Z_final >= c) = alpha whatever stage 1 showed. That needs stage 2's size
    not to depend on a segment's own scores beyond this yes/no: the reserve is split
    evenly in name order (``budget_sampling.follow_up``), never by how suspicious a segment
    looks. Following up only the segments not yet past c, and letting either look alarm,
    would spend P(Z1 >= c) + P(z_follow <= Z1 < c, Z >= c) > alpha (bench.power_eval
    measures both on clean traffic)."""
    return sorted(s for s, sf in stage1.items() if sf.z >= rule.z_follow)


@dataclass(frozen=True)
class HealthyReference:
    """A segment's healthy reference as the day test uses it."""

    counts: Counts  # the scores of its healthy days, pooled
    tau2: float = 0.0  # between-day variance of those days (reference.between_day_variance)
    days: int = 0
    thin_reason: str | None = None  # the engine gives no verdict against it
    pinned: float | None = None  # reference mode 'value': the pinned mean, no counts


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
    mde: float | None  # points, more broken answers; None: no reference, or nothing seen
    target_drop: float
    n_for_target: int | None
    cusum_drop: float | None = None  # persistent drop paged within CUSUM_DAYS on average
    mde_shift: float | None = None  # points, every answer a little worse (segments only)
    reference_tau2: float | None = None

    def sentence(self) -> str:
        if self.reference_sd is None:
            return f"{self.segment}: no reference yet, nothing to compare with"
        if self.mde is None:
            return f"{self.segment}: today's sample is too small to detect any drop at 80%"
        need = (
            f"{self.target_drop:.2f} needs {self.n_for_target} judged traces a day"
            if self.n_for_target is not None
            else f"{self.target_drop:.2f} is out of the day test's reach at any daily sample"
        )
        shift = (
            f", {self.mde_shift:.2f} if every answer gets a little worse"
            if self.mde_shift is not None
            else ""
        )
        persistent = (
            f"; a lasting drop of {self.cusum_drop:.2f} within {CUSUM_DAYS} days (CUSUM)"
            if self.cusum_drop is not None
            else ""
        )
        return (
            f"{self.segment}: a drop of {self.mde:.2f} points or more today if answers break"
            f"{shift} ({need}){persistent}"
        )


def _segment_power(
    est: Estimate, ref: HealthyReference, alpha: float, target_drop: float, min_drop: float
) -> tuple[float | None, float | None, int | None, float]:
    """(MDE broken, MDE shift, judged traces a day for the target, the day's se) of the
    engine's exact day test of one segment (``power.DayTest``)."""
    c = ref.counts
    test = power.DayTest.of(c.probs(), c.n, c.variance, c.mean, alpha, BROKEN_SCORES,
                            tau2=ref.tau2, min_drop=min_drop)  # fmt: skip
    mde = power.exact_mde(test, est.n_eff)
    shift = power.exact_mde(dataclasses.replace(test, shape="shift"), est.n_eff)
    need = power.exact_n_for_drop(test, target_drop, REFERENCE_DAYS)
    if need is not None and est.n_eff > 0 and est.n:
        # In judged traces: the weights cost n / n_eff of them per effective one.
        need = math.ceil(need * est.n / est.n_eff)
    se = math.sqrt(power.se_of(math.sqrt(c.variance), est.n_eff, c.n) ** 2 + ref.tau2)
    return mde, shift, need, se


def sample_power(
    estimates: dict[str, Estimate],
    references: dict[str, HealthyReference],
    alpha: float,
    target_drop: float = 0.3,
    min_drop: float = 0.0,
) -> list[SegmentPower]:
    """Per segment, what today's effective sample can see with the day test at ``alpha``
    (the engine's per-row ``day_alpha``) and its floor ``min_drop``: the minimum drop
    detectable at 80% power for each shape of drop (``power.exact_mde``: exact, with the
    reference's between-day variance), the judged traces a day a ``target_drop`` would
    need once the reference holds 21 such days (``power.exact_n_for_drop``, the broken
    shape), and the lasting drop the CUSUM pages on within ``CUSUM_DAYS`` days on average.
    The overall row (``ALL_SEGMENTS``, a weighted mean the engine tests with a normal
    tail) gets the normal formula."""
    out = []
    for seg in sorted(estimates):
        est, ref = estimates[seg], references.get(seg)
        m = shift = need = lasting = sd = n_ref = tau2 = None
        if ref is not None and ref.thin_reason is None and ref.counts.n and est.n_eff > 0:
            sd, n_ref, tau2 = math.sqrt(ref.counts.variance), float(ref.counts.n), ref.tau2
            if seg == ALL_SEGMENTS:
                m = max(power.mde(sd, est.n_eff, n_ref, alpha), min_drop)
                need = power.n_per_day_for_drop(target_drop, sd, alpha, REFERENCE_DAYS)
                se = power.se_of(sd, est.n_eff, n_ref)
            else:
                m, shift, need, se = _segment_power(est, ref, alpha, target_drop, min_drop)
            lasting = power.cusum_drop(se, CUSUM_DAYS, detectors.CUSUM_K, detectors.CUSUM_H)
        out.append(
            SegmentPower(seg, est.n, est.n_eff, est.population, est.mean, est.se, sd, n_ref, m,
                         target_drop, need, lasting, shift, tau2)
        )  # fmt: skip
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


def day_references(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    config: IncidentConfig | None = None,
    metadata_keys: Sequence[str] = (),
) -> dict[str, HealthyReference]:
    """Each row's reference for the follow-up and the stated MDE: the incident engine's own
    (``history.references_on``, with the ``IncidentConfig`` and metadata keys given; the
    judge asset passes the incident settings' defaults), so the two agree under them. Compute it once a day and pass it to
    ``store_suspects`` and ``day_power``: it replays the stored history."""
    return {
        seg: HealthyReference(
            ref.counts, ref.between_day_var, len(ref.days), ref.thin_reason, ref.pinned
        )
        for seg, ref in history.references_on(conn, day, config, metadata_keys).items()
    }


def stage1_shortfalls(
    frame: pd.DataFrame, references: dict[str, HealthyReference]
) -> dict[str, Shortfall]:
    """Each segment's stage-1 shortfall as the engine will test it (scores as drawn, the
    call of ``incidents.run_history``: exact tail, the reference's error and between-day
    variance, or a pinned mean against today's own variance); segments whose reference is
    thin are left out (no verdict, so no alarm, either way)."""
    out = {}
    ok = frame[frame["state"] == "ok"]
    for seg, g in ok.groupby("segment", sort=True):
        ref = references.get(seg)
        if ref is None or ref.thin_reason is not None or len(g) == 0:
            continue
        c, r = engine_counts(g), ref.counts
        if ref.pinned is not None:
            out[seg] = detectors.shortfall(ref.pinned, c.variance, None, c.mean, c.n)
        else:
            out[seg] = detectors.shortfall(
                r.mean, r.variance, r.n, c.mean, c.n, ref_probs=r.probs(), tau2=ref.tau2
            )
    return out


def store_suspects(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    rule: FollowUpRule,
    references: dict[str, HealthyReference] | None = None,
) -> list[str]:
    """``references``: ``day_references`` of the day (computed here when not given)."""
    refs = day_references(conn, day) if references is None else references
    return suspects(stage1_shortfalls(day_sample(conn, day), refs), rule)


def moved_segments(conn: duckdb.DuckDBPyConnection, day: dt.date) -> set[str]:
    """Segments whose cheap signal moved today: a fired test (paging or informing) of
    ``trace_signal_tests`` on the segment's own rows, or on its share of the day."""
    rows = conn.execute(
        "SELECT DISTINCT segment "
        "FROM trace_signal_tests WHERE partition_date = ? AND fired AND kind <> 'new_value'",
        [day],
    ).fetchall()
    return {r[0] for r in rows if r[0] and r[0] != ALL_SEGMENTS}


def day_power(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    day_alpha: float,
    target_drop: float = 0.3,
    min_drop: float = 0.2,
    references: dict[str, HealthyReference] | None = None,
) -> list[SegmentPower]:
    """The day's weighted estimates and what its sample can see, stored in sample_power.
    ``references``: ``day_references`` of the day (computed here when not given)."""
    frame = day_sample(conn, day)
    est = estimates(frame, ALL_SEGMENTS) if len(frame) else {}
    refs = day_references(conn, day) if references is None else references
    rows = sample_power(est, refs, day_alpha, target_drop, min_drop)
    floats = {
        "weighted_mean": "weighted_mean", "weighted_se": "weighted_se",
        "reference_sd": "reference_sd", "reference_n": "reference_n", "mde": "mde",
        "cusum_drop": "cusum_drop", "mde_shift": "mde_shift",
        "reference_tau2": "reference_tau2",
    }  # fmt: skip
    out = pd.DataFrame(
        {
            "partition_date": day,
            "segment": [r.segment for r in rows],
            "n": [r.n for r in rows],
            "n_eff": [float(r.n_eff) for r in rows],
            "population": [r.population for r in rows],
            **{c: pd.array([getattr(r, a) for r in rows], dtype="Float64")
               for c, a in floats.items()},
            "target_drop": [r.target_drop for r in rows],
            "n_for_target": pd.array([r.n_for_target for r in rows], dtype="Int64"),
        }
    )  # fmt: skip
    replace_rows(conn, "sample_power", "partition_date = ?", [day], frame=out if rows else None)
    return rows
