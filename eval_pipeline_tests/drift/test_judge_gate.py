"""The judge's trust reaches drift notifications: a changed judge never pages as app drift."""

from __future__ import annotations

import datetime as dt

from eval_pipeline.core import store
from eval_pipeline.core.drift import judge_gate
from eval_pipeline.core.notify.events import IncidentEvent

CLEAN, CHANGED = dt.date(2026, 10, 20), dt.date(2026, 10, 21)


def opened(day: dt.date, incident: str) -> IncidentEvent:
    return IncidentEvent(
        incident_id=incident,
        event="opened",
        kind="drift",
        day=day,
        title="LLM quality drop in billing",
        segments=("billing",),
        details={"drop": 0.8},
    )


def add_finding(conn, day: dt.date) -> None:
    conn.execute(
        "INSERT INTO judge_drift_findings (run_date, anchor_set, judge_identity, n_paired, test,"
        " alpha, effect_floor, judge_drift, verdict, created_at) VALUES"
        " (?, 'default', 'heuristic|-|v1', 50, 'wilcoxon', 0.01, 0.2, true,"
        " 'the judge scores the anchors 0.9 lower than on 2026-10-01', now())",
        [day],
    )


def test_a_changed_judge_holds_the_app_page_and_opens_a_judge_incident(tmp_path):
    with store.connect(tmp_path / "eval.duckdb") as conn:
        add_finding(conn, CHANGED)
        gated = judge_gate.gate_events(
            conn, [opened(CLEAN, "drift-a"), opened(CHANGED, "drift-b")], env={}, days=[CLEAN]
        )
    sent = {e.incident_id: e for e in gated.send}
    assert "drift-a" in sent and "drift-b" not in sent
    assert [e.incident_id for e in gated.held] == ["drift-b"]
    judge = [e for e in gated.send if e.kind == "judge"]
    assert len(judge) == 1 and judge[0].day == CHANGED
    assert "0.9 lower" in judge[0].details["findings"][0]
    # Every event carries its day's judge status; days without events get one too.
    assert sent["drift-a"].details["judge"] == "judge: nothing judged this day"
    assert "JUDGE CHANGED" not in sent["drift-a"].details["judge"]
    assert set(gated.trust_by_day) == {CLEAN, CHANGED}


def test_the_judge_incident_id_is_stable_across_re_runs(tmp_path):
    with store.connect(tmp_path / "eval.duckdb") as conn:
        add_finding(conn, CHANGED)
        first = judge_gate.gate_events(conn, [opened(CHANGED, "drift-b")], env={})
        again = judge_gate.gate_events(conn, [opened(CHANGED, "drift-b")], env={})
    assert [e.incident_id for e in first.send] == [e.incident_id for e in again.send]
