"""Each channel against a real HTTP receiver on 127.0.0.1: Slack escaping, the signed webhook
(verified by a receiver written from the documented scheme), PagerDuty Events API v2."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import httpx
import pytest

from eval_pipeline.core.notify import channels
from eval_pipeline.core.notify.channels import (
    SignatureError,
    make_client,
    send,
    sign,
    slack_escape,
    verify_signature,
)
from eval_pipeline.core.notify.config import ChannelConfig, NotifyConfigError
from eval_pipeline.core.notify.events import IncidentEvent
from eval_pipeline_tests.webhook_server import WebhookReceiver

DAY = dt.date(2026, 11, 28)
SECRET = "whsec-0123456789abcdef"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
EVIL = "<!channel> <http://evil|click>"


def event(kind: str = "opened", **kw) -> IncidentEvent:
    base = dict(
        incident_id="drift-billing-2026-11-28",
        event=kind,
        kind="drift",
        day=DAY,
        title="Quality dropped in billing",
        segments=("billing",),
        details={"reference_mean": 4.6, "current_mean": 3.4, "drop": 1.2, "cause": "v3"},
    )
    base.update(kw)
    return IncidentEvent(**base)


WAITS: list[float] = []


def post(channel: str, ev: IncidentEvent, cfg: ChannelConfig, now: float | None = None):
    with make_client(cfg) as client:
        return send(
            channel,
            ev,
            cfg,
            client,
            delivery_id=f"{ev.incident_id}:{ev.event}",
            now=now,
            sleep=WAITS.append,  # the retry layer's waits, recorded instead of slept
        )


# --- Slack ------------------------------------------------------------------------------


def test_slack_segment_names_cannot_mention_or_link():
    ev = event(
        title=f"Quality dropped in {EVIL}",
        segments=(EVIL, "a&b", "&lt;!here&gt;"),
        details={"cause": "prompt_version <!here>", "ui_url": "http://127.0.0.1/i?x=1&y=2"},
    )
    with WebhookReceiver() as hook:
        res = post("slack", ev, ChannelConfig(slack_url=hook.url))
    assert res.status == "sent" and res.http_status == 200
    (got,) = hook.posts
    text = got["json"]["text"]
    assert "&lt;!channel&gt; &lt;http://evil|click&gt;" in text
    assert "&lt;!here&gt;" in text and "a&amp;b" in text
    # An entity written into the trace is shown as typed, not decoded into a real `<`.
    assert "&amp;lt;!here&amp;gt;" in text
    # The only `<...>` left in the whole message is our own link, with its `&` escaped.
    assert re.findall(r"<[^>]*>", text) == ["<http://127.0.0.1/i?x=1&amp;y=2|Open in the UI>"]


def test_slack_escape_and_newlines_in_untrusted_text():
    assert slack_escape("a & <b> c") == "a &amp; &lt;b&gt; c"
    ev = event(segments=("billing\n:rotating_light: Incident resolved",), title="t\nforged")
    text = channels.slack_text(ev)
    # A newline in trace text cannot start a line that looks like one of ours.
    assert not any(
        line.startswith(":rotating_light: Incident resolved") for line in text.split("\n")
    )
    assert len(text.split("\n")) == 5


def test_a_link_that_could_break_out_is_not_made_a_link():
    ev = event(details={"ui_url": "http://x|<!channel>"})
    assert "<http" not in channels.slack_text(ev)


# --- the signed webhook -----------------------------------------------------------------


def test_signed_webhook_is_verified_by_the_receiver():
    with WebhookReceiver(kind="signed", secret=SECRET) as hook:
        cfg = ChannelConfig(webhook_url=hook.url, webhook_secret=SECRET)
        res = post("webhook", event(segments=(EVIL,)), cfg)
    assert res.status == "sent", res.error
    assert hook.rejected == []
    (got,) = hook.posts
    assert got["json"]["type"] == "incident.opened"
    assert got["json"]["incident_id"] == "drift-billing-2026-11-28"
    assert got["json"]["segments"] == [EVIL]  # JSON consumers get the data as it is
    assert got["headers"]["x-eval-delivery"] == "drift-billing-2026-11-28:opened"
    # The sender's own verifier agrees with the independent one.
    assert verify_signature(SECRET, got["headers"]["x-eval-signature"], got["raw"]) > 0


def test_receiver_rejects_wrong_secret_stale_timestamp_and_tampered_body():
    with WebhookReceiver(kind="signed", secret=SECRET) as hook:
        wrong = ChannelConfig(webhook_url=hook.url, webhook_secret="another-secret-value")
        res = post("webhook", event(), wrong)
        assert (res.status, res.http_status) == ("failed", 401)
        assert "another-secret-value" not in (res.error or "")
        stale = post(
            "webhook",
            event(),
            ChannelConfig(webhook_url=hook.url, webhook_secret=SECRET),
            now=time.time() - 3600,
        )
        assert (stale.status, stale.http_status) == ("failed", 401)
        # Replaying a captured delivery with a changed body fails too.
        body = b'{"type":"incident.resolved"}'
        t = int(time.time())
        header = sign(SECRET, t, b'{"type":"incident.opened"}')
        r = httpx.post(hook.url, content=body, headers={"X-Eval-Signature": header})
        assert r.status_code == 401
    assert hook.rejected == ["bad signature", "stale timestamp", "bad signature"]
    assert hook.posts == []


def test_verify_signature_recipe():
    body = b'{"a":1}'
    now = 1_800_000_000
    header = sign(SECRET, now, body)
    assert verify_signature(SECRET, header, body, now=now + 10) == now
    # Several v1 values during a secret rotation: any one may match.
    rotated = f"{header},v1={'0' * 64}"
    assert verify_signature(SECRET, rotated, body, now=now) == now
    for bad, why in (
        (None, "missing"),
        ("v1=abc", "no valid timestamp"),
        (f"t={now}", "no v1"),
        (header.replace("v1=", "v1=f"), "does not match"),
    ):
        with pytest.raises(SignatureError, match=why):
            verify_signature(SECRET, bad, body, now=now)
    with pytest.raises(SignatureError, match="stale"):
        verify_signature(SECRET, header, body, now=now + 301)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, header, body + b" ", now=now)


# --- PagerDuty --------------------------------------------------------------------------


def test_pagerduty_trigger_and_resolve_pass_the_receivers_checks():
    long_title = "x" * 5000
    with WebhookReceiver(kind="pagerduty", path="/v2/enqueue") as pd:
        cfg = ChannelConfig(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=pd.url)
        opened = post("pagerduty", event(title=long_title, segments=(EVIL,)), cfg)
        resolved = post("pagerduty", event("resolved"), cfg)
        digest = post("pagerduty", event("digest"), cfg)
    assert (opened.status, opened.http_status) == ("sent", 202)
    assert (resolved.status, resolved.http_status) == ("sent", 202)
    assert digest is None  # no PagerDuty message for a reminder
    assert pd.rejected == []
    trigger, resolve = (p["json"] for p in pd.posts)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "drift-billing-2026-11-28"
    assert trigger["routing_key"] == ROUTING_KEY
    assert len(trigger["payload"]["summary"]) == 1024
    assert trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["custom_details"]["cause"] == "v3"
    assert "payload" not in resolve


def test_pagerduty_429_is_retried_briefly_then_left_for_the_next_run():
    WAITS.clear()
    with WebhookReceiver(429, kind="pagerduty", retry_after="4") as pd:
        cfg = ChannelConfig(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=pd.url)
        res = post("pagerduty", event(), cfg)
    assert (res.status, res.http_status, res.retry_after) == ("failed", 429, 4.0)
    assert res.back_off
    assert pd.requests == channels.NOTIFY_POLICY.max_attempts  # the shared layer's retries
    assert len(WAITS) == pd.requests - 1 and all(w >= 4 for w in WAITS)  # Retry-After honoured
    assert ROUTING_KEY not in (res.error or "")


def test_a_5xx_then_success_is_sent_by_the_retry_layer():
    with WebhookReceiver(503, kind="pagerduty") as pd:
        cfg = ChannelConfig(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=pd.url)

        def recover(seconds: float) -> None:
            pd.status = 202  # the receiver comes back during the wait

        with make_client(cfg) as client:
            res = send("pagerduty", event(), cfg, client, delivery_id="x", sleep=recover)
    assert (res.status, res.http_status, pd.requests) == ("sent", 202, 2)


def test_pagerduty_400_is_not_retried_nor_backed_off():
    with WebhookReceiver(400, kind="pagerduty") as pd:
        cfg = ChannelConfig(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=pd.url)
        res = post("pagerduty", event(), cfg)
    assert (res.status, res.http_status, res.back_off, pd.requests) == ("failed", 400, False, 1)


# --- configuration and secrets ----------------------------------------------------------


def test_config_from_env_and_repr_without_secrets():
    env = {
        "EVAL_ALERT_WEBHOOK_URL": "https://hooks.example.test/services/T1/B2/slacksecret123",
        "EVAL_NOTIFY_WEBHOOK_URL": "https://receiver.example.test/in?token=querysecret99",
        "EVAL_NOTIFY_WEBHOOK_SECRET": SECRET,
        "EVAL_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "EVAL_PAGERDUTY_URL": "http://127.0.0.1:9/v2/enqueue",
    }
    cfg = ChannelConfig.from_env(env)
    assert cfg.channels == ("slack", "webhook", "pagerduty")
    shown = repr(cfg)
    for secret in ("slacksecret123", "querysecret99", SECRET, ROUTING_KEY):
        assert secret not in shown
        assert secret not in cfg.scrub(f"error at {secret} and {secret[:4]}")
    assert ChannelConfig.from_env({}).channels == ()
    assert ChannelConfig.from_env({"EVAL_ALERT_WEBHOOK_URL": "  "}).channels == ()


@pytest.mark.parametrize(
    "env, problem",
    [
        ({"EVAL_NOTIFY_WEBHOOK_URL": "https://r.test/hook"}, "EVAL_NOTIFY_WEBHOOK_SECRET"),
        ({"EVAL_ALERT_WEBHOOK_URL": "ftp://x/secretpath123"}, "http"),
        ({"EVAL_NOTIFY_TIMEOUT_S": "soon"}, "number"),
    ],
)
def test_bad_config_is_refused_with_a_reason_and_no_secret(env, problem):
    with pytest.raises(NotifyConfigError, match=problem) as info:
        ChannelConfig.from_env(env)
    assert "secretpath123" not in str(info.value)


def test_a_receiver_echoing_its_secret_path_is_scrubbed():
    with WebhookReceiver(500, echo_path=True, path="/services/T0/B0/echoedtoken42") as hook:
        res = post("slack", event(), ChannelConfig(slack_url=hook.url))
    assert res.status == "failed" and res.http_status == 500
    assert "echoedtoken42" not in res.error and "[redacted]" in res.error


def test_unreachable_receiver_is_a_failure_without_the_url():
    cfg = ChannelConfig(slack_url="http://127.0.0.1:9/hooks/unreachable-secret")
    res = post("slack", event(), cfg)
    assert res.status == "failed" and res.back_off and res.http_status is None
    assert "unreachable-secret" not in res.error


@pytest.mark.parametrize(
    "kw, problem",
    [
        ({"event": "closed"}, "unknown event"),
        ({"incident_id": ""}, "non-empty"),
        ({"incident_id": "x" * 256}, "255"),
        ({"incident_id": "a\nb"}, "control"),
        ({"day": dt.datetime(2026, 11, 28)}, "datetime.date"),
        ({"segments": (1,)}, "strings"),
    ],
)
def test_malformed_events_are_refused_with_a_reason(kw, problem):
    with pytest.raises(ValueError, match=problem):
        event(**kw)


def test_event_round_trips_through_json_with_awkward_details():
    ev = event(details={"drop": float("nan"), "on": DAY, "n": 3, "nested": {"x": (1, 2)}})
    back = IncidentEvent.from_json(json.loads(json.dumps(ev.to_json(), allow_nan=False)))
    assert back.details == {"drop": None, "on": "2026-11-28", "n": 3, "nested": {"x": [1, 2]}}
    assert (back.incident_id, back.day, back.segments) == (ev.incident_id, DAY, ev.segments)


def test_huge_untrusted_text_is_bounded_on_every_channel():
    ev = event(title="t" * 100_000, segments=tuple("s" * 50_000 + str(i) for i in range(500)))
    slack = channels.slack_text(ev)
    body = json.loads(channels.webhook_body(ev, "d"))
    pd = channels.pagerduty_payload(ev, "k", "src")
    assert len(slack) < 5_000 and "and 480 more" in slack
    assert len(body["segments"]) == 200 and body["segments_total"] == 500
    assert len(json.dumps(body)) < 100_000 and len(json.dumps(pd)) < 20_000
