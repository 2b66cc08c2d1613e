"""Where incident notifications go: three channels, one message per (incident, event).

- ``slack``: a Slack-compatible incoming webhook (``EVAL_ALERT_WEBHOOK_URL``), JSON
  ``{"text": ...}``. Every piece of text is escaped (``&`` ``<`` ``>``) because segment names
  and causes come from trace content, which any end user of the LLM app can write.
- ``webhook``: a generic JSON webhook (``EVAL_NOTIFY_WEBHOOK_URL``) signed with
  HMAC-SHA256(secret, ``timestamp + "." + body``) in ``X-Eval-Signature: t=<unix>,v1=<hex>``
  (``EVAL_NOTIFY_WEBHOOK_SECRET``), as Stripe and GitHub sign theirs; ``verify_signature`` is
  the receiver's side.
- ``pagerduty``: PagerDuty Events API v2 (``EVAL_PAGERDUTY_ROUTING_KEY``), ``trigger`` on
  open and ``resolve`` on resolve with the incident id as ``dedup_key``.

Secrets (the routing key, the HMAC secret, and both webhook URLs, whose path is the
credential) come from the environment only and never reach a log, the store, an error
message or a ``repr``. Each delivery goes through the shared HTTP layer (``core/http.py``):
a few quick retries on 429 (honouring Retry-After), 5xx, timeouts and connection errors
within a short deadline; after that the delivery is a recorded failure and the next run tries
again (the ``notifications`` table remembers it), so a slow receiver cannot stall the
pipeline. Error text is scrubbed by the same layer before it is cut.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from eval_pipeline.core.http import (
    GaveUp,
    RetryPolicy,
    excerpt,
    parse_retry_after,
    request_with_retries,
)
from eval_pipeline.core.notify.config import ChannelConfig
from eval_pipeline.core.notify.events import (
    DIGEST,
    OPENED,
    PAGERDUTY,
    RESOLVED,
    SLACK,
    WEBHOOK,
    IncidentEvent,
    jsonable,
)

PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
PAGERDUTY_MAX_SUMMARY = 1024

SIGNATURE_HEADER = "X-Eval-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300

OK_STATUSES = (200, 201, 202, 204)  # Slack answers 200 "ok"; compatible receivers 200/204
MAX_SEGMENTS_SHOWN = 20
MAX_WEBHOOK_SEGMENTS = 200
MAX_PIECE_CHARS = 300  # one segment name, cause or detail value in a message
MAX_ERROR_CHARS = 300
# A notification is worth a few seconds, not the run: three tries within 30 s, a
# Retry-After longer than 10 s is left for the next run.
NOTIFY_POLICY = RetryPolicy(
    max_attempts=3, backoff_base=0.5, backoff_max=5.0, max_retry_after=10.0, deadline=30.0
)


# --- rendering --------------------------------------------------------------------------


def _cut(text: str, limit: int = MAX_PIECE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Slack's three control characters as entities.

    Slack only turns text into a mention, a channel ping or a link inside ``<...>``
    (``<!channel>``, ``<!here>``, ``<@U123>``, ``<http://evil|click>``); a bare ``@here`` or
    ``@channel`` in a webhook's text is not a mention. So escaping ``<`` and ``>`` (and ``&``,
    so an entity cannot be smuggled in pre-escaped) is enough to make trace text inert.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    # A newline in a segment name must not start a line that looks like ours.
    return " ".join(str(text).split())


def _detail_lines(event: IncidentEvent) -> list[tuple[str, str]]:
    d = event.details
    lines = []

    def num(key: str) -> str | None:
        value = d.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{value:.2f}" if math.isfinite(value) else None
        return None

    ref, cur, drop = num("reference_mean"), num("current_mean"), num("drop")
    if ref or cur:
        text = f"{cur or '?'} vs reference {ref or '?'}"
        if drop:
            text += f" (drop {drop})"
        lines.append(("Mean score", text))
    for key, label in (("detector", "Detector"), ("cause", "Cause"), ("opened_on", "Open since")):
        if d.get(key) not in (None, ""):
            lines.append((label, _cut(_one_line(str(d[key])))))
    return lines


def _safe_link(url: Any) -> str | None:
    """``url`` if it is a plain http(s) URL that cannot break out of Slack's ``<url|text>``."""
    if not isinstance(url, str) or len(url) > 2000:
        return None
    if not re.fullmatch(r"https?://[^\s<>|]+", url):
        return None
    return url


