"""The notification lifecycle over real HTTP receivers: one message per (incident, event,
channel) across re-runs and backfills, old days suppressed, failures retried, no secret
stored."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import subprocess
import sys

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.notify import lifecycle as notify
from eval_pipeline.core.notify.lifecycle import (
    ChannelConfig,
    IncidentEvent,
    plan_notifications,
)
from eval_pipeline_tests.webhook_server import WebhookReceiver

TODAY = dt.date(2026, 11, 30)
SECRET = "whsec-notify-test-0123456789"
ROUTING_KEY = "PDKEY-notify-test-abcdef0123456789"
# The shared HTTP layer's waits between retries are not slept in these tests.
deliver = functools.partial(notify.deliver, sleep=lambda seconds: None)


def ev(incident: str, kind: str, day: dt.date, title: str = "Quality dropped", **kw):
    return IncidentEvent(
        incident_id=incident,
        event=kind,
        kind="drift",
        day=day,
        title=title,
        segments=kw.pop("segments", ("billing",)),
        details=kw.pop("details", {"cause": "prompt_version v3"}),
    )


def days_ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


@pytest.fixture
def db(tmp_path):
    with store.connect(tmp_path / "n.duckdb") as conn:
        yield conn


@pytest.fixture
def receivers():
    """A Slack-compatible hook, a signed webhook and PagerDuty, all on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        slack = stack.enter_context(WebhookReceiver(path="/services/T0/B0/slacktoken123"))
        signed = stack.enter_context(WebhookReceiver(kind="signed", secret=SECRET))
        pd = stack.enter_context(WebhookReceiver(kind="pagerduty", path="/v2/enqueue"))
        cfg = ChannelConfig(
            slack_url=slack.url,
            webhook_url=signed.url,
            webhook_secret=SECRET,
            pagerduty_routing_key=ROUTING_KEY,
            pagerduty_url=pd.url,
        )
        yield cfg, {"slack": slack, "webhook": signed, "pagerduty": pd}


def rows(db):
    return db.execute(
        "SELECT incident_id, event, channel, status, attempts FROM notifications "
        "ORDER BY incident_id, event, channel"
    ).fetchall()


def counts(hooks):
    return {name: len(h.posts) for name, h in hooks.items()}


def test_open_and_resolve_are_sent_once_across_reruns_and_a_backfill(db, receivers):
    cfg, hooks = receivers
    opened = ev("inc-1", "opened", days_ago(2))
    first = deliver(db, [opened], cfg, today=TODAY)
    assert (first.sent, first.failed, first.suppressed) == (3, 0, 0)
    # The same day re-run: nothing new.
    again = deliver(db, [opened], cfg, today=TODAY)
    assert (again.sent, again.already_sent) == (0, 3)
    # A ranged backfill over the last days re-emits the opening and adds the resolve.
    backfill = [opened, ev("inc-1", "digest", days_ago(1)), ev("inc-1", "resolved", TODAY)]
    third = deliver(db, backfill, cfg, today=TODAY)
    assert (third.sent, third.already_sent, third.skipped) == (3, 3, 3)
    assert counts(hooks) == {"slack": 2, "webhook": 2, "pagerduty": 2}
    assert [p["json"]["event_action"] for p in hooks["pagerduty"].posts] == ["trigger", "resolve"]
    assert hooks["webhook"].rejected == [] and hooks["pagerduty"].rejected == []
    assert {r[3] for r in rows(db)} == {"sent"} and len(rows(db)) == 6
    assert all(r[4] == 1 for r in rows(db))


def test_a_history_backfill_does_not_page_for_incidents_that_ended_long_ago(db, receivers):
    cfg, hooks = receivers
    history = [
        ev("old", "opened", days_ago(40)),
        *(ev("old", "digest", days_ago(n)) for n in range(39, 30, -1)),
        ev("old", "resolved", days_ago(30)),
    ]
    report = deliver(db, history, cfg, today=TODAY)
    assert report.sent == 0 and report.suppressed == 6  # opened + resolved on 3 channels
    assert report.suppressed_reasons == {"old": 6}
    assert counts(hooks) == {"slack": 0, "webhook": 0, "pagerduty": 0}
    reasons = {r[0] for r in db.execute("SELECT reason FROM notifications").fetchall()}
    assert reasons == {f"old: {days_ago(n)} is before {days_ago(3)}" for n in (40, 30)}
    # Re-running the backfill still pages nobody.
    assert deliver(db, history, cfg, today=TODAY).sent == 0


