"""Drift statistics checked against scipy on fixed data, and the alert rule at its edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eval_pipeline.core.drift.report import (
    ALL_SEGMENTS,
    DriftConfig,
    DriftRow,
    compare,
    decide,
    drift_for_day,
    holm,
    mean_drop_p,
    pinned_drop_p,
    two_proportion_p,
)

TODAY = np.array([5, 4, 4, 3, 2, 5, 4, 1, 3, 4, 5, 2])
BASE = np.array([5, 5, 4, 5, 4, 5, 5, 4, 5, 3, 5, 4, 5, 5, 4, 5])


def test_mean_drop_p_is_one_sided_mann_whitney():
    expected = stats.mannwhitneyu(TODAY, BASE, alternative="less").pvalue
    assert mean_drop_p(TODAY, BASE) == pytest.approx(expected)
    # The direction matters: a rise is not a drop.
    assert mean_drop_p(BASE, TODAY) > 0.5


def test_two_proportion_p_matches_the_pooled_z_formula():
    # 30/100 bad today vs 20/100: pooled 0.25, se = sqrt(.25*.75*(1/100+1/100)) = 0.0612372
    z = (0.30 - 0.20) / np.sqrt(0.25 * 0.75 * 0.02)
    assert z == pytest.approx(1.632993, rel=1e-6)
    assert two_proportion_p(30, 100, 20, 100) == pytest.approx(stats.norm.sf(z))
    assert two_proportion_p(30, 100, 20, 100) == pytest.approx(0.05124, abs=1e-4)
    assert two_proportion_p(0, 10, 0, 10) == 1.0
    assert two_proportion_p(0, 0, 3, 10) is None


def test_pinned_baseline_uses_one_sample_wilcoxon():
    expected = stats.wilcoxon(TODAY - 4.5, alternative="less").pvalue
    assert pinned_drop_p(TODAY, 4.5) == pytest.approx(expected)


def test_compare_fills_every_figure():
    row = compare("billing", TODAY, n_failed=3, baseline=BASE, config=DriftConfig(min_baseline_n=5))
    assert row.n == 12 and row.n_failed == 3
    assert row.failure_rate == pytest.approx(3 / 15)
    assert row.mean_score == pytest.approx(TODAY.mean())
    assert row.p10_score == pytest.approx(np.percentile(TODAY, 10))
    assert row.bad_share == pytest.approx(3 / 12)
    assert row.baseline_mean == pytest.approx(BASE.mean())
    assert row.delta == pytest.approx(TODAY.mean() - BASE.mean())
    assert row.bad_share_p_value == pytest.approx(two_proportion_p(3, 12, 0, 16))


def test_holm_adjustment():
    # Textbook example: p = .01, .04, .03, .005 -> sorted .005*4, .01*3, .03*2, .04*1 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.2]) == [None, 0.2]


def row(delta: float, p: float, n: int = 50, baseline_n: int = 300) -> DriftRow:
    return DriftRow(
        segment="s", n=n, n_failed=0, failure_rate=0.0, mean_score=4.0 + delta,
        p10_score=3.0, bad_share=0.1, baseline_kind="trailing", baseline_days=7,
        baseline_n=baseline_n, baseline_mean=4.0, baseline_bad_share=0.1, delta=delta,
        mean_p_value=p, mean_p_adjusted=p, bad_share_p_value=0.5, alert=False, verdict="",
    )  # fmt: skip


@pytest.mark.parametrize(
    "delta, p, alert",
    [
        (-0.2, 0.049, True),  # exactly at the floor, just significant
        (-0.2, 0.05, False),  # p must be strictly below alpha
        (-0.19, 0.001, False),  # significant but below the practical floor
        (-1.5, 0.2, False),  # a big drop that is not significant
        (+0.5, 0.001, False),  # a rise is never an alert
    ],
)
def test_alert_rule_edges(delta, p, alert):
    got, verdict = decide(row(delta, p), DriftConfig())
    assert got is alert
    assert verdict


def test_no_verdict_without_enough_data():
    cfg = DriftConfig()
    assert decide(row(-1.0, 0.0001, n=9), cfg)[0] is False
    assert "baseline too small" in decide(row(-1.0, 0.0001, baseline_n=99), cfg)[1]


def frame(pairs: list[tuple[str, str, int | None]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["segment", "state", "score"])


def test_drift_for_day_reports_segments_overall_and_failures():
    rng = np.random.default_rng(7)
    base = [("a", "ok", int(s)) for s in rng.choice([4, 5], 400)] + [
        ("b", "ok", int(s)) for s in rng.choice([4, 5], 400)
    ]
    today = (
        [("a", "ok", 1)] * 20
        + [("a", "ok", 5)] * 20
        + [("b", "ok", int(s)) for s in rng.choice([4, 5], 40)]
        + [("b", "error", None)] * 2
    )
    rows = {r.segment: r for r in drift_for_day(frame(today), frame(base), DriftConfig())}
    assert set(rows) == {ALL_SEGMENTS, "a", "b"}
    assert rows["a"].alert and not rows["b"].alert
    assert rows["b"].n_failed == 2 and rows["b"].n == 40
    assert rows[ALL_SEGMENTS].n == 80
    # Holm: the adjusted p is never below the raw one.
    for r in rows.values():
        assert r.mean_p_adjusted >= r.mean_p_value


def test_failed_judgments_are_not_scores():
    today = [("a", "ok", 5)] * 10 + [("a", "unparseable", None)] * 90
    rows = drift_for_day(frame(today), frame([("a", "ok", 5)] * 200), DriftConfig())
    a = next(r for r in rows if r.segment == "a")
    assert a.mean_score == 5.0 and a.failure_rate == pytest.approx(0.9)


def test_a_new_judge_model_starts_a_new_baseline(tmp_path):
    """Scores of another judge model are never the baseline: a model swap is not drift."""
    import datetime as dt

    from eval_pipeline.core import store
    from eval_pipeline.core.drift.report import report_day

    day = dt.date(2026, 10, 10)
    with store.connect(tmp_path / "d.duckdb") as conn:
        for back in range(1, 8):
            for i in range(40):
                conn.execute(
                    "INSERT INTO judge_scores VALUES (?, ?, 'a', ?, 'ok', 5, 'openai', 'm1', 'r', false, 'quality')",
                    [day - dt.timedelta(days=back), f"t{back}-{i}", f"k{back}-{i}"],
                )
        for i in range(40):
            conn.execute(
                "INSERT INTO judge_scores VALUES (?, ?, 'a', ?, 'ok', 3, 'openai', 'm2', 'r', false, 'quality')",
                [day, f"t0-{i}", f"k0-{i}"],
            )
        res = report_day(conn, day)
        assert not res.alerts
        overall = res.overall
        assert overall.baseline_n is None and "no baseline" in overall.verdict
        # The same model a day later has its own (one-day) history.
        conn.execute("UPDATE judge_scores SET judge_model = 'm1' WHERE partition_date = ?", [day])
        assert report_day(conn, day).overall.baseline_n == 280
