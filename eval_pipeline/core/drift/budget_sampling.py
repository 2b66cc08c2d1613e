"""Budgeted sampling: Neyman allocation by traffic and score spread, oversampled risk,
and a same-day second stage, planned in plain Python and then stored.

The fixed daily sample is :mod:`eval_pipeline.core.drift.sampling`; this module spends a
judge budget where it buys detection (docs/sampling.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.drift.sampling import (
    ALLOCATIONS,
    NO_SEGMENT,
    SampleResult,
    split_risk,
    strata,
    watch_set,
    watched_allocate,
)
from eval_pipeline.core.sources.ingest import OTHER_SEGMENTS
from eval_pipeline.core.store import replace_rows

# --- Budgeted sampling: Neyman allocation, risk oversampling, a second stage -------------
RISK = "risk"  # the risk slice of a segment is the stratum "<segment> | risk"


def risk_stratum(segment: str) -> str:
    return f"{segment} | {RISK}"


@dataclass(frozen=True)
class BudgetedSamplingConfig:
    """How a day's judge calls for the drift loop are spread (see docs/sampling.md).

    The defaults are the configuration ``bench.budget_eval`` measured (calls 66, reserve
    0, floor 10, risk x6, watch CUSUM 0.5), so turning the budget on needs no tuning.
    """

    calls: int = 66  # the day's drift-loop judge calls: stage 1 plus the reserve
    # Held back for the same-day follow-up; 0 measured best (a higher floor bought more
    # than the same calls held for the follow-up).
    reserve_fraction: float = 0.0
    floor_per_segment: int = 10  # the incident engine gives no verdict below min_n (10)
    max_segments: int = 50
    seed: str = "eval-pipeline"
    risk_oversample: float = 6.0  # a risk trace is this many times as likely to be drawn
    moved_boost: float = 2.0  # Neyman weight multiplier of a segment whose cheap signal moved
    default_sd: float = 1.0  # spread of a segment with no healthy reference yet
    # A segment in an open incident or with its CUSUM at least this high gets the calls
    # above the floors (``watched_allocate``); None: Neyman for all.
    watch_cusum: float | None = 0.5
    # The split of the calls above the floors when no segment is watched (and of what the
    # watched ones cannot take): "neyman" (traffic x spread: the overall mean's optimum) or
    # "equal_power" (spread² only: the same detectable drop in every segment).
    allocation: str = "neyman"

    def __post_init__(self) -> None:
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation {self.allocation!r}: one of {', '.join(ALLOCATIONS)}")
        if self.calls < 0:
            raise ValueError("calls cannot be negative")
        if not 0 <= self.reserve_fraction < 1:
            raise ValueError("reserve_fraction must be in [0, 1)")
        if self.risk_oversample < 1:
            raise ValueError("risk_oversample must be at least 1")
        if self.max_segments < 1:
            raise ValueError("max_segments must be at least 1")

    @property
    def stage1_calls(self) -> int:
        return self.calls - self.reserve

    @property
    def reserve(self) -> int:
        return int(self.calls * self.reserve_fraction)


def content_order(trace_ids, seed: str) -> list[str]:
    """md5(seed || trace_id): the same order whatever order the traces arrived in (the
    same hash the fixed sampler uses in SQL)."""
    return sorted(trace_ids, key=lambda t: (hashlib.md5((seed + t).encode()).hexdigest(), t))


@dataclass
class BudgetedPlan:
    """The day's population (trace -> stratum) and what each stratum has had drawn."""

    segment_of_stratum: dict[str, str]
    stratum_size: dict[str, int]
    ordered: dict[str, list[str]]  # stratum -> its traces in content order
    drawn: dict[str, int] = field(default_factory=dict)  # stratum -> how many drawn so far
    stage_of: dict[str, int] = field(default_factory=dict)  # trace_id -> stage
    allocation: dict[str, int] = field(default_factory=dict)  # segment -> stage-1 n
    notes: list[str] = field(default_factory=list)

    def rows(self) -> pd.DataFrame:
        """One row per drawn trace: trace_id, segment, stratum, stratum_size, stratum_sample
        (drawn so far), stage."""
        out = []
        for st, ids in self.ordered.items():
            k = self.drawn.get(st, 0)
            for t in ids[:k]:
                out.append(
                    (t, self.segment_of_stratum[st], st, self.stratum_size[st], k,
                     self.stage_of[t])
                )  # fmt: skip
        return pd.DataFrame(
            out,
            columns=["trace_id", "segment", "stratum", "stratum_size", "stratum_sample", "stage"],
        )

    def segment_room(self, segment: str) -> int:
        return sum(
            self.stratum_size[st] - self.drawn.get(st, 0)
            for st, seg in self.segment_of_stratum.items()
            if seg == segment
        )

    def draw(self, segment: str, n: int, stage: int, oversample: float) -> list[str]:
        """Draw ``n`` more of ``segment`` (its risk slice oversampled): the next traces in
        content order of each stratum, so every stratum's draw stays a prefix (a simple
        random sample) however many stages it took."""
        base_st, risk_st = segment, risk_stratum(segment)
        room_r = self.stratum_size.get(risk_st, 0) - self.drawn.get(risk_st, 0)
        room_b = self.stratum_size.get(base_st, 0) - self.drawn.get(base_st, 0)
        n_r, n_b = split_risk(n, room_r, room_b, oversample)
        new = []
        for st, k in ((risk_st, n_r), (base_st, n_b)):
            if k <= 0:
                continue
            start = self.drawn.get(st, 0)
            ids = self.ordered[st][start : start + k]
            self.drawn[st] = start + len(ids)
            for t in ids:
                self.stage_of[t] = stage
            new.extend(ids)
        return new


