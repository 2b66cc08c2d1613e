"""The reference: healthy days only, thin means no verdict, pinned modes, rebaselines."""

from __future__ import annotations

import pytest

from eval_pipeline.core.drift.incidents import IncidentConfig, run_history
from eval_pipeline.core.drift.reference import (
    Counts,
    HistoryDay,
    Rebaseline,
    ReferenceConfig,
    select_reference,
)
from eval_pipeline_tests.drift.incident_data import BROKEN, HEALTHY, day, days

ONE = IncidentConfig(overall=False)


def test_unhealthy_and_other_judge_days_never_enter_the_reference():
    history = [HistoryDay(day(i), HEALTHY, "j", healthy=i != 3) for i in range(8)]
    history.append(HistoryDay(day(8), HEALTHY, "other-judge", healthy=True))
    ref = select_reference(history, day(9), "j", ReferenceConfig(days=21, min_days=5))
    assert day(3) not in ref.days and day(8) not in ref.days
    assert len(ref.days) == 7 and ref.counts.n == 7 * HEALTHY.n and not ref.thin


def test_the_days_of_an_incident_never_enter_the_reference_of_later_days():
    # 10 healthy days, 6 broken ones, then healthy again: the reference mean after the
    # incident is still the healthy one, so the broken days were kept out.
    pattern = [HEALTHY] * 10 + [BROKEN] * 6 + [HEALTHY] * 6
    history = run_history(days({"billing": pattern}), ONE)
    inc = history.incidents[0]
    assert inc.opened_on == day(10)
    for i in range(11, 22):
        v = history.verdict(day(i), "billing")
        assert v.reference_mean == pytest.approx(HEALTHY.mean), (i, v)


def test_a_thin_reference_gives_no_verdict_not_a_page():
    # A broken second day: the reference has one day, so no verdict and no incident.
    history = run_history(days({"new": [HEALTHY, BROKEN, BROKEN, HEALTHY]}), ONE)
    assert history.incidents == []
    assert all(v.state == "no_verdict" for v in history.verdicts)
    assert "no verdict yet" in history.verdict(day(1), "new").verdict


def test_window_and_value_modes():
    history = [HistoryDay(day(i), HEALTHY if i < 5 else BROKEN, "j", True) for i in range(10)]
    window = ReferenceConfig(mode="window", window=(day(0), day(4)), min_days=5)
    ref = select_reference(history, day(10), "j", window)
    assert ref.days == tuple(day(i) for i in range(5)) and ref.mean == HEALTHY.mean
    pinned = select_reference(history, day(10), "j", ReferenceConfig(mode="value", value=4.5))
    assert pinned.mean == 4.5 and not pinned.thin
    with pytest.raises(ValueError, match="window"):
        ReferenceConfig(mode="window")


def test_a_rebaseline_is_an_explicit_act_that_restarts_the_reference():
    pattern = [HEALTHY] * 8 + [BROKEN] * 12
    without = run_history(days({"s": pattern}), ONE)
    assert without.incidents[0].resolved_on is None  # never absorbed: open to the end
    rb = Rebaseline("s", day(12), "v2 prompt is the product now", "alice")
    history = run_history(days({"s": pattern}), ONE, rebaselines=[rb])
    inc = history.incidents[0]
    assert inc.resolved_on == day(12) and inc.resolution == "rebaseline"
    assert inc.resolved_by == "alice"
    # The reference restarts on day 12: thin for 5 days, then the new normal, no page.
    assert history.verdict(day(13), "s").state == "no_verdict"
    assert history.verdict(day(19), "s").reference_mean == pytest.approx(BROKEN.mean)
    assert len(history.incidents) == 1


def test_counts_statistics():
    c = Counts.of([5, 5, 4, 3])
    assert c.n == 4 and c.mean == 4.25 and c.variance == pytest.approx(0.9166, abs=1e-3)
    assert Counts.of([4, 4]).variance > 0  # floored, so a standard error is never zero
    assert (c + c).n == 8
