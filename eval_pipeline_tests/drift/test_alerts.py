"""Alerts: stored, posted once to a real webhook server, failures recorded, URL never stored."""

from __future__ import annotations

import datetime as dt

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.drift.alerts import alert_day
from eval_pipeline_tests.webhook_server import WebhookReceiver

DAY = dt.date(2026, 10, 22)


@pytest.fixture
def db(tmp_path):
    with store.connect(tmp_path / "a.duckdb") as conn:
        for seg, alert in (("billing", True), ("__all__", True), ("shipping", False)):
            conn.execute(
                "INSERT INTO drift_reports (partition_date, segment, n, n_failed, mean_score, "
                "baseline_kind, baseline_mean, delta, mean_p_value, mean_p_adjusted, alert, "
                "verdict, judge_name) VALUES (?, ?, 50, 0, 3.0, 'trailing', 4.5, -1.5, 1e-6, "
                "2e-6, ?, 'quality dropped', 'heuristic')",
                [DAY, seg, alert],
            )
        yield conn


def deliveries(db):
    return db.execute(
        "SELECT status, http_status, error FROM alert_deliveries ORDER BY attempted_at"
    ).fetchall()


def test_alerts_are_posted_once_even_when_the_day_is_rerun(db):
    with WebhookReceiver() as hook:
        first = alert_day(db, DAY, hook.url)
        again = alert_day(db, DAY, hook.url)
    assert (first.raised, first.sent) == (2, 2)
    assert (again.raised, again.sent, again.already_sent) == (2, 0, 2)
    assert len(hook.posts) == 2
    texts = sorted(p["json"]["text"] for p in hook.posts)
    assert "segment *billing*" in texts[1] and "2026-10-22" in texts[1]
    assert db.execute("SELECT count(*) FROM drift_alerts").fetchone()[0] == 2
    assert [d[0] for d in deliveries(db)] == ["sent", "sent"]


def test_failed_delivery_is_recorded_without_the_secret_and_retried_later(db):
    with WebhookReceiver(status=500) as hook:
        res = alert_day(db, DAY, hook.url)
        assert res.failed == 2 and len(hook.posts) == 6  # 3 attempts each
        hook.status = 200
        res = alert_day(db, DAY, hook.url)
        assert res.sent == 2
    dump = str(db.execute("SELECT * FROM alert_deliveries").fetchall())
    dump += str(db.execute("SELECT * FROM drift_alerts").fetchall())
    assert "secret-token-123" not in dump
    assert [d[0] for d in deliveries(db)] == ["failed", "failed", "sent", "sent"]
    assert deliveries(db)[0][1] == 500


def test_unreachable_webhook_is_a_recorded_failure(db):
    res = alert_day(db, DAY, "http://127.0.0.1:9/hook-secret")
    assert res.failed == 2
    assert all("hook-secret" not in (d[2] or "") for d in deliveries(db))


def test_without_a_webhook_alerts_are_stored_and_marked_not_configured(db):
    res = alert_day(db, DAY, None)
    assert (res.raised, res.not_configured) == (2, 2)
    assert {d[0] for d in deliveries(db)} == {"not_configured"}


def test_an_alert_that_no_longer_holds_is_withdrawn(db):
    alert_day(db, DAY, None)
    db.execute("UPDATE drift_reports SET alert = false WHERE segment = 'billing'")
    res = alert_day(db, DAY, None)
    assert res.raised == 1
    assert db.execute("SELECT list(segment) FROM drift_alerts").fetchone()[0] == ["__all__"]
