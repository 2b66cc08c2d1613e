"""Incidents at their edges: open, continue, resolve after exactly K healthy days, hand
actions, grouping under one cause, and the same history however the days are replayed."""

from __future__ import annotations

import dataclasses
import datetime as dt

from eval_pipeline.core.drift.cause import Cause, ValueFinding
from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.records import ALL, Action, incident_id, planned_events
from eval_pipeline.core.drift.reference import Counts
from eval_pipeline_tests.drift.incident_data import BROKEN, HEALTHY, day, days

ONE = IncidentConfig(overall=False)
# The plain K-healthy-days rule, without the recovery test (its own tests are below).
PLAIN = IncidentConfig(overall=False, recovery_alpha=None)


def test_open_continue_and_resolve_after_exactly_k_healthy_days():
    pattern = [HEALTHY] * 8 + [BROKEN] * 3 + [HEALTHY, BROKEN] + [HEALTHY] * 3
    history = run_history(days({"s": pattern}), PLAIN)
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
    three = run_history(days({"s": pattern}), dataclasses.replace(PLAIN, resolve_after=3))
    assert three.incidents[0].resolved_on == day(12)


def test_one_message_on_open_and_one_on_resolve():
    pattern = [HEALTHY] * 8 + [BROKEN] * 4 + [HEALTHY] * 3
    history = run_history(days({"s": pattern}), PLAIN)
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
    def cause_fn(segment, ref_days, cur_days, hypothesis=None):
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
    def cause_fn(segment, ref_days, cur_days, hypothesis=None):
        key = "model=m-small" if len(cur_days) == 1 else "prompt_version=v2"
        return Cause(key, f"cause {key}")

    pattern = [HEALTHY] * 8 + [BROKEN] * 4
    inc = run_history(days({"s": pattern}), ONE, cause_fn=cause_fn).incidents[0]
    assert inc.cause_key == "prompt_version=v2" and inc.cause == "cause prompt_version=v2"


def _confirming(confirms: dict[str, float]):
    """A cause_fn: 'big' is caused by prompt_version=v2; a hypothesis about v2 is confirmed
    in a segment of ``confirms`` with that p-value (other segments: nothing named)."""

    def cause_fn(segment, ref_days, cur_days, hypothesis=None):
        if segment == "big":
            return Cause("prompt_version=v2", "cause v2")
        if hypothesis == "prompt_version=v2" and segment in confirms:
            finding = ValueFinding(
                "prompt_version", "v2", 0.3, 0.0, 3.0, 4.2, "other values on the same days",
                None, 1.0, confirms[segment],
            )  # fmt: skip
            return Cause(hypothesis, "cause v2 (tested alone)", finding=finding)
        return Cause(None, "no single dimension explains it")

    return cause_fn


def test_a_segment_below_its_reference_joins_the_incident_of_a_cause_confirmed_in_it():
    slightly_low = Counts((2, 3, 6, 12, 17))  # mean 4.0 vs 4.25: below, no alarm of its own
    low = [HEALTHY] * 8 + [slightly_low] * 3
    pattern = {"big": [HEALTHY] * 8 + [BROKEN] * 3, "small": low, "weak": low, "other": low}
    cause_fn = _confirming({"small": 1e-4, "weak": 0.02})
    history = run_history(days(pattern), ONE, cause_fn=cause_fn)
    (inc,) = [i for i in history.incidents if "big" in i.segments]
    assert "small" in inc.segments and "cause-join" in inc.detector
    # joined once its own CUSUM run had gathered evidence, dated from the run's start
    assert history.verdict(day(8), "small").incident_id == inc.incident_id
    assert len([e for e in planned_events(history.incidents) if e["event"] == "opened"]) == 1
    assert "weak" not in inc.segments  # p = 0.02 is not strong enough for a repeated test
    assert "other" not in inc.segments  # the cause is not confirmed there


