"""Judge scores for a day's sample, through the judgment cache.

Every sampled trace gets a row in judge_scores with the state of its judgment. Judgments
are looked up by content hash first; only misses (and earlier ``error`` judgments, which
may have been transient) go to the judge. ``ok`` and ``unparseable`` results are final for
that judge, model and rubric version.

With several criteria (criteria.py) each trace gets a row per criterion it has the inputs
for, each judgment keyed by its criterion's version, so every criterion is its own cached
score series; a criterion a trace lacks the inputs for is counted as not applicable.

Each judged day also gets one judge_accounting row (the totals) and a line per criterion
in judge_accounting_criteria: cache hits vs calls vs same-day
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
from eval_pipeline.core.judge.base import (
    Judge,
    JudgeRequest,
    Judgment,
    Progress,
    applicable,
    judge_criteria,
    judge_versions,
    judgment_key,
)
from eval_pipeline.core.judge.criteria import request_inputs
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
    criterion: str | None = None  # None: the day's totals over every criterion
    not_applicable: int = 0  # traces without the inputs the criterion needs (not in n)
    # The day's totals hold a line per criterion; mean_score is the first criterion's.
    per_criterion: dict[str, ScoreResult] = field(default_factory=dict)
    criteria_mode: str = "per-criterion"
    bad_at_or_below: int | None = None  # the criterion's threshold, for its drift report

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
            "criteria_mode": [result.criteria_mode],
        }
    )
    replace_rows(conn, "judge_accounting", "partition_date = ?", [result.day], frame=frame)
    lines = list(result.per_criterion.values())
    frame = pd.DataFrame(
        {
            "partition_date": result.day,
            "criterion": [r.criterion for r in lines],
            "rubric_version": [r.rubric_version for r in lines],
            **{
                col: [getattr(r, col) for r in lines]
                for col in (
                    "n",
                    "not_applicable",
                    "cache_hits",
                    "judge_calls",
                    "same_day_duplicates",
                    "http_attempts",
                    "prompt_tokens",
                    "completion_tokens",
                )
            },
            **{state: [r.states[state] for r in lines] for state in ("ok", "unparseable", "error")},
            "cost_estimate": pd.array([r.cost_estimate for r in lines], dtype="Float64"),
            "mean_score": pd.array([r.mean_score for r in lines], dtype="Float64"),
            "bad_at_or_below": pd.array([r.bad_at_or_below for r in lines], dtype="Int64"),
        }
    )
    replace_rows(conn, "judge_accounting_criteria", "partition_date = ?", [result.day], frame=frame)


def store_judgments(
    conn: duckdb.DuckDBPyConnection,
    judge: Judge,
    keyed: list[tuple[str, Judgment]],
    criteria: dict[str, str] | None = None,
) -> None:
    """Store fresh judgments. ``criteria``: the criterion of each key (default: the judge's
    first); each is stored with that criterion's version."""
    if not keyed:
        return
    versions = judge_versions(judge)
    first = next(iter(versions))
    names = [(criteria or {}).get(k, first) for k, _ in keyed]
    frame = pd.DataFrame(
        {
            "judgment_key": [k for k, _ in keyed],
            "judge_name": judge.name,
            "judge_model": judge.model,
            "rubric_version": [
                judge.rubric_version if n == first and not criteria else versions[n] for n in names
            ],
            "state": [j.state for _, j in keyed],
            "score": pd.array([j.score for _, j in keyed], dtype="Int64"),
            "reason": [j.reason for _, j in keyed],
            "raw_output": [j.raw_output for _, j in keyed],
            "prompt_tokens": pd.array([j.prompt_tokens for _, j in keyed], dtype="Int64"),
            "completion_tokens": pd.array([j.completion_tokens for _, j in keyed], dtype="Int64"),
            "latency_ms": pd.array([j.latency_ms for _, j in keyed], dtype="Float64"),
            "attempts": pd.array([j.attempts for _, j in keyed], dtype="Int64"),
            "criterion": names,
        }
    )
    conn.register("_new_judgments", frame)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO judgments (judgment_key, judge_name, judge_model, "
            "rubric_version, state, score, reason, raw_output, prompt_tokens, "
            "completion_tokens, latency_ms, attempts, judged_at, criterion) "
            "SELECT judgment_key, judge_name, judge_model, rubric_version, state, score, "
            "reason, raw_output, prompt_tokens, completion_tokens, latency_ms, attempts, "
            "now()::TIMESTAMP, criterion FROM _new_judgments"
        )
    finally:
        conn.unregister("_new_judgments")