HEADLINES = {
    OPENED: ":rotating_light: Incident opened",
    RESOLVED: ":white_check_mark: Incident resolved",
    DIGEST: ":hourglass: Incident still open",
}


def slack_text(event: IncidentEvent) -> str:
    """The message text; every piece that is not ours is cut, put on one line and escaped."""
    esc = slack_escape
    head = f"{HEADLINES[event.event]} on {event.day.isoformat()}: {esc(_cut(_one_line(event.title), 500))}"
    lines = [head]
    if event.segments:
        shown = [esc(_cut(_one_line(s), 100)) for s in event.segments[:MAX_SEGMENTS_SHOWN]]
        more = len(event.segments) - len(shown)
        lines.append("Segments: " + ", ".join(shown) + (f" and {more} more" if more else ""))
    for label, value in _detail_lines(event):
        lines.append(f"{label}: {esc(value)}")
    link = _safe_link(event.details.get("ui_url"))
    if link:
        lines.append(f"<{esc(link)}|Open in the UI>")
    lines.append(f"Incident {esc(event.incident_id)} ({esc(_one_line(event.kind))})")
    return "\n".join(lines)


def slack_payload(event: IncidentEvent) -> dict[str, Any]:
    return {"text": slack_text(event)}


def webhook_body(event: IncidentEvent, delivery_id: str) -> bytes:
    """The generic webhook's JSON body, as the exact bytes that are signed and sent.

    Text is passed as it is (JSON consumers escape for their own output) but bounded: a
    segment name is trace content and may be huge."""
    data = {"type": f"incident.{event.event}", "delivery_id": delivery_id, **event.to_json()}
    data["title"] = _cut(event.title, PAGERDUTY_MAX_SUMMARY)
    data["segments"] = [_cut(s) for s in event.segments[:MAX_WEBHOOK_SEGMENTS]]
    data["segments_total"] = len(event.segments)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Eval-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class SignatureError(ValueError):
    """A webhook delivery whose signature does not verify (the reason says why)."""


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """The receiver's check; returns the signed timestamp or raises ``SignatureError``.

    Recompute HMAC-SHA256(secret, ``t + "." + raw body``) over the body bytes exactly as
    received (not re-serialised JSON), compare in constant time against every ``v1`` (more
    than one during a secret rotation), and refuse a timestamp more than ``tolerance_s``
    away from now so a captured delivery cannot be replayed later.
    """
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp, candidates = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not timestamp.isdigit():
        raise SignatureError("no valid timestamp in the signature header")
    if not candidates:
        raise SignatureError("no v1 signature in the signature header")
    t = int(timestamp)
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        raise SignatureError(f"timestamp is {abs(now - t):.0f}s away from now (stale or replayed)")
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match")
    return t


def pagerduty_payload(event: IncidentEvent, routing_key: str, source: str) -> dict[str, Any] | None:
    """The Events API v2 body: ``trigger`` for opened, ``resolve`` for resolved; a digest has
    no PagerDuty counterpart (an open alert is its own reminder), so ``None``."""
    if event.event == DIGEST:
        return None
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "dedup_key": event.incident_id,
        "event_action": "trigger" if event.event == OPENED else "resolve",
    }
    if event.event == RESOLVED:
        return body
    severity = event.details.get("severity")
    summary = f"{_one_line(event.title)} (since {event.day.isoformat()})"
    payload: dict[str, Any] = {
        "summary": _cut(summary, PAGERDUTY_MAX_SUMMARY),
        "source": source,
        "severity": severity if severity in PAGERDUTY_SEVERITIES else "error",
        "component": _cut(_one_line(event.kind), 100),
        "class": _cut(_one_line(str(event.details.get("detector") or "drift")), 100),
        "custom_details": {
            "incident_id": event.incident_id,
            "day": event.day.isoformat(),
            "segments": [_cut(s) for s in event.segments[:MAX_SEGMENTS_SHOWN]],
            **{str(k): v for k, v in jsonable(event.details).items()},
        },
    }
    if event.segments:
        payload["group"] = _cut(_one_line(", ".join(event.segments[:5])), 100)
    body["payload"] = payload
    link = _safe_link(event.details.get("ui_url"))
    if link:
        body["links"] = [{"href": link, "text": "Incident in the eval pipeline UI"}]
    return body