def test_an_old_incident_still_open_is_announced_once_late_and_resolved(db, receivers):
    cfg, hooks = receivers
    # Opened 20 days ago (the backfill reaches it now), still open yesterday.
    history = [ev("long", "opened", days_ago(20))]
    history += [ev("long", "digest", days_ago(n)) for n in range(19, 0, -1)]
    report = deliver(db, history, cfg, today=TODAY)
    assert report.sent == 3  # one late opening per channel (PagerDuty: a trigger)
    assert counts(hooks) == {"slack": 1, "webhook": 1, "pagerduty": 1}
    assert (
        "Incident opened on " + days_ago(3).isoformat() in hooks["slack"].posts[0]["json"]["text"]
    )
    # The daily run of today: still open, then resolved: only the resolve goes out.
    deliver(db, [ev("long", "digest", TODAY)], cfg, today=TODAY)
    deliver(db, [ev("long", "resolved", TODAY)], cfg, today=TODAY)
    assert counts(hooks) == {"slack": 2, "webhook": 2, "pagerduty": 2}
    statuses = {(r[1], r[2]): r[3] for r in rows(db)}
    assert statuses[("opened", "pagerduty")] == "sent"
    assert statuses[("resolved", "pagerduty")] == "sent"


def test_a_resolve_for_an_incident_never_announced_is_suppressed(db, receivers):
    cfg, hooks = receivers
    deliver(db, [ev("x", "opened", days_ago(10))], cfg, today=TODAY)
    report = deliver(db, [ev("x", "resolved", days_ago(1))], cfg, today=TODAY)
    assert (report.sent, report.suppressed_reasons) == (0, {"never opened": 3})
    assert counts(hooks) == {"slack": 0, "webhook": 0, "pagerduty": 0}


def test_digest_is_off_by_default_and_once_a_day_when_on(db, receivers):
    cfg, hooks = receivers
    deliver(db, [ev("d", "opened", days_ago(2))], cfg, today=TODAY)
    assert deliver(db, [ev("d", "digest", days_ago(1))], cfg, today=TODAY).sent == 0
    on = [ev("d", "digest", days_ago(1)), ev("d", "digest", TODAY)]
    assert deliver(db, on, cfg, today=TODAY, digest=True).sent == 4  # not on PagerDuty
    assert deliver(db, on, cfg, today=TODAY, digest=True).sent == 0
    assert counts(hooks) == {"slack": 3, "webhook": 3, "pagerduty": 1}
    assert hooks["webhook"].posts[-1]["json"]["type"] == "incident.digest"


def test_failed_delivery_is_recorded_and_retried_by_the_next_run(db, receivers):
    cfg, hooks = receivers
    hooks["slack"].status = 500
    hooks["pagerduty"].status = 429
    report = deliver(db, [ev("f", "opened", days_ago(1))], cfg, today=TODAY)
    assert (report.sent, report.failed) == (1, 2)
    failed = {r[2]: r for r in rows(db) if r[3] == "failed"}
    assert set(failed) == {"slack", "pagerduty"} and all(r[4] == 1 for r in failed.values())
    # The next day's run has no event for this incident: the failures are retried anyway.
    hooks["slack"].status, hooks["pagerduty"].status = 200, 202
    nxt = deliver(db, [], cfg, today=TODAY + dt.timedelta(days=1))
    assert (nxt.sent, nxt.retried_earlier, nxt.failed) == (2, 2, 0)
    assert {r[3] for r in rows(db)} == {"sent"}
    assert {r[2]: r[4] for r in rows(db)} == {"slack": 2, "webhook": 1, "pagerduty": 2}
    assert deliver(db, [], cfg, today=TODAY + dt.timedelta(days=2)).sent == 0
    # Each failing run made the HTTP layer's three tries; each success one post.
    assert counts(hooks) == {"slack": 4, "webhook": 1, "pagerduty": 4}


