"""Signals in the incident engine: they open, extend and resolve incidents like judge
scores, and a signal and a judge drop on the same segment and day are one incident."""

from __future__ import annotations

import datetime as dt

from eval_pipeline.core.drift import history as incident_history
from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.records import ALL, SegmentDay
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline.core.signals import detect
from eval_pipeline.core.signals.compute import record_day
from eval_pipeline_tests.signals.signals_fixtures import add, fresh

START = dt.date(2026, 6, 1)
HEALTHY = Counts((2, 3, 10, 40, 45))  # mean 4.23 on 100 judgments
BROKEN = Counts((30, 20, 10, 20, 20))  # mean 2.8
SEGS = ("billing", "orders")


def judge_days(n_days: int, broken_days=()) -> list[SegmentDay]:
    out = []
    for i in range(n_days):
        day = START + dt.timedelta(days=i)
        for seg in SEGS:
            c = BROKEN if (seg == "billing" and i in broken_days) else HEALTHY
            out.append(SegmentDay(day, seg, c))
    return out


def surge(day_index: int, seg: str = "billing"):
    day = START + dt.timedelta(days=day_index)
    return {(day, seg): [("refusal_rate", f"{seg} refusal_rate: 9.00% vs reference 2.00%")]}


def alarms(*day_indexes: int) -> dict:
    out = {}
    for i in day_indexes:
        out.update(surge(i))
    return out


def test_a_refusal_surge_and_a_judge_drop_on_the_same_day_are_one_incident():
    days = judge_days(16, broken_days=range(10, 12))
    history = run_history(days, IncidentConfig(), signal_alarms=alarms(10, 11))
    judge_only = run_history(days, IncidentConfig())
    # The signal adds no incident: billing's judge incident carries it (the overall row's
    # own judge incident is the engine's business, merged by cause attribution in use).
    assert len(history.incidents) == len(judge_only.incidents)
    (inc,) = [i for i in history.incidents if "billing" in i.segments]
    assert inc.opened_on == START + dt.timedelta(days=10)
    assert "signal:refusal_rate" in inc.detector and "day-test" in inc.detector
    assert "billing" in inc.segments
    v = history.verdict(START + dt.timedelta(days=10), "billing")
    assert "refusal_rate: 9.00% vs reference 2.00%" in v.verdict
    assert inc.resolved_on == START + dt.timedelta(days=13)  # two healthy days, then closed


def test_a_signal_alone_opens_keeps_open_and_resolves_an_incident():
    days = judge_days(18)
    history = run_history(days, IncidentConfig(), signal_alarms=alarms(10, 11, 12, 13))
    (inc,) = history.incidents
    assert inc.detector == "signal:refusal_rate" and inc.segments == ["billing"]
    assert inc.detected_on == START + dt.timedelta(days=10)
    assert inc.last_degraded_on == START + dt.timedelta(days=13)  # the judge was healthy
    assert inc.resolved_on == START + dt.timedelta(days=15)
    # The signal's days never enter the judge's reference either.
    assert history.verdict(START + dt.timedelta(days=12), "billing").state == "degraded"


def test_without_signals_the_engine_is_unchanged():
    days = judge_days(14, broken_days=range(10, 12))
    assert (
        run_history(days, IncidentConfig()).incidents
        == run_history(days, IncidentConfig(), signal_alarms={}).incidents
    )


def test_paging_alarms_come_from_the_stored_tests():
    conn = fresh()
    for i in range(8):
        day = START + dt.timedelta(days=i)
        refusals = 40 if i == 7 else 1
        add(conn, day, [{"answer": "I'm sorry, but I can't help with that.", "segment": "billing"}]
            * refusals + [{"answer": "Fine.", "segment": "billing"}] * (200 - refusals))  # fmt: skip
        record_day(conn, day)
        detect.run_tests(conn, day)
    got = detect.paging_alarms(conn)
    last = START + dt.timedelta(days=7)
    assert set(got) == {(last, "billing"), (last, ALL)}
    (signal, figures), *_ = got[(last, "billing")]
    assert signal == "refusal_rate" and "20.00% vs reference 0.50%" in figures


def test_the_stored_replay_opens_an_incident_from_a_stored_signal_page():
    conn = fresh()
    rng_scores = [5, 4, 4, 5, 3, 4, 5, 4, 2, 5] * 10  # 100 judgments a day, mean 4.1
    for i in range(14):
        day = START + dt.timedelta(days=i)
        conn.executemany(
            "INSERT INTO judge_scores VALUES (?, ?, 'billing', ?, 'ok', ?, 'heuristic', NULL, "
            "'v1', false, 'quality')",
            [(day, f"t{i}-{j}", f"k{i}-{j}", s) for j, s in enumerate(rng_scores)],
        )
    page_day = START + dt.timedelta(days=10)
    conn.execute(
        "INSERT INTO trace_signal_tests VALUES (?, 'billing', 'refusal_rate', '', 'rate', "
        "'Fisher exact, one-sided (higher)', true, true, 0.09, 0.02, 0.07, 1e-9, 1e-8, 500, "
        "7000, 10, 'billing refusal_rate: 9.00% vs reference 2.00% (...): FIRED')",
        [page_day],
    )
    history = incident_history.recompute(conn)
    (inc,) = [i for i in history.incidents if "billing" in i.segments]
    assert inc.detector == "signal:refusal_rate" and inc.detected_on == page_day
    stored = conn.execute(
        "SELECT detector, opened_on FROM drift_incidents WHERE incident_id = ?", [inc.incident_id]
    ).fetchone()
    assert stored == ("signal:refusal_rate", page_day)
    state = conn.execute(
        "SELECT verdict FROM drift_day_states WHERE partition_date = ? AND segment = 'billing'",
        [page_day],
    ).fetchone()[0]
    assert "billing refusal_rate: 9.00% vs reference 2.00%" in state