# 40 judged traces a day, mean 4.5: clearly at or above the reference of HEALTHY days.
GOOD = Counts((0, 1, 3, 9, 27))
# A segment with 12 judged traces a day: its usual day (mean 4.25), a day 0.08 points low
# (healthy by the day's rule: z under 0.5 at n = 12), a broken day, a good day (4.58).
SMALL_HEALTHY = Counts((0, 1, 1, 4, 6))
SMALL_LOW = Counts((0, 1, 1, 5, 5))
SMALL_BROKEN = Counts((3, 3, 2, 2, 2))
SMALL_GOOD = Counts((0, 0, 1, 3, 8))


def test_a_clear_recovery_resolves_on_the_kth_healthy_day():
    pattern = [HEALTHY] * 8 + [BROKEN] * 3 + [GOOD] * 3
    inc = run_history(days({"s": pattern}), ONE).incidents[0]
    assert inc.resolved_on == day(12) and inc.resolution == "healthy"


def test_a_noisy_segment_needs_more_healthy_days_than_k():
    pattern = [SMALL_HEALTHY] * 10 + [SMALL_BROKEN] * 2 + [SMALL_LOW] * 6 + [SMALL_GOOD] * 4
    plain = run_history(days({"s": pattern}), PLAIN).incidents[0]
    tested = run_history(days({"s": pattern}), ONE).incidents[0]
    assert plain.opened_on == tested.opened_on == day(10)
    assert plain.resolved_on == day(13)  # two plain healthy days on 12 scores each
    # Days 0.08 below the reference on 12 scores each: a 0.2-point drop stays plausible at
    # the recovery test's 20% level until six of them are pooled (72 scores, z = 0.87).
    assert tested.last_degraded_on == day(11)
    assert tested.resolved_on == day(17)
    strict = dataclasses.replace(ONE, recovery_alpha=0.05)
    assert run_history(days({"s": pattern}), strict).incidents[0].resolved_on == day(19)


# Slightly low: each day a shortfall that builds the CUSUM but alarms neither detector.
MILD = Counts((2, 3, 5, 12, 18))  # mean 4.025


# Low enough for the day test (z about 3.4), not for the CUSUM after two MILD days.
LOW = Counts((7, 3, 5, 11, 14))  # mean 3.55


def test_a_day_alarm_after_a_building_cusum_run_keeps_the_run_out_of_the_reference():
    pattern = [HEALTHY] * 10 + [MILD] * 2 + [LOW] * 2 + [HEALTHY] * 6
    history = run_history(days({"s": pattern}), PLAIN)
    # the setup: days 10-11 build a CUSUM run without an alarm, day 12 is a day-test alarm
    for i in (10, 11):
        v = history.verdict(day(i), "s")
        assert v.state == "healthy" and v.cusum > 0
    assert history.incidents[0].detector == "day-test"
    inc = history.incidents[0]
    # The page and the incident's span are unchanged: opened and paged on day 12, the run's
    # days are not inside it.
    assert inc.opened_on == inc.detected_on == day(12)
    assert [e["day"] for e in planned_events([inc]) if e["event"] == "opened"] == [day(12)]
    assert history.verdict(day(11), "s").incident_id is None
    # ... but the run's days never enter the reference after the open.
    assert inc.degraded_since == day(10)
    assert planned_events([inc])[0]["details"]["degraded_since"] == day(10).isoformat()
    assert inc.resolved_on is not None
    after = history.verdict(inc.resolved_on + dt.timedelta(days=1), "s")
    assert after.reference_days == 10 and after.reference_mean == HEALTHY.mean


def test_a_day_alarm_without_a_cusum_run_has_no_earlier_degraded_day():
    pattern = [HEALTHY] * 10 + [BROKEN] * 2 + [HEALTHY] * 6
    history = run_history(days({"s": pattern}), PLAIN)
    inc = history.incidents[0]
    assert inc.opened_on == inc.detected_on == day(10) and inc.degraded_since is None
    assert "degraded_since" not in planned_events([inc])[0]["details"]
    after = history.verdict(inc.resolved_on + dt.timedelta(days=1), "s")
    assert after.reference_days == 10


# The rule that holds a CUSUM run's days out of the reference (by default from S > 3 and
# only for segment-days under 30 judged scores: docs/incidents.md has what it costs in
# false alarms). These segments have 40 a day, so PLAIN does not hold them.
HOLD = dataclasses.replace(PLAIN, hold_run_s=0.0, hold_max_n=None)