@dataclass
class DayPlan:
    """What a day's scoring needs, read from the store: rows, keys, cache hits, work to do.

    ``keys`` and ``todo`` are the first criterion's (what a judge budget trims by);
    ``by_criterion`` has every criterion's key per row (None: the trace lacks an input the
    criterion needs) and ``asks`` what each missing key judges. A plan built with only the
    first five fields judges the first criterion alone.
    """

    day: dt.date
    rows: list[tuple[str, str, str, str]]  # trace_id, segment, query, response
    keys: list[str]
    cached: dict[str, tuple[str, int | None, str]]  # state, score, reason
    todo: dict[str, JudgeRequest]
    by_criterion: dict[str, list[str | None]] = field(default_factory=dict)
    asks: dict[str, tuple[str, JudgeRequest]] = field(default_factory=dict)


def plan_day(
    conn: duckdb.DuckDBPyConnection,
    judge: Judge,
    day: dt.date,
    trace_ids: set[str] | None = None,
) -> DayPlan:
    """The day's sampled traces (``trace_ids``: only those), their keys per criterion, the
    cached judgments and what is left to judge."""
    # The sample outlives the raw rows; judging it again needs their text.
    retention.require_raw_day(conn, day, "judging")
    # The parts as stored (JSON text): the judge renders them, the key hashes them.
    found = conn.execute(
        "SELECT s.trace_id, s.segment, t.user_query, t.assistant_response, "
        "t.context::VARCHAR, t.conversation::VARCHAR, t.tool_calls::VARCHAR "
        "FROM sampled_traces s JOIN raw_traces t USING (partition_date, trace_id) "
        "WHERE s.partition_date = ? ORDER BY s.trace_id",
        [day],
    ).fetchall()
    if trace_ids is not None:
        found = [r for r in found if r[0] in trace_ids]
    rows = [r[:4] for r in found]
    requests = [
        JudgeRequest(query=q, response=a, context=c, conversation=v, tool_calls=t)
        for _, _, q, a, c, v, t in found
    ]
    versions = judge_versions(judge)
    by_criterion: dict[str, list[str | None]] = {name: [] for name in versions}
    for req in requests:
        names = set(applicable(judge, req))
        for name, version in versions.items():
            key = judgment_key(judge, req, version) if name in names else None
            by_criterion[name].append(key)
    cached = lookup_judgments(conn, [k for ks in by_criterion.values() for k in ks if k])
    # Identical (query, response) pairs in one day are judged once per criterion.
    asks: dict[str, tuple[str, JudgeRequest]] = {}
    for name, ks in by_criterion.items():
        for key, req in zip(ks, requests, strict=True):
            if key is not None and key not in cached and key not in asks:
                asks[key] = (name, req)
    first = next(iter(versions))
    # A trace the first criterion does not apply to still counts for a budget: its own slot.
    keys = [k or f"n/a:{r[0]}" for k, r in zip(by_criterion[first], rows, strict=True)]
    todo = {k: req for k, (name, req) in asks.items() if name == first}
    return DayPlan(day, rows, keys, cached, todo, by_criterion, asks)


def _work(judge: Judge, plan: DayPlan) -> tuple[dict[str, list[str | None]], dict]:
    """by_criterion and asks, also for a plan that carries the first criterion only."""
    if plan.by_criterion:
        return plan.by_criterion, plan.asks
    first = next(iter(judge_versions(judge)))
    return {first: list(plan.keys)}, {k: (first, r) for k, r in plan.todo.items()}


def judge_plan(
    judge: Judge, plan: DayPlan, progress: Progress | None = None
) -> tuple[dict[str, Judgment], float]:
    """The fresh judgments the plan needs (no store access), and the wall time they took.

    The criteria a trace needs are asked together, so a one-call judge can judge them in
    one call; a per-criterion judge makes one call each.
    """
    started = time.monotonic()
    _, asks = _work(judge, plan)
    groups: dict[tuple, tuple[JudgeRequest, list[str], list[str]]] = {}
    for key, (name, req) in asks.items():
        req_, names, keys = groups.setdefault(tuple(request_inputs(req).values()), (req, [], []))
        names.append(name)
        keys.append(key)
    items = [(req, tuple(names)) for req, names, _ in groups.values()]
    judged = judge_criteria(judge, items, progress=progress) if items else []
    new: dict[str, Judgment] = {}
    for (_, names, keys), got in zip(groups.values(), judged, strict=True):
        for name, key in zip(names, keys, strict=True):
            if name not in got:
                raise RuntimeError(f"the judge returned no {name} judgment")
            new[key] = got[name]
    return new, time.monotonic() - started