def test_a_failure_that_outlives_the_window_is_suppressed_not_sent_late(db, receivers):
    cfg, hooks = receivers
    hooks["slack"].status = 503
    deliver(db, [ev("w", "opened", days_ago(1))], cfg, today=TODAY)
    hooks["slack"].status = 200
    later = deliver(db, [], cfg, today=TODAY + dt.timedelta(days=10))
    assert (later.sent, later.suppressed) == (0, 1)
    assert len(hooks["slack"].posts) == 3  # only the first run's three tries


def test_an_unreachable_channel_is_not_hammered_within_a_run(db, receivers):
    cfg, hooks = receivers
    dead = ChannelConfig(slack_url="http://127.0.0.1:9/services/T/B/deadtoken99")
    events = [ev(f"u{i}", "opened", TODAY) for i in range(3)]
    report = deliver(db, events, dead, today=TODAY)
    assert report.failed == 3
    attempts = [r[4] for r in rows(db)]
    assert sorted(attempts) == [0, 0, 1]  # one real attempt, two left for the next run


def test_no_secret_is_stored_or_reported_even_when_receivers_echo_it(db, receivers):
    cfg, hooks = receivers
    for hook in hooks.values():
        hook.status, hook.echo_path = 500, True
    report = deliver(db, [ev("s", "opened", TODAY)], cfg, today=TODAY)
    assert report.failed == 3
    assert any("slacktoken123" in p["path"] for p in hooks["slack"].posts)  # it was echoed
    dump = json.dumps(db.execute("SELECT * FROM notifications").fetchall(), default=str)
    dump += repr(report) + json.dumps(report.as_metadata()) + repr(cfg)
    for secret in ("slacktoken123", SECRET, ROUTING_KEY, "/services/T0/B0", "secret-token-123"):
        assert secret not in dump
    assert "[redacted]" in dump


def test_untrusted_text_reaches_slack_escaped_through_the_lifecycle(db, receivers):
    cfg, hooks = receivers
    evil = "<!channel> <http://evil|click>"
    deliver(
        db, [ev("e", "opened", TODAY, title=f"drop in {evil}", segments=(evil,))], cfg, today=TODAY
    )
    text = hooks["slack"].posts[0]["json"]["text"]
    assert "<!channel>" not in text and "<http://evil" not in text
    assert "&lt;!channel&gt; &lt;http://evil|click&gt;" in text


def test_the_store_is_not_held_while_a_receiver_answers(tmp_path, receivers):
    cfg, hooks = receivers
    path = tmp_path / "phases.duckdb"
    # DuckDB's write lock is per process: only another process can show it is free.
    probe = [sys.executable, "-c", f"import duckdb; duckdb.connect({str(path)!r}).close()"]
    probes = []
    hooks["slack"].on_post = lambda: probes.append(
        subprocess.run(probe, capture_output=True, timeout=60).returncode
    )
    events = [ev("p", "opened", TODAY)]
    connect = functools.partial(store.connect, path)
    report = notify.deliver_in_phases(connect, events, cfg, today=TODAY)
    assert report.sent == 3 and probes == [0]
    with store.connect(path) as conn:
        assert len(rows(conn)) == 3
        assert plan_notifications(conn, events, cfg, today=TODAY).already_sent == 3


def test_without_channels_nothing_is_sent_or_recorded(db):
    report = deliver(db, [ev("n", "opened", TODAY)], ChannelConfig(), today=TODAY)
    assert (report.events, report.sent, report.channels) == (1, 0, ())
    assert rows(db) == []


def test_a_dry_run_without_a_store_sends_each_event_once(receivers):
    cfg, hooks = receivers
    same = ev("dry", "opened", TODAY)
    report = deliver(None, [same, same], cfg, today=TODAY)
    assert report.sent == 3 and counts(hooks) == {"slack": 1, "webhook": 1, "pagerduty": 1}
