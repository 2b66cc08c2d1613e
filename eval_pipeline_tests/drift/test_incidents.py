"""Incidents at their edges: open, continue, resolve after exactly K healthy days, hand
actions, grouping under one cause, and the same history however the days are replayed."""

from __future__ import annotations

import dataclasses

from eval_pipeline.core.drift.cause import Cause
from eval_pipeline.core.drift.incidents import (
    ALL,
    Action,
    IncidentConfig,
    incident_id,
    planned_events,
    run_history,
)
from eval_pipeline_tests.drift.incident_data import BROKEN, HEALTHY, day, days

ONE = IncidentConfig(overall=False)


def test_open_continue_and_resolve_after_exactly_k_healthy_days():
    pattern = [HEALTHY] * 8 + [BROKEN] * 3 + [HEALTHY, BROKEN] + [HEALTHY] * 3
    history = run_history(days({"s": pattern}), ONE)
    assert len(history.incidents) == 1
    inc = history.incidents[0]
    assert inc.opened_on == inc.detected_on == day(8)
    assert inc.detector.startswith("cusum") or "day-test" in inc.detector
    # Day 11 healthy, day 12 broken again (the streak restarts), days 13-14 healthy: resolved
    # on day 14, the K-th (2nd) consecutive healthy day, not on day 13.
    assert inc.last_degraded_on == day(12)
    assert history.verdict(day(13), "s").state == "recovering"
    assert inc.resolved_on == day(14) and inc.resolution == "healthy"
    assert history.verdict(day(15), "s").incident_id is None
    assert [v.incident_id for v in history.verdicts if v.incident_id] == [inc.incident_id] * 7
    assert inc.peak_drop == HEALTHY.mean - BROKEN.mean and inc.current_drop == 0.0


def test_k_is_configurable_and_a_still_broken_segment_stays_open():
    pattern = [HEALTHY] * 8 + [BROKEN] * 10
    history = run_history(days({"s": pattern}), ONE)
    assert history.incidents[0].resolved_on is None  # open to the end, one incident
    pattern = [HEALTHY] * 8 + [BROKEN] * 2 + [HEALTHY] * 3
    three = run_history(days({"s": pattern}), dataclasses.replace(ONE, resolve_after=3))
    assert three.incidents[0].resolved_on == day(12)


def test_one_message_on_open_and_one_on_resolve():
    pattern = [HEALTHY] * 8 + [BROKEN] * 4 + [HEALTHY] * 3
    history = run_history(days({"s": pattern}), ONE)
    events = planned_events(history.incidents)
    assert [(e["event"], e["day"]) for e in events] == [("opened", day(8)), ("resolved", day(13))]
    assert events[0]["details"]["current_mean"] == BROKEN.mean


def test_hand_ack_and_resolve_are_replayed():
    pattern = [HEALTHY] * 8 + [BROKEN] * 6
    first = run_history(days({"s": pattern}), ONE).incidents[0]
    actions = [
        Action(first.incident_id, "ack", day(9), "bob"),
        Action(first.incident_id, "resolve", day(10), "bob", "rolled back"),
    ]
    history = run_history(days({"s": pattern}), ONE, actions=actions)
    inc = history.incidents[0]
    assert inc.acknowledged_by == "bob"
    assert inc.resolved_on == day(10) and inc.resolution == "manual"


def cause_from(mapping):
    def cause_fn(segment, ref_days, cur_days):
        key = mapping.get(segment)
        return Cause(key, f"cause {key}" if key else "no single dimension explains it")

    return cause_fn


def test_segments_that_open_on_the_same_day_under_one_cause_are_one_incident():
    pattern = {
        "a": [HEALTHY] * 8 + [BROKEN] * 4,
        "b": [HEALTHY] * 8 + [BROKEN] * 4,
        "c": [HEALTHY] * 8 + [BROKEN] * 4,
    }
    causes = {"a": "prompt_version=v2", "b": "prompt_version=v2", "c": None,
              ALL: "prompt_version=v2"}  # fmt: skip
    history = run_history(days(pattern), IncidentConfig(), cause_fn=cause_from(causes))
    by_segments = {tuple(i.segments): i for i in history.incidents}
    assert set(by_segments) == {("a", "b", ALL), ("c",)}
    grouped = by_segments[("a", "b", ALL)]
    assert grouped.incident_id == incident_id(day(8), "a")
    assert grouped.cause_key == "prompt_version=v2"
    assert len(planned_events(history.incidents)) == 2  # two pages, not four


def test_the_same_days_give_the_same_incidents_whatever_order_or_prefix():
    pattern = {
        "a": [HEALTHY] * 8 + [BROKEN] * 4 + [HEALTHY] * 4,
        "b": [HEALTHY] * 10 + [BROKEN] * 5 + [HEALTHY] * 1,
    }
    full = run_history(days(pattern), IncidentConfig())
    shuffled = list(reversed(days(pattern)))
    assert run_history(shuffled, IncidentConfig()) == full
    # Day by day (the schedule): replaying each prefix gives the same rows for those days.
    for n in range(1, 17):
        prefix = [d for d in days(pattern) if d.day < day(n)]
        part = run_history(prefix, IncidentConfig())
        assert part.verdicts == [v for v in full.verdicts if v.day < day(n)]
        assert [i.incident_id for i in part.incidents] == [
            i.incident_id for i in full.incidents if i.detected_on < day(n)
        ]


def test_a_changed_past_day_reaches_the_later_days():
    pattern = [HEALTHY] * 8 + [BROKEN] + [HEALTHY] * 5
    before = run_history(days({"s": pattern}), ONE)
    assert before.incidents and before.incidents[0].opened_on == day(8)
    # Day 8 re-judged healthy (a re-run of the past day): the incident and the
    # "recovering" states of days 9-10 disappear.
    fixed = run_history(days({"s": [HEALTHY] * 14}), ONE)
    assert fixed.incidents == []
    assert fixed.verdict(day(9), "s").state == "healthy"
    assert before.verdict(day(9), "s").state == "recovering"


def test_judge_failures_and_thin_days_give_no_verdict():
    pattern = {"s": [HEALTHY] * 8 + [BROKEN]}
    sd = days(pattern)
    sd[-1] = dataclasses.replace(sd[-1], n_failed=40)  # half the day's judgments failed
    history = run_history(sd, ONE)
    assert history.incidents == []
    assert "judge failures" in history.verdict(day(8), "s").verdict


def test_the_cause_key_is_the_final_attribution_and_agrees_with_its_sentence():
    # On the day of the page one day of data points at a model; over the whole incident
    # the prompt version explains it. The row must not keep the early key.
    def cause_fn(segment, ref_days, cur_days):
        key = "model=m-small" if len(cur_days) == 1 else "prompt_version=v2"
        return Cause(key, f"cause {key}")

    pattern = [HEALTHY] * 8 + [BROKEN] * 4
    inc = run_history(days({"s": pattern}), ONE, cause_fn=cause_fn).incidents[0]
    assert inc.cause_key == "prompt_version=v2" and inc.cause == "cause prompt_version=v2"
