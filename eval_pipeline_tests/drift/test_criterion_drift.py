"""Drift per criterion: a criterion's own series, baseline and bad threshold; the quality
report unchanged beside it."""

from __future__ import annotations

import datetime as dt

import numpy as np

from eval_pipeline.core import store
from eval_pipeline.core.drift.criteria_history import recompute_criteria
from eval_pipeline.core.drift.history import recompute
from eval_pipeline.core.drift.report import DriftConfig, criterion_reports, report_day

DAY = dt.date(2026, 10, 10)


def _insert(conn, day, criterion, version, scores, segment="docs"):
    conn.executemany(
        "INSERT INTO judge_scores (partition_date, trace_id, segment, judgment_key, state, "
        "score, judge_name, judge_model, rubric_version, cache_hit, criterion) "
        "VALUES (?, ?, ?, ?, 'ok', ?, 'openai', 'm', ?, false, ?)",
        [
            (day, f"{day}-{i}", segment, f"{criterion}-{day}-{i}", int(s), version, criterion)
            for i, s in enumerate(scores)
        ],
    )


def _accounting(conn, day, criterion, bad):
    conn.execute(
        "INSERT INTO judge_accounting_criteria (partition_date, criterion, rubric_version, n, "
        "not_applicable, cache_hits, judge_calls, same_day_duplicates, http_attempts, ok, "
        "unparseable, error, prompt_tokens, completion_tokens, bad_at_or_below) "
        "VALUES (?, ?, 'v', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?)",
        [day, criterion, bad],
    )


def test_a_groundedness_drop_is_reported_on_its_own_series(tmp_path):
    rng = np.random.default_rng(3)
    with store.connect(tmp_path / "d.duckdb") as conn:
        for back in range(0, 8):
            day = DAY - dt.timedelta(days=back)
            quality = rng.choice([3, 4, 5], size=60)
            # Groundedness falls on the last day only: fluent answers that stop following
            # the documents; quality does not move.
            grounded = rng.choice([1, 2, 3], size=60) if back == 0 else rng.choice([4, 5], 60)
            _insert(conn, day, "quality", "quality-v1#x", quality)
            _insert(conn, day, "groundedness", "groundedness-v1#y", grounded)
            _accounting(conn, day, "groundedness", 2)
        cfg = DriftConfig(min_baseline_n=50)
        quality = report_day(conn, DAY, cfg)
        others = criterion_reports(conn, DAY, cfg)
        stored = conn.execute(
            "SELECT criterion, segment, n, alert, bad_at_or_below FROM drift_reports_criteria "
            "ORDER BY segment"
        ).fetchall()
        in_quality = conn.execute("SELECT sum(n) FROM drift_reports").fetchone()[0]
    assert not quality.alerts and quality.overall.n == 60
    assert in_quality == 120  # overall + the one segment, quality only
    (g,) = others.values()
    assert [r.segment for r in g.alerts] == ["__all__", "docs"]
    assert g.alerts[0].verdict.startswith("groundedness dropped")
    assert stored == [
        ("groundedness", "__all__", 60, True, 2),
        ("groundedness", "docs", 60, True, 2),
    ]


def test_a_criterion_threshold_sets_its_bad_share(tmp_path):
    with store.connect(tmp_path / "d.duckdb") as conn:
        _insert(conn, DAY, "safety", "safety-v1#z", [3, 3, 5, 5])
        _accounting(conn, DAY, "safety", 3)
        _insert(conn, DAY, "relevance", "relevance-v1#z", [3, 3, 5, 5])  # no accounting line
        got = criterion_reports(conn, DAY)
        again = criterion_reports(conn, DAY)  # re-running a day replaces it
        count = conn.execute("SELECT count(*) FROM drift_reports_criteria").fetchone()[0]
    assert got["safety"].overall.bad_share == 0.5
    assert got["relevance"].overall.bad_share == 0.0  # the default threshold, 2
    assert set(again) == {"relevance", "safety"} and count == 4


def test_no_other_criterion_means_no_rows(tmp_path):
    with store.connect(tmp_path / "d.duckdb") as conn:
        _insert(conn, DAY, "quality", "quality-v1#x", [4, 5])
        assert criterion_reports(conn, DAY) == {}
        assert conn.execute("SELECT count(*) FROM drift_reports_criteria").fetchone()[0] == 0


def test_a_lasting_criterion_drop_opens_an_incident_of_that_criterion(tmp_path):
    rng = np.random.default_rng(5)
    start = DAY - dt.timedelta(days=29)
    with store.connect(tmp_path / "d.duckdb") as conn:
        for k in range(30):
            day = start + dt.timedelta(days=k)
            _insert(conn, day, "quality", "quality-v1#x", rng.choice([3, 4, 5], size=80))
            dropped = k >= 24  # the last six days stop following the documents
            grounded = rng.choice([1, 2, 3] if dropped else [4, 5], size=80)
            _insert(conn, day, "groundedness", "groundedness-v1#y", grounded)
        histories = recompute_criteria(conn)
        quality = recompute(conn)
        stored = conn.execute(
            "SELECT criterion, incident_id, status, segments FROM drift_incidents_criteria"
        ).fetchall()
        states = conn.execute(
            "SELECT count(*) FROM drift_day_states_criteria WHERE criterion = 'groundedness'"
        ).fetchone()[0]
    assert set(histories) == {"groundedness"}
    assert not quality.incidents
    assert stored and all(
        c == "groundedness" and i.startswith("groundedness:inc-") for c, i, *_ in stored
    )
    assert any(status == "open" for _, _, status, _ in stored)
    assert states == 60  # 30 days x (docs + overall)