def test_a_cusum_runs_days_wait_out_of_the_reference_and_return_when_it_ends():
    pattern = [HEALTHY] * 10 + [MILD] * 2 + [HEALTHY] * 5
    history = run_history(days({"s": pattern}), HOLD)
    assert history.incidents == []
    # Days 10-13 are in a run (S > 0): the reference stays the ten healthy days.
    for i in (10, 11, 12, 13):
        assert history.verdict(day(i), "s").reference_days == 10
        assert history.verdict(day(i), "s").reference_mean == HEALTHY.mean
    assert history.verdict(day(13), "s").cusum > 0 and history.verdict(day(14), "s").cusum == 0
    # Day 14 ends the run without an alarm: its days were noise, all back in the reference.
    assert history.verdict(day(15), "s").reference_days == 15
    assert run_history(days({"s": pattern}), PLAIN).verdict(day(11), "s").reference_days == 11


def test_a_held_run_is_not_absorbed_before_the_cusum_adds_it_up():
    pattern = [HEALTHY] * 10 + [MILD] * 25
    held = run_history(days({"s": pattern}), HOLD)
    inc = held.incidents[0]
    assert inc.detector == "cusum" and inc.opened_on == day(10) and inc.detected_on == day(17)
    assert held.verdict(day(30), "s").reference_mean == HEALTHY.mean
    # By default the run's days enter the trailing reference: the shortfall shrinks day by
    # day, the CUSUM peaks under h and the shift becomes the baseline.
    absorbed = run_history(days({"s": pattern}), PLAIN)
    assert absorbed.incidents == []
    assert absorbed.verdict(day(34), "s").reference_mean == MILD.mean
    # Held only above S = 3, the run's first days (S <= 3) still enter: it pages later.
    late = run_history(days({"s": pattern}), dataclasses.replace(HOLD, hold_run_s=3.0))
    assert late.incidents and late.incidents[0].detected_on > day(17)


def test_the_hold_can_be_kept_to_segments_with_few_judged_scores():
    pattern = [HEALTHY] * 10 + [MILD] * 25  # 40 judged a day
    small_only = run_history(days({"s": pattern}), dataclasses.replace(HOLD, hold_max_n=30))
    assert small_only.incidents == []
    assert small_only.verdict(day(34), "s").reference_mean == MILD.mean
    held = run_history(days({"s": pattern}), dataclasses.replace(HOLD, hold_max_n=41))
    assert held.incidents and held.incidents[0].detected_on == day(17)


def test_a_cusum_alarm_with_the_day_test_is_dated_from_the_jump():
    pattern = [HEALTHY] * 10 + [MILD] * 4 + [BROKEN] * 3 + [HEALTHY] * 4
    history = run_history(days({"s": pattern}), PLAIN)
    inc = history.incidents[0]
    assert history.verdict(day(13), "s").cusum > 0
    assert "cusum" in inc.detector and "day-test" in inc.detector
    # Dated and paged from the jump; the run's days leave the reference all the same.
    assert inc.detected_on == inc.opened_on == day(14)
    assert inc.degraded_since == day(10)
    assert history.verdict(day(11), "s").incident_id is None


def test_the_cause_of_a_several_segment_incident_is_looked_for_in_its_largest_segment():
    small_healthy, small_broken = Counts((1, 1, 2, 6, 10)), Counts((10, 4, 2, 2, 2))
    assert small_broken.mean < BROKEN.mean  # the small segment has the larger drop
    pattern = {
        "big": [HEALTHY] * 8 + [BROKEN] * 4,
        "small": [small_healthy] * 8 + [small_broken] * 4,
    }
    calls = []

    def cause_fn(segment, ref_days, cur_days, hypothesis=None):
        calls.append(segment)
        return Cause("prompt_version=v2", "cause prompt_version=v2")

    history = run_history(days(pattern), ONE, cause_fn=cause_fn)
    assert [sorted(i.segments) for i in history.incidents] == [["big", "small"]]
    # The final attribution (the last call) reads the segment with the most judged scores
    # in the incident, not the one with the largest (noisiest) drop.
    assert calls[-1] == "big"
