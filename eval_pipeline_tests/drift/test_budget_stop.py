"""The judge budget in the store: judging stops at the budget, the rest is recorded as not
judged for budget (not as failures), the ledger shows each line against the budget, and a
budgeted day's sample, follow-up and weighted figures come from the store."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.drift import budget, budget_sampling, sampling, weights
from eval_pipeline.core.drift import history as incident_history
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.judge import cache as scoring
from eval_pipeline.core.judge.base import HeuristicJudge, JudgeRequest
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import ingest_day

DAY = dt.date(2026, 10, 5)


def write_day(inbox, day=DAY, n=300, v2_from=None) -> None:
    rows = []
    for i in range(n):
        seg = "billing" if i % 3 == 0 else "orders"
        rows.append(
            {
                "trace_id": f"{day}-t{i:04d}",
                "timestamp": f"{day}T10:00:00Z",
                "user_query": f"question {i} about {seg}",
                "assistant_response": f"An answer about {seg} number {i}." if i % 7 else "I",
                "segment": seg,
                "prompt_version": "v2" if v2_from is not None and i % 10 == 0 else "v1",
            }
        )
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{day}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def conn(tmp_path):
    inbox = tmp_path / "inbox"
    with store.connect(tmp_path / "s.duckdb") as c:
        for d in (DAY - dt.timedelta(days=20), DAY):
            write_day(inbox, d, v2_from=DAY if d == DAY else None)
            ingest_day(c, InboxSource(inbox), d)
        yield c


def test_budget_in_calls_or_money_binds_the_tighter():
    b = budget.Budget("j", calls_per_day=100)
    assert b.calls_left(30, 0.0, None) == 70 and b.calls_left(130, 0.0, None) == 0
    m = budget.Budget("j", calls_per_day=100, money_per_day=1.0)
    assert m.calls_left(30, 0.7, 0.01) == 30  # $0.30 left at a cent a call
    with pytest.raises(ValueError, match="token prices"):
        m.calls_left(0, 0.0, None)
    with pytest.raises(ValueError):
        budget.Budget("j")


def test_trim_keeps_cache_hits_free_and_cuts_every_stratum_evenly():
    rows = [(f"a{i}", "a", "q", f"r{i}") for i in range(10)] + [
        (f"b{i}", "b", "q", f"r{i}") for i in range(10, 20)
    ]
    keys = [f"k{i}" for i in range(20)]
    cached = {"k0": ("ok", 5, "fine"), "k15": ("ok", 4, "fine")}
    todo = {k: JudgeRequest("q", k) for k in keys if k not in cached}
    plan = scoring.DayPlan(DAY, rows, keys, cached, todo)
    prio = budget.keep_order([(r[0], r[1]) for r in rows], "seed")
    kept, skipped = budget.trim_to_budget(plan, 6, prio)
    assert len(kept.todo) == 6 and len(skipped) == 20 - 6 - 2
    kept_ids = {r[0] for r in kept.rows}
    assert {"a0", "b15"} <= kept_ids  # cached: free
    by_seg = {s: sum(1 for t, seg in skipped if seg == s) for s in "ab"}
    assert abs(by_seg["a"] - by_seg["b"]) <= 1


def test_judging_stops_at_the_budget_and_the_rest_is_not_a_failure(conn):
    judge = HeuristicJudge()
    key = "heuristic/heuristic-v2"
    cfg = budget_sampling.BudgetedSamplingConfig(calls=40, reserve_fraction=0.0)
    res = budget_sampling.sample_day_budgeted(conn, DAY, cfg)
    assert res.sampled == 40
    the_budget = budget.Budget(key, calls_per_day=25)
    budget.record_spend(conn, DAY, key, "anchors", 5, None)  # anchors came first today
    left = the_budget.calls_left(*budget.spent(conn, DAY, key, excluding=["drift"]), None)
    assert left == 20
    plan = scoring.plan_day(conn, judge, DAY)
    rows = conn.execute(
        "SELECT trace_id, stratum FROM sample_strata WHERE partition_date = ?", [DAY]
    ).fetchall()
    plan, skipped = budget.trim_to_budget(plan, left, budget.keep_order(rows, cfg.seed))
    new, wall = scoring.judge_plan(judge, plan)
    out = scoring.record_day(conn, judge, plan, new, wall)
    budget.record_skips(conn, DAY, key, skipped)
    budget.record_spend(conn, DAY, key, "drift", out.judge_calls, out.cost_estimate)
    assert out.judge_calls <= 20 and len(skipped) == 40 - out.n
    assert out.states["error"] == 0 and out.states["unparseable"] == 0
    acct = budget.accounting(conn, DAY, the_budget)
    assert acct["lines"]["anchors"]["calls"] == 5
    assert acct["calls"] == 5 + out.judge_calls <= 25
    assert acct["not_judged_budget"] == len(skipped)
    assert conn.execute(
        "SELECT not_judged_budget FROM judge_accounting WHERE partition_date = ?", [DAY]
    ).fetchone() == (len(skipped),)
    # The weighted figures count only what was judged.
    powers = {p.segment: p for p in budget.day_power(conn, DAY, 0.002)}
    assert powers["__all__"].n == out.states["ok"]
    assert conn.execute("SELECT count(*) FROM sample_power").fetchone()[0] == len(powers)


def test_a_new_prompt_version_is_a_risk_slice_and_the_follow_up_continues_it(conn):
    pop = budget_sampling.load_population(conn, DAY)
    assert pop.loc[pop["risk"], "trace_id"].str.endswith("0").all()
    assert pop["new_version"].sum() == 30  # v2 first seen today
    cfg = budget_sampling.BudgetedSamplingConfig(calls=30, reserve_fraction=0.0)
    budget_sampling.sample_day_budgeted(conn, DAY, cfg)
    first = {r[0] for r in conn.execute("SELECT trace_id FROM sampled_traces").fetchall()}
    extra = budget_sampling.follow_up_day(conn, DAY, cfg, ["billing"], 10)
    assert extra == {"billing": 10}
    after = conn.execute("SELECT trace_id, stage FROM sample_strata").fetchall()
    assert first <= {t for t, _ in after} and sum(s == 2 for _, s in after) == 10
    seg = conn.execute(
        "SELECT stratum_sample FROM sampled_traces WHERE segment = 'billing' LIMIT 1"
    ).fetchone()[0]
    assert seg == sum(1 for t, _ in after if t in {r[0] for r in conn.execute(
        "SELECT trace_id FROM sampled_traces WHERE segment = 'billing'").fetchall()})  # fmt: skip


def test_the_incident_engine_tests_a_budgeted_day_as_drawn_and_the_report_weights_it(conn):
    judge = HeuristicJudge()
    budget_sampling.sample_day_budgeted(conn, DAY, budget_sampling.BudgetedSamplingConfig(calls=60))
    scoring.score_day(conn, judge, DAY)
    days = incident_history.load_segment_days(conn)
    tested = {(d.day, d.segment): d for d in days}
    frame = budget.day_sample(conn, DAY)
    ok = frame[frame["state"] == "ok"]
    est = weights.estimates(frame, "__all__")
    for seg in ("billing", "orders"):
        drawn = ok[ok["segment"] == seg]
        t = tested[(DAY, seg)]
        # The engine sees every judged score once (the reference days were drawn alike)...
        assert t.counts == Counts.of(drawn["score"])
        # ... while the day's figure is the post-stratified one.
        w = weights.trace_weights(drawn)
        assert est[seg].mean == pytest.approx(float((w * drawn["score"]).sum() / w.sum()))
    strata = {r[0] for r in conn.execute("SELECT stratum FROM sample_strata").fetchall()}
    assert "billing | risk" in strata  # the new prompt_version was oversampled


def test_a_fixed_resample_of_a_budgeted_day_drops_its_strata(conn):
    budget_sampling.sample_day_budgeted(
        conn, DAY, budget_sampling.BudgetedSamplingConfig(calls=30, reserve_fraction=0.0)
    )
    assert conn.execute("SELECT count(*) FROM sample_strata").fetchone()[0] == 30
    sampling.sample_day(conn, DAY, sampling.SamplingConfig(sample_size=30))
    assert conn.execute("SELECT count(*) FROM sample_strata").fetchone()[0] == 0
