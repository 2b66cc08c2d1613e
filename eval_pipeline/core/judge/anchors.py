"""The anchor set: a fixed set of traces re-judged every day to tell judge drift from app drift.

The set is chosen once (default 50 traces, stratified by the judge's score so it spans the
scale) and its text is copied into the store, so it never changes. Every day the day's judge
scores it again, bypassing the judgment cache (for these traces only: a cached score would
be yesterday's judge, not today's). The scores are compared with the anchor set's first
scoring by the same judge identity (name, model, rubric version). The app's answers on the
anchors are fixed, so a shift can only come from the judge: a provider that swapped the
model behind the same name, a changed endpoint, a new quantisation.

The first scoring of the anchors by a judge identity is made 1 + ``BASELINE_REPEATS`` (3)
times (pass 0 and repeats 1..3, a one-off 200 calls for 50 anchors): the repeats are how far
the judge strays from itself, anchor by anchor, when nothing has changed. Later days score
the anchors once (50 calls).

The rule and its assumptions: ``anchor_stats``.

On request, ``repeats`` extra passes on any day measure the judge's noise (test-retest): the
quadratic-weighted kappa and exact agreement between the day's pass and each repeat.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from eval_pipeline.core.judge.agreement import weighted_kappa
from eval_pipeline.core.judge.anchor_stats import ALPHA, EFFECT_FLOOR, TEST_NAME, paired_test
from eval_pipeline.core.judge.base import Judge, JudgeRequest, Judgment, Progress
from eval_pipeline.core.judge.labels import JudgeIdentity, identity_sql

DEFAULT_SET = "default"
ANCHOR_SIZE = 50
BASELINE_REPEATS = 3  # the first scoring is made 1 + 3 times: the judge's own noise per anchor


@dataclass(frozen=True)
class Anchor:
    position: int
    partition_date: dt.date
    trace_id: str
    query: str
    response: str

    @property
    def request(self) -> JudgeRequest:
        return JudgeRequest(self.query, self.response)


def load(conn: duckdb.DuckDBPyConnection, anchor_set: str = DEFAULT_SET) -> list[Anchor]:
    rows = conn.execute(
        "SELECT position, partition_date, trace_id, user_query, assistant_response "
        "FROM judge_anchor_set WHERE anchor_set = ? ORDER BY position",
        [anchor_set],
    ).fetchall()
    return [Anchor(*r) for r in rows]


def choose(
    conn: duckdb.DuckDBPyConnection,
    size: int = ANCHOR_SIZE,
    anchor_set: str = DEFAULT_SET,
    seed: str = "anchors",
    until: dt.date | None = None,
) -> tuple[list[Anchor], str]:
    """The anchor set, chosen now if it does not exist yet; and a sentence saying which.

    Chosen from traces judged ok up to ``until``, round robin over the judge's scores (hash
    order within a score). Not chosen (empty list) while fewer than ``size`` are available:
    a smaller set chosen once would stay small for good.
    """
    existing = load(conn, anchor_set)
    if existing:
        return existing, f"anchor set {anchor_set!r}: {len(existing)} traces, fixed"
    rows = conn.execute(
        "SELECT s.partition_date, s.trace_id, any_value(s.score), any_value(t.user_query),"
        " any_value(t.assistant_response) FROM judge_scores s"
        " JOIN raw_traces t USING (partition_date, trace_id)"
        " WHERE s.state = 'ok' AND s.criterion = 'quality'"
        " AND s.partition_date <= coalesce(?, DATE '9999-12-31')"
        " GROUP BY 1, 2",
        [until],
    ).fetchall()
    if len(rows) < size:
        return [], f"anchor set not chosen yet: {len(rows)} judged traces, {size} needed"

    def order(r) -> str:
        return hashlib.sha256(f"{seed}|{r[0]}|{r[1]}".encode()).hexdigest()

    strata: dict[int, list] = {}
    for r in sorted(rows, key=order):
        strata.setdefault(r[2], []).append(r)
    picked: list = []
    depth = 0
    while len(picked) < size:
        for score in sorted(strata):
            if depth < len(strata[score]) and len(picked) < size:
                picked.append(strata[score][depth])
        depth += 1
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    anchors = [Anchor(i, r[0], r[1], r[3], r[4]) for i, r in enumerate(picked)]
    frame = pd.DataFrame(
        {
            "anchor_set": anchor_set,
            "position": [a.position for a in anchors],
            "partition_date": [a.partition_date for a in anchors],
            "trace_id": [a.trace_id for a in anchors],
            "user_query": [a.query for a in anchors],
            "assistant_response": [a.response for a in anchors],
            "chosen_at": now,
        }
    )
    conn.register("_anchors", frame)
    try:
        conn.execute("INSERT INTO judge_anchor_set SELECT * FROM _anchors")
    finally:
        conn.unregister("_anchors")
    return anchors, f"anchor set {anchor_set!r} chosen now: {len(anchors)} traces"


def repeats_for(
    conn: duckdb.DuckDBPyConnection,
    identity: JudgeIdentity,
    requested: int = 0,
    anchor_set: str = DEFAULT_SET,
    run_date: dt.date | None = None,
    baseline_repeats: int = BASELINE_REPEATS,
) -> int:
    """Repeats to run today: at least ``baseline_repeats`` when this is the identity's first
    scoring (its repeats measure the judge's own noise, which later days are tested against)."""
    first = conn.execute(
        "SELECT min(run_date) FROM judge_anchor_scores WHERE anchor_set = ?"
        " AND judge_identity = ? AND pass = 0",
        [anchor_set, identity.key],
    ).fetchone()[0]
    is_first = first is None or (run_date is not None and run_date <= first)
    return max(requested, baseline_repeats, 1) if is_first else requested


@dataclass
class AnchorRun:
    """The day's anchor judgments: pass 0, then any test-retest repeats."""

    passes: list[list[Judgment]]
    wall_seconds: list[float]

    def cost_line(self, idx: list[int], judge: Judge) -> tuple:
        """(calls, requests, prompt tokens, completion tokens, cost, wall) of passes ``idx``."""
        js = [j for i in idx for j in self.passes[i]]
        prompt = sum(j.prompt_tokens or 0 for j in js)
        completion = sum(j.completion_tokens or 0 for j in js)
        cost = getattr(judge, "cost_estimate", None)
        return (
            len(js),
            sum(j.attempts or 0 for j in js),
            prompt,
            completion,
            cost(prompt, completion) if callable(cost) else None,
            sum(self.wall_seconds[i] for i in idx),
        )

    def spend(self, judge: Judge) -> dict[str, tuple[int, float | None]]:
        """(calls, cost) per judge-budget line: ``anchors`` (the day's pass) and ``repeats``
        (the first scoring's repeats and test-retest passes)."""
        day = self.cost_line([0], judge)
        again = self.cost_line(list(range(1, len(self.passes))), judge)
        return {"anchors": (day[0], day[4]), "repeats": (again[0], again[4])}


def rejudge(
    judge: Judge, anchors: list[Anchor], repeats: int = 0, progress: Progress | None = None
) -> AnchorRun:
    """Ask the judge itself for every anchor, ``1 + repeats`` times: never the cache."""
    requests = [a.request for a in anchors]
    passes, walls = [], []
    for _ in range(1 + repeats):
        started = time.monotonic()
        out = judge.judge_many(requests, progress=progress)
        if len(out) != len(requests):
            raise RuntimeError(f"judge returned {len(out)} judgments for {len(requests)}")
        passes.append(out)
        walls.append(time.monotonic() - started)
    return AnchorRun(passes, walls)


def record_run(
    conn: duckdb.DuckDBPyConnection,
    run_date: dt.date,
    identity: JudgeIdentity,
    anchors: list[Anchor],
    run: AnchorRun,
    judge: Judge,
    anchor_set: str = DEFAULT_SET,
) -> None:
    """Store the day's anchor judgments and their cost lines (replacing a re-run of the day)."""
    key = identity.key
    where = "run_date = ? AND anchor_set = ? AND judge_identity = ?"
    params = [run_date, anchor_set, key]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM judge_anchor_scores WHERE {where}", params)
        conn.execute(f"DELETE FROM judge_anchor_accounting WHERE {where}", params)
        for p, judgments in enumerate(run.passes):
            frame = pd.DataFrame(
                {
                    "run_date": run_date,
                    "anchor_set": anchor_set,
                    "judge_identity": key,
                    "position": [a.position for a in anchors],
                    "pass": p,
                    "state": [j.state for j in judgments],
                    "score": pd.array([j.score for j in judgments], dtype="Int64"),
                    "reason": [j.reason for j in judgments],
                    "judged_at": now,
                }
            )
            conn.register("_anchor_scores", frame)
            try:
                conn.execute("INSERT INTO judge_anchor_scores SELECT * FROM _anchor_scores")
            finally:
                conn.unregister("_anchor_scores")
        for kind, idx in (("anchors", [0]), ("retest", list(range(1, len(run.passes))))):
            if not idx:
                continue
            line = run.cost_line(idx, judge)
            conn.execute(
                "INSERT INTO judge_anchor_accounting VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_date, anchor_set, key, kind, *line],
            )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise


@dataclass
class Finding:
    run_date: dt.date
    anchor_set: str
    judge_identity: str
    baseline_date: dt.date | None
    n_paired: int
    baseline_mean: float | None
    today_mean: float | None
    mean_shift: float | None
    changed_share: float | None
    p_value: float | None
    spread_p_value: float | None
    spread_excess: float | None
    alpha: float
    effect_floor: float
    judge_drift: bool
    retest_kappa: float | None
    retest_exact: float | None
    verdict: str
    test: str = TEST_NAME


def _scores(
    conn: duckdb.DuckDBPyConnection, day: dt.date, anchor_set: str, key: str, p: int
) -> dict[int, int]:
    rows = conn.execute(
        "SELECT position, score FROM judge_anchor_scores WHERE run_date = ? AND anchor_set = ?"
        " AND judge_identity = ? AND pass = ? AND state = 'ok'",
        [day, anchor_set, key, p],
    ).fetchall()
    return dict(rows)


def compare(
    conn: duckdb.DuckDBPyConnection,
    run_date: dt.date,
    identity: JudgeIdentity,
    anchor_set: str = DEFAULT_SET,
    alpha: float = ALPHA,
    effect_floor: float = EFFECT_FLOOR,
) -> Finding:
    """The day's anchor scores against the identity's first scoring of the anchors."""
    key = identity.key
    baseline_date = conn.execute(
        "SELECT min(run_date) FROM judge_anchor_scores WHERE anchor_set = ?"
        " AND judge_identity = ? AND pass = 0",
        [anchor_set, key],
    ).fetchone()[0]
    today = _scores(conn, run_date, anchor_set, key, 0)
    retest_kappa = retest_exact = None
    passes = conn.execute(
        "SELECT DISTINCT pass FROM judge_anchor_scores WHERE run_date = ? AND anchor_set = ?"
        " AND judge_identity = ? AND pass > 0 ORDER BY 1",
        [run_date, anchor_set, key],
    ).fetchall()
    if passes:
        kappas, exacts = [], []
        for (p,) in passes:
            again = _scores(conn, run_date, anchor_set, key, p)
            both = sorted(set(today) & set(again))
            if both:
                a = np.array([today[i] for i in both])
                b = np.array([again[i] for i in both])
                kappas.append(weighted_kappa(a, b))
                exacts.append(float(np.mean(a == b)))
        finite = [k for k in kappas if not math.isnan(k)]
        retest_kappa = float(np.mean(finite)) if finite else None
        retest_exact = float(np.mean(exacts)) if exacts else None
    common = dict(
        run_date=run_date,
        anchor_set=anchor_set,
        judge_identity=key,
        baseline_date=baseline_date,
        alpha=alpha,
        effect_floor=effect_floor,
        retest_kappa=retest_kappa,
        retest_exact=retest_exact,
    )
    if baseline_date is None or baseline_date >= run_date:
        return Finding(
            **common,
            n_paired=len(today),
            baseline_mean=None,
            today_mean=float(np.mean(list(today.values()))) if today else None,
            mean_shift=None,
            changed_share=None,
            p_value=None,
            spread_p_value=None,
            spread_excess=None,
            judge_drift=False,
            verdict="first scoring of the anchor set by this judge: it is the baseline",
        )
    base = _scores(conn, baseline_date, anchor_set, key, 0)
    reps = [
        _scores(conn, baseline_date, anchor_set, key, p)
        for (p,) in conn.execute(
            "SELECT DISTINCT pass FROM judge_anchor_scores WHERE run_date = ? AND anchor_set = ?"
            " AND judge_identity = ? AND pass > 0 ORDER BY 1",
            [baseline_date, anchor_set, key],
        ).fetchall()
    ]
    both = set(today) & set(base)
    for rep in reps:
        both &= set(rep)
    both = sorted(both)
    if len(both) < 5:
        return Finding(
            **common,
            n_paired=len(both),
            baseline_mean=None,
            today_mean=None,
            mean_shift=None,
            changed_share=None,
            p_value=None,
            spread_p_value=None,
            spread_excess=None,
            judge_drift=False,
            verdict=f"only {len(both)} anchors scored ok on both days: no comparison",
        )
    b = np.array([base[i] for i in both])
    t = np.array([today[i] for i in both])
    r = np.array([[rep[i] for i in both] for rep in reps]) if reps else None
    res = paired_test(b, t, r, alpha, effect_floor)
    shift, changed, drift = res.shift, res.changed_share, res.judge_drift
    spread = (
        f", per-anchor change {res.spread_excess:.2f} beyond its own noise over"
        f" {len(reps)} repeats (p={res.p_spread:.2g})"
        if res.p_spread is not None
        else ", no repeat of the first scoring to measure noise with"
    )
    figures = f"mean shift {shift:+.2f} (p={res.p_shift:.2g}){spread}"
    if drift:
        verdict = (
            f"JUDGE CHANGED: on the {len(both)} anchors, against its first scoring on "
            f"{baseline_date}: {figures}. The app did not change these answers, so score "
            "drift today is the judge's"
        )
    else:
        verdict = (
            f"judge stable on {len(both)} anchors: {figures}; "
            f"{changed:.0%} of anchor scores changed"
        )
    return Finding(
        **common,
        n_paired=len(both),
        baseline_mean=float(b.mean()),
        today_mean=float(t.mean()),
        mean_shift=shift,
        changed_share=changed,
        p_value=res.p_shift,
        spread_p_value=res.p_spread,
        spread_excess=res.spread_excess,
        judge_drift=drift,
        verdict=verdict,
    )


def store_finding(conn: duckdb.DuckDBPyConnection, f: Finding) -> None:
    conn.execute(
        "DELETE FROM judge_drift_findings WHERE run_date = ? AND anchor_set = ?"
        " AND judge_identity = ?",
        [f.run_date, f.anchor_set, f.judge_identity],
    )
    conn.execute(
        "INSERT INTO judge_drift_findings VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
        [
            f.run_date,
            f.anchor_set,
            f.judge_identity,
            f.baseline_date,
            f.n_paired,
            f.baseline_mean,
            f.today_mean,
            f.mean_shift,
            f.changed_share,
            f.test,
            f.p_value,
            f.spread_p_value,
            f.spread_excess,
            f.alpha,
            f.effect_floor,
            f.judge_drift,
            f.retest_kappa,
            f.retest_exact,
            f.verdict,
        ],
    )


def judge_changed(conn: duckdb.DuckDBPyConnection, day: dt.date) -> list[str]:
    """Verdicts of the judge-drift findings on ``day`` (empty: no judge changed that day).

    For the drift report and incidents: when this is not empty, the day's app-drift
    findings are the judge's, not the app's.
    """
    rows = conn.execute(
        "SELECT verdict FROM judge_drift_findings WHERE run_date = ? AND judge_drift"
        " ORDER BY judge_identity",
        [day],
    ).fetchall()
    return [r[0] for r in rows]


def identity_of_day(conn: duckdb.DuckDBPyConnection, day: dt.date) -> JudgeIdentity | None:
    """The judge identity that scored the day's sample (the most common one)."""
    row = conn.execute(
        f"SELECT {identity_sql()} AS ident, count(*) FROM judge_scores"
        " WHERE partition_date = ? AND criterion = 'quality'"
        " GROUP BY ident ORDER BY 2 DESC, 1 LIMIT 1",
        [day],
    ).fetchone()
    return JudgeIdentity.parse(row[0]) if row else None
