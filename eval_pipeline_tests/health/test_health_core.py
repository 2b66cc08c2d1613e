"""The health incident lifecycle and the freshness rule as plain Python, on a real store."""

from __future__ import annotations

import datetime as dt

import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.health import freshness
from eval_pipeline.core.health import incidents as health
from eval_pipeline.core.health.config import HealthConfig

T0 = dt.datetime(2026, 11, 20, 2, 10)
DAY = dt.date(2026, 11, 19)
WINDOW = dt.timedelta(minutes=20)


@pytest.fixture
def conn():
    with store.connect(settings.duckdb_path()) as c:
        yield c


def failure(run_id: str, at: dt.datetime = T0, scope: str = DAY.isoformat(), **kw):
    return health.RunOutcome(
        job="daily_drift_job", scope=scope, run_id=run_id, at=at, step="raw_traces",
        error="PhoenixUnavailable: down", **kw,
    )  # fmt: skip


def success(run_id: str, at: dt.datetime, scope: str = DAY.isoformat()):
    return health.RunOutcome(job="daily_drift_job", scope=scope, run_id=run_id, at=at)


def test_open_extend_resolve(conn):
    out = health.record_failure(conn, failure("r1"), retry_window=dt.timedelta(0))
    [ev] = out.events
    assert (ev.event, ev.kind, ev.day) == ("opened", "pipeline", DAY)
    assert ev.details["cause"] == "PhoenixUnavailable: down" and ev.details["step"] == "raw_traces"
    again = health.record_failure(conn, failure("r2", T0 + dt.timedelta(hours=1)))
    assert again.events == []
    [inc] = health.open_incidents(conn)
    assert inc.failures == 2 and inc.run_id == "r2" and inc.incident_id == ev.incident_id
    # The same run seen twice does not count twice.
    health.record_failure(conn, failure("r2", T0 + dt.timedelta(hours=1)))
    assert health.open_incidents(conn)[0].failures == 2
    # Another day of the same job is another incident; its success does not resolve this one.
    health.record_failure(conn, failure("r3", scope="2026-11-18"), retry_window=dt.timedelta(0))
    assert health.record_success(conn, success("s0", T0, scope="2026-11-18")).events
    [still] = health.open_incidents(conn)
    assert still.scope == DAY.isoformat()
    done = health.record_success(conn, success("s1", T0 + dt.timedelta(hours=2)))
    [resolved] = done.events
    assert resolved.event == "resolved" and resolved.incident_id == ev.incident_id
    assert health.open_incidents(conn) == []
    # After recovery a new failure is a new incident.
    new = health.record_failure(
        conn, failure("r4", T0 + dt.timedelta(days=1)), retry_window=dt.timedelta(0)
    )
    assert new.events[0].incident_id != ev.incident_id


def test_a_ranged_success_resolves_the_days_inside_it_only(conn):
    for day in ("2026-11-10", "2026-11-12", "2026-11-15"):
        health.record_failure(conn, failure(f"f{day}", scope=day), retry_window=dt.timedelta(0))
    out = health.record_success(conn, success("range", T0, scope="2026-11-10...2026-11-12"))
    assert sorted(e.details["scope"] for e in out.events) == ["2026-11-10", "2026-11-12"]
    assert [i.scope for i in health.open_incidents(conn)] == ["2026-11-15"]


def test_the_retry_window_keeps_a_quick_recovery_silent(conn):
    out = health.record_failure(conn, failure("r1"), retry_window=WINDOW)
    assert out.events == [] and not out.touched[0].paged
    assert (
        health.due_pages(
            conn, now=T0 + WINDOW - dt.timedelta(seconds=1), retry_window=WINDOW
        ).events
        == []
    )
    quiet = health.record_success(conn, success("retry", T0 + dt.timedelta(minutes=5)))
    assert quiet.events == [] and quiet.touched[0].resolution == "recovered before paging"
    assert health.due_pages(conn, now=T0 + 2 * WINDOW, retry_window=WINDOW).events == []


def test_a_failure_outlasting_the_window_is_paged_once(conn):
    health.record_failure(conn, failure("r1"), retry_window=WINDOW)
    [ev] = health.due_pages(conn, now=T0 + WINDOW, retry_window=WINDOW).events
    assert ev.event == "opened"
    assert health.due_pages(conn, now=T0 + 2 * WINDOW, retry_window=WINDOW).events == []
    [resolved] = health.record_success(conn, success("s", T0 + 3 * WINDOW)).events
    assert resolved.event == "resolved"


