"""Judge scores for a day's sample, through the judgment cache.

Every sampled trace gets a row in judge_scores with the state of its judgment. Judgments
are looked up by content hash first; only misses (and earlier ``error`` judgments, which
may have been transient) go to the judge. ``ok`` and ``unparseable`` results are final for
that judge, model and rubric version.

Each judged day also gets one judge_accounting row: cache hits vs calls vs same-day
duplicates (a trace whose query and answer another trace of the day already sent to the
judge in this run), so every sampled trace is in exactly one of the three; requests sent,
tokens, latency, a cost estimate (when the judge has token prices) and failure counts by
kind (the kind is the ``word:`` that starts a failure's reason, e.g. ``error/timeout``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from eval_pipeline.core import retention, store
from eval_pipeline.core.judge.base import Judge, JudgeRequest, Judgment, Progress, judgment_key
from eval_pipeline.core.store import replace_rows


@dataclass
class ScoreResult:
    day: dt.date
    judge_name: str
    judge_model: str | None
    rubric_version: str
    n: int = 0
    cache_hits: int = 0
    judge_calls: int = 0
    # Traces answered by a judgment made for another trace of the same day in this run:
    # n == cache_hits + judge_calls + same_day_duplicates.
    same_day_duplicates: int = 0
    states: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_total: float = 0.0
    mean_score: float | None = None
    http_attempts: int = 0  # requests the judge sent for this day's fresh judgments
    failures_by_kind: Counter = field(default_factory=Counter)
    cost_estimate: float | None = None  # None: the judge has no token prices
    wall_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def latency_ms_mean(self) -> float | None:
        return sum(self.latencies_ms) / len(self.latencies_ms) if self.latencies_ms else None

    @property
    def latency_ms_p95(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    @property
    def failure_rate(self) -> float:
        failed = self.states["unparseable"] + self.states["error"]
        return failed / self.n if self.n else 0.0


def lookup_judgments(
    conn: duckdb.DuckDBPyConnection, keys: list[str]
) -> dict[str, tuple[str, int | None, str]]:
    """Cached (state, score, reason) for the keys that have a final judgment.

    ``error`` judgments are not final: they may have been transient, so they are judged again.
    """
    if not keys:
        return {}
    frame = pd.DataFrame({"judgment_key": pd.Series(keys, dtype=object)})
    conn.register("_keys", frame)
    try:
        rows = conn.execute(
            "SELECT j.judgment_key, j.state, j.score, j.reason FROM judgments j "
            "JOIN _keys USING (judgment_key) WHERE j.state <> 'error'"
        ).fetchall()
    finally:
        conn.unregister("_keys")
    return {k: (state, score, reason) for k, state, score, reason in rows}


_KIND = re.compile(r"^([a-z_]+):")


def failure_kind(state: str, reason: str | None) -> str:
    """``state/kind`` for a failed judgment, e.g. ``error/rate_limited``."""
    m = _KIND.match(reason or "")
    return f"{state}/{m.group(1) if m else 'other'}"


def store_accounting(conn: duckdb.DuckDBPyConnection, result: ScoreResult) -> None:
    """The day's judge_accounting row (replaced when the day is scored again)."""
    frame = pd.DataFrame(
        {
            "partition_date": [result.day],
            "judge_name": [result.judge_name],
            "judge_model": [result.judge_model],
            "rubric_version": [result.rubric_version],
            "n": [result.n],
            "cache_hits": [result.cache_hits],
            "judge_calls": [result.judge_calls],
            "same_day_duplicates": [result.same_day_duplicates],
            "http_attempts": [result.http_attempts],
            "ok": [result.states["ok"]],
            "unparseable": [result.states["unparseable"]],
            "error": [result.states["error"]],
            "failures_by_kind": [json.dumps(dict(sorted(result.failures_by_kind.items())))],
            "prompt_tokens": [result.prompt_tokens],
            "completion_tokens": [result.completion_tokens],
            "latency_ms_mean": pd.array([result.latency_ms_mean], dtype="Float64"),
            "latency_ms_p95": pd.array([result.latency_ms_p95], dtype="Float64"),
            "cost_estimate": pd.array([result.cost_estimate], dtype="Float64"),
            "wall_seconds": [result.wall_seconds],
            "judged_at": [pd.Timestamp.now(tz="UTC").tz_localize(None)],
        }
    )
    replace_rows(conn, "judge_accounting", "partition_date = ?", [result.day], frame=frame)