def plan_budgeted(
    population: pd.DataFrame,
    config: BudgetedSamplingConfig,
    spreads: dict[str, float] | None = None,
    moved: set[str] | frozenset[str] = frozenset(),
    watch: set[str] | frozenset[str] = frozenset(),
    watch_floor: int | None = None,
    keep: int = 0,
) -> BudgetedPlan:
    """Stage 1 of a budgeted day.

    population: one row per trace of the day, columns trace_id, segment (None allowed),
    risk (bool: new prompt_version or model, thumbs-down, ...). spreads: each segment's
    score standard deviation in its healthy reference (``default_sd`` when unknown).
    moved: segments whose cheap signal moved (their Neyman weight is boosted). watch:
    segments the incident engine is unsure of (``watch_set``), used when the config's
    ``watch_cusum`` is set. watch_floor, keep: ``watched_allocate``'s.
    """
    spreads = spreads or {}
    seg = population["segment"].astype(object).where(population["segment"].notna(), NO_SEGMENT)
    counts = seg.value_counts().to_dict()
    by_stratum, grouped = strata({str(k): int(v) for k, v in counts.items()}, config.max_segments)
    notes = []
    if grouped:
        notes.append(
            f"{len(grouped)} segments beyond the {config.max_segments} largest grouped as "
            f"{OTHER_SEGMENTS} ({by_stratum[OTHER_SEGMENTS]} traces)"
        )
        seg = seg.where(seg.isin(set(by_stratum) - {OTHER_SEGMENTS}), OTHER_SEGMENTS)
    risk = population["risk"].fillna(False).astype(bool).to_numpy()
    stratum = np.where(risk, seg.map(risk_stratum), seg)
    frame = pd.DataFrame({"trace_id": population["trace_id"].to_numpy(), "stratum": stratum})
    frame["segment"] = seg.to_numpy()
    plan = BudgetedPlan({}, {}, {}, notes=notes)
    for st, g in frame.groupby("stratum", sort=True):
        plan.segment_of_stratum[st] = g["segment"].iloc[0]
        plan.stratum_size[st] = len(g)
        plan.ordered[st] = content_order(g["trace_id"].tolist(), config.seed)
    sd = {s: spreads.get(s, config.default_sd) for s in by_stratum}
    boost = {s: config.moved_boost for s in by_stratum if s in moved}
    plan.allocation = watched_allocate(
        by_stratum,
        sd,
        config.stage1_calls,
        config.floor_per_segment,
        watch if config.watch_cusum is not None else frozenset(),
        boost,
        watch_floor,
        keep,
        config.allocation,
    )
    for s, n in sorted(plan.allocation.items()):
        plan.draw(s, n, stage=1, oversample=config.risk_oversample)
    return plan