# --- sending ----------------------------------------------------------------------------


@dataclass
class SendResult:
    """One attempt's outcome. ``error`` is already scrubbed of every secret."""

    status: str  # 'sent' | 'failed'
    http_status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # the receiver asked us to wait (429)
    back_off: bool = False  # stop sending to this channel for the rest of the run


def _post(
    client: httpx.Client,
    config: ChannelConfig,
    url: str,
    body: bytes,
    headers: dict[str, str],
    ok: tuple[int, ...],
    policy: RetryPolicy,
    sleep: Callable[[float], Any],
) -> SendResult:
    secrets = config.secrets()
    try:
        resp = request_with_retries(
            client, "POST", url, policy=policy, secrets=secrets, sleep=sleep,
            content=body, headers=headers,
        )  # fmt: skip
    except GaveUp as exc:
        # 429, 5xx or no answer, still so after the retries: leave the channel for this run.
        last = exc.response
        return SendResult(
            "failed",
            http_status=last.status_code if last is not None else None,
            error=excerpt(str(exc), secrets, MAX_ERROR_CHARS),
            retry_after=parse_retry_after(last.headers.get("retry-after"))
            if last is not None
            else None,
            back_off=True,
        )
    except Exception as exc:  # e.g. an invalid URL: a recorded failure, never a crash
        error = excerpt(
            f"could not deliver ({type(exc).__name__}: {exc})", secrets, MAX_ERROR_CHARS
        )
        return SendResult("failed", error=error, back_off=True)
    if resp.status_code in ok:
        return SendResult("sent", http_status=resp.status_code)
    # A 4xx (or a 3xx: redirects are not followed) will not get better by asking again.
    text = f"HTTP {resp.status_code}: {resp.text}"
    return SendResult(
        "failed", http_status=resp.status_code, error=excerpt(text, secrets, MAX_ERROR_CHARS)
    )


def send(
    channel: str,
    event: IncidentEvent,
    config: ChannelConfig,
    client: httpx.Client,
    *,
    delivery_id: str,
    now: float | None = None,
    policy: RetryPolicy = NOTIFY_POLICY,
    sleep: Callable[[float], Any] = time.sleep,
) -> SendResult | None:
    """Deliver ``event`` on ``channel`` (with the policy's retries); ``None`` if the channel
    has no such message (a digest on PagerDuty). Never raises for HTTP trouble. The signed
    webhook keeps its timestamp across the retries (they fit well inside the tolerance)."""
    json_headers = {"Content-Type": "application/json"}
    if channel == SLACK:
        body = json.dumps(slack_payload(event), ensure_ascii=False).encode()
        return _post(
            client, config, config.slack_url, body, json_headers, OK_STATUSES, policy, sleep
        )
    if channel == WEBHOOK:
        body = webhook_body(event, delivery_id)
        timestamp = int(time.time() if now is None else now)
        headers = {
            **json_headers,
            SIGNATURE_HEADER: sign(config.webhook_secret, timestamp, body),
            "X-Eval-Event": f"incident.{event.event}",
            "X-Eval-Delivery": delivery_id,
        }
        return _post(client, config, config.webhook_url, body, headers, OK_STATUSES, policy, sleep)
    if channel == PAGERDUTY:
        data = pagerduty_payload(event, config.pagerduty_routing_key, config.pagerduty_source)
        if data is None:
            return None
        body = json.dumps(data, ensure_ascii=False).encode()
        # The Events API answers 202 Accepted; anything else is not an accepted event.
        return _post(
            client, config, config.pagerduty_url, body, json_headers, (202,), policy, sleep
        )
    raise ValueError(f"unknown channel {channel!r}")


def make_client(
    config: ChannelConfig, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """A short-timeout client that does not follow redirects (a redirect could carry the
    signed body or the routing key somewhere else)."""
    return httpx.Client(
        timeout=httpx.Timeout(config.timeout_s, connect=min(5.0, config.timeout_s)),
        follow_redirects=False,
        transport=transport,
    )