def store_judgments(
    conn: duckdb.DuckDBPyConnection, judge: Judge, keyed: list[tuple[str, Judgment]]
) -> None:
    if not keyed:
        return
    frame = pd.DataFrame(
        {
            "judgment_key": [k for k, _ in keyed],
            "judge_name": judge.name,
            "judge_model": judge.model,
            "rubric_version": judge.rubric_version,
            "state": [j.state for _, j in keyed],
            "score": pd.array([j.score for _, j in keyed], dtype="Int64"),
            "reason": [j.reason for _, j in keyed],
            "raw_output": [j.raw_output for _, j in keyed],
            "prompt_tokens": pd.array([j.prompt_tokens for _, j in keyed], dtype="Int64"),
            "completion_tokens": pd.array([j.completion_tokens for _, j in keyed], dtype="Int64"),
            "latency_ms": pd.array([j.latency_ms for _, j in keyed], dtype="Float64"),
            "attempts": pd.array([j.attempts for _, j in keyed], dtype="Int64"),
        }
    )
    conn.register("_new_judgments", frame)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO judgments SELECT judgment_key, judge_name, judge_model, "
            "rubric_version, state, score, reason, raw_output, prompt_tokens, "
            "completion_tokens, latency_ms, attempts, now()::TIMESTAMP FROM _new_judgments"
        )
    finally:
        conn.unregister("_new_judgments")


@dataclass
class DayPlan:
    """What a day's scoring needs, read from the store: rows, keys, cache hits, work to do."""

    day: dt.date
    rows: list[tuple[str, str, str, str]]  # trace_id, segment, query, response
    keys: list[str]
    cached: dict[str, tuple[str, int | None, str]]  # state, score, reason
    todo: dict[str, JudgeRequest]


def plan_day(conn: duckdb.DuckDBPyConnection, judge: Judge, day: dt.date) -> DayPlan:
    # The sample outlives the raw rows; judging it again needs their text.
    retention.require_raw_day(conn, day, "judging")
    rows = conn.execute(
        "SELECT s.trace_id, s.segment, t.user_query, t.assistant_response "
        "FROM sampled_traces s JOIN raw_traces t USING (partition_date, trace_id) "
        "WHERE s.partition_date = ? ORDER BY s.trace_id",
        [day],
    ).fetchall()
    requests = [JudgeRequest(query=q, response=a) for _, _, q, a in rows]
    keys = [judgment_key(judge, r) for r in requests]
    cached = lookup_judgments(conn, keys)
    # Identical (query, response) pairs in one day are judged once.
    todo: dict[str, JudgeRequest] = {}
    for key, req in zip(keys, requests, strict=True):
        if key not in cached and key not in todo:
            todo[key] = req
    return DayPlan(day, rows, keys, cached, todo)


def judge_plan(
    judge: Judge, plan: DayPlan, progress: Progress | None = None
) -> tuple[dict[str, Judgment], float]:
    """The fresh judgments the plan needs (no store access), and the wall time they took."""
    started = time.monotonic()
    fresh = judge.judge_many(list(plan.todo.values()), progress=progress) if plan.todo else []
    if len(fresh) != len(plan.todo):
        raise RuntimeError(f"judge returned {len(fresh)} judgments for {len(plan.todo)} requests")
    return dict(zip(plan.todo, fresh, strict=True)), time.monotonic() - started