def _record_criterion(
    judge: Judge,
    plan: DayPlan,
    name: str,
    version: str,
    keys: list[str | None],
    new: dict[str, Judgment],
    records: list[tuple],
) -> ScoreResult:
    """One criterion's line of the day; its judge_scores rows appended to ``records``."""
    sub = ScoreResult(plan.day, judge.name, judge.model, version, criterion=name)
    mine = {k for k in keys if k is not None and k in new}
    sub.judge_calls = len(mine)
    for key in mine:
        j = new[key]
        sub.prompt_tokens += j.prompt_tokens or 0
        sub.completion_tokens += j.completion_tokens or 0
        sub.latency_ms_total += j.latency_ms or 0.0
        sub.http_attempts += j.attempts or 0
        if j.latency_ms is not None:
            sub.latencies_ms.append(j.latency_ms)
    cost = getattr(judge, "cost_estimate", None)
    if callable(cost):
        sub.cost_estimate = cost(sub.prompt_tokens, sub.completion_tokens)
    scores = []
    counted: set[str] = set()  # fresh judgments already counted as a call
    for (trace_id, segment, _, _), key in zip(plan.rows, keys, strict=True):
        if key is None:
            sub.not_applicable += 1
            continue
        sub.n += 1
        hit = key in plan.cached
        if hit:
            state, score, reason = plan.cached[key]
        else:
            fresh = new[key]
            state, score, reason = fresh.state, fresh.score, fresh.reason
            sub.same_day_duplicates += key in counted
            counted.add(key)
        sub.cache_hits += hit
        sub.states[state] += 1
        if state != "ok":
            sub.failures_by_kind[failure_kind(state, reason)] += 1
        if score is not None:
            scores.append(score)
        records.append((trace_id, segment, key, state, score, hit, name, version))
    sub.mean_score = sum(scores) / len(scores) if scores else None
    return sub


def record_day(
    conn: duckdb.DuckDBPyConnection,
    judge: Judge,
    plan: DayPlan,
    new: dict[str, Judgment],
    wall_seconds: float = 0.0,
) -> ScoreResult:
    """Store the fresh judgments, the day's judge_scores and its accounting rows."""
    day = plan.day
    by_criterion, asks = _work(judge, plan)
    versions = judge_versions(judge)
    first = next(iter(versions))
    store_judgments(
        conn, judge, list(new.items()), {k: asks[k][0] if k in asks else first for k in new}
    )
    result = ScoreResult(day, judge.name, judge.model, judge.rubric_version, n=0)
    result.wall_seconds = wall_seconds
    result.criteria_mode = getattr(judge, "mode", "per-criterion")
    records: list[tuple] = []
    thresholds = {c.name: c.bad_at_or_below for c in getattr(judge, "criteria", ())}
    thresholds |= getattr(judge, "bad_thresholds", {})  # a rule judge's criteria
    for name, keys in by_criterion.items():
        sub = _record_criterion(judge, plan, name, versions[name], keys, new, records)
        result.per_criterion[name] = sub
        sub.bad_at_or_below = thresholds.get(name)
        for attr in (
            "n",
            "cache_hits",
            "judge_calls",
            "same_day_duplicates",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms_total",
            "http_attempts",
            "not_applicable",
        ):
            setattr(result, attr, getattr(result, attr) + getattr(sub, attr))
        result.states.update(sub.states)
        result.failures_by_kind.update(sub.failures_by_kind)
        result.latencies_ms.extend(sub.latencies_ms)
    cost = getattr(judge, "cost_estimate", None)
    if callable(cost):
        result.cost_estimate = cost(result.prompt_tokens, result.completion_tokens)
    result.mean_score = result.per_criterion[first].mean_score
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
            "rubric_version": [r[7] for r in records],
            "cache_hit": pd.array([r[5] for r in records], dtype=bool),
            "criterion": [r[6] for r in records],
        }
    )
    replace_rows(conn, "judge_scores", "partition_date = ?", [day], frame=frame)
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