def test_a_missing_day_pages_at_once_unless_the_day_is_already_open(conn):
    now = dt.datetime(2026, 11, 20, 6, 0)
    [ev] = health.record_missing(conn, "daily_drift_job", DAY, "no drift report", now=now).events
    assert ev.title == f"daily_drift_job for {DAY}: no report by the deadline"
    assert (
        health.record_missing(conn, "daily_drift_job", DAY, "no drift report", now=now).events == []
    )
    other = dt.date(2026, 11, 18)
    health.record_failure(conn, failure("r", scope=other.isoformat()), retry_window=dt.timedelta(0))
    assert health.record_missing(conn, "daily_drift_job", other, "late", now=now).events == []
    assert len(health.open_incidents(conn)) == 2


def test_first_line_is_scrubbed_before_the_cut_and_drops_the_module_path():
    key = "sk-abcdefghijklmnop1234567890"
    text = f"pkg.mod.JudgeError: call failed with {key}\nsecond line {key}"
    line = health.first_line(text, [key])
    assert line.startswith("JudgeError: call failed with ") and key not in line
    assert "second line" not in line
    assert health.first_line("x" * 1000).endswith("…") and len(health.first_line("x" * 1000)) == 300
    assert health.first_line("") == "no error message"
    # A bare key shape is scrubbed even when nobody named it.
    assert "sk-" not in health.first_line("Bearer sk-zzzzzzzzzzzzzzzz99 refused")


def test_run_url_only_for_a_plain_http_base():
    assert health.run_url("http://ui:3000/", "abc") == "http://ui:3000/runs/abc"
    assert health.run_url(None, "abc") is None
    assert health.run_url("javascript:alert(1)", "abc") is None
    assert health.run_url("http://ui|evil", "abc") is None


def test_freshness_rule_edges():
    rule = freshness.FreshnessRule()
    d = dt.date(2026, 11, 19)
    assert rule.latest_due(dt.datetime(2026, 11, 20, 5, 59, 59)) == d - dt.timedelta(days=1)
    assert rule.latest_due(dt.datetime(2026, 11, 20, 6, 0)) == d
    assert rule.expected_days(dt.datetime(2026, 11, 20, 6, 0)) == [
        d, d - dt.timedelta(days=1), d - dt.timedelta(days=2),
    ]  # fmt: skip
    reported = {d - dt.timedelta(days=1), d - dt.timedelta(days=2)}
    assert rule.missing(dt.datetime(2026, 11, 20, 5, 59), reported) == [d - dt.timedelta(days=3)]
    assert rule.missing(dt.datetime(2026, 11, 20, 6, 0), reported) == [d]
    # Never a day before the first partition.
    early = freshness.FreshnessRule(first_day=dt.date(2026, 1, 1))
    assert early.expected_days(dt.datetime(2026, 1, 2, 7, 0)) == [dt.date(2026, 1, 1)]


def test_settings_from_the_environment_are_checked():
    rule = freshness.FreshnessRule.from_env(
        {"EVAL_HEALTH_DEADLINE": "09:30", "EVAL_HEALTH_LOOKBACK_DAYS": "1"}
    )
    assert rule.deadline == dt.time(9, 30) and rule.lookback_days == 1
    with pytest.raises(ValueError, match="EVAL_HEALTH_DEADLINE"):
        freshness.FreshnessRule.from_env({"EVAL_HEALTH_DEADLINE": "6am"})
    with pytest.raises(ValueError, match="EVAL_HEALTH_RETRY_WINDOW_MINUTES"):
        HealthConfig.from_env({"EVAL_HEALTH_RETRY_WINDOW_MINUTES": "-5"})
    cfg = HealthConfig.from_env({"EVAL_HEALTH_RETRY_WINDOW_MINUTES": "0", "EVAL_UI_BASE_URL": " "})
    assert cfg.retry_window == dt.timedelta(0) and cfg.ui_base_url is None


def test_heartbeat_is_stale_until_the_expected_day_has_a_report():
    rule = freshness.FreshnessRule(lookback_days=1)
    now = dt.datetime(2026, 11, 20, 6, 30)
    stale = freshness.heartbeat(rule, now, {dt.date(2026, 11, 18)}, ("run-a", now), 1)
    assert stale.stale and stale.as_json()["missing_days"] == ["2026-11-19"]
    assert "status: stale" in stale.text() and "run run-a" in stale.text()
    ok = freshness.heartbeat(rule, now, {dt.date(2026, 11, 19)}, ("run-b", now), 0)
    assert not ok.stale and ok.as_json()["last_successful_day"] == "2026-11-19"
    assert freshness.heartbeat(rule, now, set(), None, None).stale