def follow_up(
    plan: BudgetedPlan, suspects: list[str], reserve: int, oversample: float
) -> dict[str, int]:
    """Stage 2: the reserve split evenly over the suspicious segments (in the given order,
    by name: see ``budget.suspects``), never more than a segment has left. Returns
    segment -> n."""
    if not suspects or reserve <= 0:
        return {}
    share = {s: 0 for s in suspects}
    left = reserve
    while left > 0:
        open_ = [s for s in suspects if plan.segment_room(s) > share[s]]
        if not open_:
            break
        each = max(1, left // len(open_))
        for s in open_:
            take = min(each, plan.segment_room(s) - share[s], left)
            share[s] += take
            left -= take
            if left == 0:
                break
    for s, n in share.items():
        plan.draw(s, n, stage=2, oversample=oversample)
    return {s: n for s, n in share.items() if n}


# --- Budgeted sampling against the store ---------------------------------------------------


def load_population(
    conn: duckdb.DuckDBPyConnection, day: dt.date, new_days: int = 7
) -> pd.DataFrame:
    """The day's traces with their risk flag: a prompt_version or model first seen in the
    last ``new_days`` days (values already there on the first stored day are not new), or a
    thumbs-down in ``feedback``."""
    since = day - dt.timedelta(days=new_days)
    frame = conn.execute(
        """
        WITH first_day AS (SELECT min(partition_date) AS d0 FROM raw_traces),
        pv AS (SELECT prompt_version, min(partition_date) AS seen FROM raw_traces
               WHERE partition_date <= ? AND prompt_version IS NOT NULL GROUP BY 1),
        md AS (SELECT model, min(partition_date) AS seen FROM raw_traces
               WHERE partition_date <= ? AND model IS NOT NULL GROUP BY 1),
        down AS (SELECT DISTINCT trace_id FROM feedback WHERE rating = 'down')
        SELECT t.trace_id, t.segment,
               coalesce(pv.seen > ? AND pv.seen > (SELECT d0 FROM first_day), false)
                   AS new_version,
               coalesce(md.seen > ? AND md.seen > (SELECT d0 FROM first_day), false)
                   AS new_model,
               down.trace_id IS NOT NULL AS thumbs_down
        FROM raw_traces t
        LEFT JOIN pv USING (prompt_version)
        LEFT JOIN md USING (model)
        LEFT JOIN down USING (trace_id)
        WHERE t.partition_date = ?
        """,
        [day, day, since, since, day],
    ).df()
    frame["risk"] = frame["new_version"] | frame["new_model"] | frame["thumbs_down"]
    return frame


def reference_spreads(
    conn: duckdb.DuckDBPyConnection, day: dt.date, days: int = 21, min_n: int = 30
) -> dict[str, float]:
    """Each segment's score standard deviation over its healthy days (as the incident
    history judged them) in the ``days`` before ``day``."""
    rows = conn.execute(
        "SELECT s.segment, stddev_samp(s.score), count(*) FROM judge_scores s "
        "JOIN drift_day_states d USING (partition_date, segment) "
        "WHERE d.state = 'healthy' AND s.state = 'ok' AND s.criterion = 'quality' "
        "AND s.partition_date < ? "
        "AND s.partition_date >= ? GROUP BY 1",
        [day, day - dt.timedelta(days=days)],
    ).fetchall()
    return {seg: float(sd) for seg, sd, n in rows if sd is not None and n >= min_n}


def watched_segments(conn: duckdb.DuckDBPyConnection, day: dt.date, watch_cusum: float) -> set[str]:
    """``watch_set`` of the latest day before ``day`` that the incident replay stored."""
    rows = conn.execute(
        "SELECT segment, state, cusum, incident_id FROM drift_day_states WHERE partition_date "
        "= (SELECT max(partition_date) FROM drift_day_states WHERE partition_date < ?)",
        [day],
    ).fetchall()
    return watch_set(rows, watch_cusum)


def _store_plan(conn: duckdb.DuckDBPyConnection, day: dt.date, plan: BudgetedPlan) -> int:
    rows = plan.rows()
    seg_size: dict[str, int] = {}
    for st, seg in plan.segment_of_stratum.items():
        seg_size[seg] = seg_size.get(seg, 0) + plan.stratum_size[st]
    seg_drawn = rows.groupby("segment").size().to_dict() if len(rows) else {}
    sampled = pd.DataFrame(
        {
            "partition_date": day,
            "trace_id": rows["trace_id"].astype(object),
            "segment": rows["segment"].astype(object),
            "stratum_size": rows["segment"].map(seg_size).astype("int64"),
            "stratum_sample": rows["segment"].map(seg_drawn).astype("int64"),
        }
    )
    strata_rows = pd.DataFrame(
        {
            "partition_date": day,
            "trace_id": rows["trace_id"].astype(object),
            "stratum": rows["stratum"].astype(object),
            "stratum_size": rows["stratum_size"].astype("int64"),
            "stage": rows["stage"].astype("int64"),
        }
    )
    have = len(rows) > 0
    replace_rows(
        conn, "sample_strata", "partition_date = ?", [day], frame=strata_rows if have else None
    )
    return replace_rows(
        conn, "sampled_traces", "partition_date = ?", [day], frame=sampled if have else None
    )


def budgeted_plan(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    config: BudgetedSamplingConfig,
    moved: set[str] | frozenset[str] = frozenset(),
    new_days: int = 7,
) -> BudgetedPlan:
    """Stage 1 of the day, as planned from the store (the same store gives the same plan).

    ``moved``: segments whose cheap signal moved; the caller supplies them (from the
    signals' table when there is one), so this module does not depend on its schema.
    """
    population = load_population(conn, day, new_days)
    watch = (
        watched_segments(conn, day, config.watch_cusum)
        if config.watch_cusum is not None
        else frozenset()
    )
    return plan_budgeted(population, config, reference_spreads(conn, day), moved, watch)


def sample_day_budgeted(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    config: BudgetedSamplingConfig,
    moved: set[str] | frozenset[str] = frozenset(),
) -> SampleResult:
    """Stage 1: store the day's budgeted sample (sampled_traces + sample_strata)."""
    plan = budgeted_plan(conn, day, config, moved)
    n = _store_plan(conn, day, plan)
    by_segment: dict[str, tuple[int, int]] = {}
    for st, seg in plan.segment_of_stratum.items():
        pop, k = by_segment.get(seg, (0, 0))
        by_segment[seg] = (pop + plan.stratum_size[st], k + plan.drawn.get(st, 0))
    notes = list(plan.notes)
    risky = sum(plan.drawn.get(st, 0) for st in plan.stratum_size if st.endswith(f"| {RISK}"))
    if risky:
        notes.append(f"{risky} of {n} sampled traces from risk slices (weighted back)")
    return SampleResult(
        day=day,
        population=sum(plan.stratum_size.values()),
        sampled=n,
        by_segment=dict(sorted(by_segment.items())),
        notes=notes,
    )


def follow_up_day(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    config: BudgetedSamplingConfig,
    suspects: list[str],
    calls: int,
    moved: set[str] | frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Stage 2: ``calls`` more traces of the suspicious segments, appended to the day's
    sample (the stage-1 draw is re-planned from the store, then continued)."""
    plan = budgeted_plan(conn, day, config, moved)
    # What was drawn is what the store says, whatever the stage-1 config was.
    stored = conn.execute(
        "SELECT trace_id, stratum, stage FROM sample_strata WHERE partition_date = ?", [day]
    ).fetchall()
    if not stored:
        return {}  # a follow-up continues a budgeted sample only
    plan.drawn, plan.stage_of = {}, {}
    for trace_id, st, stage in stored:
        if st in plan.ordered:
            plan.drawn[st] = plan.drawn.get(st, 0) + 1
            plan.stage_of[trace_id] = int(stage)
    for st, ids in plan.ordered.items():
        if set(ids[: plan.drawn.get(st, 0)]) != {t for t, s, _ in stored if s == st}:
            raise ValueError(f"{day}: the stored sample of {st!r} is not the plan's; re-sample")
    extra = follow_up(plan, suspects, calls, config.risk_oversample)
    if extra:
        _store_plan(conn, day, plan)
    return extra


def engine_counts(ok: pd.DataFrame) -> Counts:
    """The counts the incident engine tests for one budgeted segment-day: its judged (ok)
    scores as drawn, each counted once.

    Why not the weighted distribution: under the engine's null (nothing changed), today's
    sample is drawn by the same design as the healthy days its reference is made of, so
    the sample as drawn has the reference's distribution and the test keeps its size. The
    oversampled risk slice (a new prompt_version or model) then weighs in the test as much
    as it was sampled, which is where a roll-out's drop is: weighting it back to its share
    of traffic would dilute that drop and add the design effect of unequal weights on top.
    Estimates (reports, the stated MDE) stay post-stratified (``weights.estimates``)."""
    return Counts.of(ok["score"])
