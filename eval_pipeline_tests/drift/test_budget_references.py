"""The follow-up and the stated MDE use the incident engine's own reference: for every
stored day, ``history.references_on`` gives the reference the replay tested that day
against (other judges' days, incident days and held CUSUM-run days left out)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from eval_pipeline.core import store
from eval_pipeline.core.drift import budget
from eval_pipeline.core.drift import history as incident_history
from eval_pipeline.core.drift.incidents import IncidentConfig
from eval_pipeline.core.drift.records import ALL

START = dt.date(2026, 9, 1)
HEALTHY = [0.03, 0.05, 0.12, 0.35, 0.45]
WORSE = [0.15, 0.10, 0.15, 0.30, 0.30]


@pytest.fixture
def conn(tmp_path):
    rng = np.random.default_rng(7)
    with store.connect(tmp_path / "s.duckdb") as c:
        rows = []
        for d in range(45):
            day = START + dt.timedelta(days=d)
            model = "m2" if d == 12 else "m1"  # one day by another judge
            for seg, n in (("big", 60), ("small", 12)):
                p = WORSE if seg == "small" and 25 <= d < 38 else HEALTHY
                for i, s in enumerate(rng.choice(np.arange(1, 6), size=n, p=p)):
                    rows.append((day, f"{d}-{seg}-{i}", seg, f"k{d}-{seg}-{i}", int(s), model))
        c.executemany(
            "INSERT INTO judge_scores (partition_date, trace_id, segment, judgment_key, state, "
            "score, judge_name, judge_model, rubric_version, cache_hit, criterion) "
            "VALUES (?, ?, ?, ?, 'ok', ?, 'llm', ?, 'r1', false, 'quality')",
            rows,
        )
        yield c


def test_every_days_reference_is_the_one_the_engine_tested_against(conn):
    config = IncidentConfig()
    history = incident_history.recompute(conn, config)
    verdicts = {(v.day, v.segment): v for v in history.verdicts}
    held_or_excluded = 0
    for d in range(1, 45):
        day = START + dt.timedelta(days=d)
        refs = incident_history.references_on(conn, day, config)
        assert set(refs) == {"big", "small", ALL}
        for seg in ("big", "small"):
            v, ref = verdicts[(day, seg)], refs[seg]
            assert len(ref.days) == v.reference_days
            if v.reference_mean is not None:
                assert not ref.thin
                assert ref.counts.n == v.reference_n
                assert ref.counts.mean == pytest.approx(v.reference_mean)
            # The old approximation: the last 21 days whose state was 'healthy'.
            healthy = sorted(
                x.day for x in history.verdicts
                if x.segment == seg and x.state == "healthy" and x.day < day
            )[-21:]  # fmt: skip
            held_or_excluded += tuple(healthy) != ref.days
    assert held_or_excluded > 0  # the engine's reference is not the 'healthy' days' one
    # Another judge's day has no reference of its own judge: no verdict, as the engine says.
    assert incident_history.references_on(conn, START + dt.timedelta(days=12))["big"].thin


def test_day_references_carry_the_engines_reference_into_the_follow_up_and_mde(conn):
    incident_history.recompute(conn)
    day = START + dt.timedelta(days=30)
    engine = incident_history.references_on(conn, day)
    refs = budget.day_references(conn, day)
    for seg, ref in engine.items():
        assert refs[seg].counts == ref.counts and refs[seg].tau2 == ref.between_day_var
        assert refs[seg].days == len(ref.days) and refs[seg].thin_reason == ref.thin_reason
    assert incident_history.references_on(conn, START + dt.timedelta(days=60)) == {}