def record_day(
    conn: duckdb.DuckDBPyConnection,
    judge: Judge,
    plan: DayPlan,
    new: dict[str, Judgment],
    wall_seconds: float = 0.0,
) -> ScoreResult:
    """Store the fresh judgments, the day's judge_scores and its accounting row."""
    day, rows, keys, cached = plan.day, plan.rows, plan.keys, plan.cached
    result = ScoreResult(day, judge.name, judge.model, judge.rubric_version, n=len(rows))
    result.wall_seconds = wall_seconds
    store_judgments(conn, judge, list(new.items()))
    result.judge_calls = len(new)
    for j in new.values():
        result.prompt_tokens += j.prompt_tokens or 0
        result.completion_tokens += j.completion_tokens or 0
        result.latency_ms_total += j.latency_ms or 0.0
        result.http_attempts += j.attempts or 0
        if j.latency_ms is not None:
            result.latencies_ms.append(j.latency_ms)
    cost = getattr(judge, "cost_estimate", None)
    if callable(cost):
        result.cost_estimate = cost(result.prompt_tokens, result.completion_tokens)
    records = []
    scores = []
    counted: set[str] = set()  # fresh judgments already counted as a call
    for (trace_id, segment, _, _), key in zip(rows, keys, strict=True):
        hit = key in cached
        fresh = new.get(key)
        state, score, reason = cached[key] if hit else (fresh.state, fresh.score, fresh.reason)
        result.cache_hits += hit
        if not hit:
            result.same_day_duplicates += key in counted
            counted.add(key)
        result.states[state] += 1
        if state != "ok":
            result.failures_by_kind[failure_kind(state, reason)] += 1
        if score is not None:
            scores.append(score)
        records.append((trace_id, segment, key, state, score, hit))
    frame = pd.DataFrame(
        {
            "partition_date": day,
            "trace_id": [r[0] for r in records],
            "segment": [r[1] for r in records],
            "judgment_key": [r[2] for r in records],
            "state": [r[3] for r in records],
            "score": pd.array([r[4] for r in records], dtype="Int64"),
            "judge_name": judge.name,
            "judge_model": judge.model,
            "rubric_version": judge.rubric_version,
            "cache_hit": pd.array([r[5] for r in records], dtype=bool),
        }
    )
    replace_rows(conn, "judge_scores", "partition_date = ?", [day], frame=frame)
    result.mean_score = sum(scores) / len(scores) if scores else None
    store_accounting(conn, result)
    return result


def score_day(
    conn: duckdb.DuckDBPyConnection,
    judge: Judge,
    day: dt.date,
    progress: Progress | None = None,
) -> ScoreResult:
    """plan, judge and record a day on one connection (the asset splits the three so it does
    not hold the store while a remote judge answers)."""
    plan = plan_day(conn, judge, day)
    new, wall = judge_plan(judge, plan, progress)
    return record_day(conn, judge, plan, new, wall)


class CachedJudge:
    """A judge that answers from the store's judgment cache first, then asks the wrapped judge.

    For callers that judge outside the drift loop (the A/B test): a re-run of the same cases
    with the same answers costs no judge call. The store is opened only for the look-up, on a
    short connection; the new judgments are stored by the caller, as before.
    """

    def __init__(self, judge: Judge, db_path: str | Path) -> None:
        self.inner = judge
        self.db_path = Path(db_path)
        self.name, self.model, self.rubric_version = judge.name, judge.model, judge.rubric_version
        self.cache_hits = 0

    def __getattr__(self, attr: str):  # compare_many, cost_estimate, ... of the wrapped judge
        return getattr(self.inner, attr)

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Progress | None = None
    ) -> list[Judgment]:
        keys = [judgment_key(self.inner, r) for r in requests]
        cached: dict[str, tuple[str, int | None, str]] = {}
        if self.db_path.exists():
            with store.connect(self.db_path) as conn:
                cached = lookup_judgments(conn, keys)
        misses = [r for k, r in zip(keys, requests, strict=True) if k not in cached]
        fresh = iter(self.inner.judge_many(misses, progress=progress) if misses else [])
        out = []
        for key in keys:
            if key in cached:
                self.cache_hits += 1
                state, score, reason = cached[key]
                out.append(Judgment(state, score, reason, attempts=0))  # type: ignore[arg-type]
            else:
                out.append(next(fresh))
        return out
