"""Incident notifications with a lifecycle: one message when an incident opens, one when it
resolves (a daily digest while open only if asked for), each sent at most once per channel.

Dedup lives in the ``notifications`` table, keyed by (incident_id, event, channel): a key
with status 'sent' is never sent again, so re-running a day or backfilling a range that
re-emits the same events sends nothing new. A 'failed' key is tried again by later runs
(from the event stored with it, so the retry does not depend on the day being re-run).

Backfill rule: an event whose day is older than ``today - notify_within_days`` is recorded
as 'suppressed' (reason 'old'), never sent: a backfill over old history builds the incident
history without paging for incidents that ended long ago. An incident that is *still open*
within the window is announced even if its opening was long ago: a ``digest`` event (the
incident is still open on that day) for an incident whose ``opened`` was suppressed or never
recorded on a channel is sent there as a late ``opened``. So the incidents side should emit
a ``digest`` for every day an incident is open after its first; whether digests are *sent*
as digests is this module's setting (``digest=False`` by default).
A ``resolved`` whose ``opened`` was never announced on a channel is suppressed there too
(reason 'never opened'): nobody needs to hear that an incident they never heard of is over.

No store connection is open during network I/O (DuckDB allows one writer; a slow receiver
would block every other one): ``plan_notifications`` (short read) ->
``send_notifications`` (HTTP, no connection) -> ``record_notifications`` (one short write
transaction). ``deliver_in_phases(store_connect, ...)`` does exactly that for the asset;
``deliver`` runs the three on one connection for callers that hold it anyway (tests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import duckdb
import httpx

from eval_pipeline.core.http import RetryPolicy
from eval_pipeline.core.notify.channels import NOTIFY_POLICY, make_client, send
from eval_pipeline.core.notify.config import ChannelConfig
from eval_pipeline.core.notify.events import (
    CHANNELS,
    DIGEST,
    OPENED,
    PAGERDUTY,
    RESOLVED,
    IncidentEvent,
)

__all__ = [
    "CHANNELS",
    "ChannelConfig",
    "Delivery",
    "DeliveryReport",
    "IncidentEvent",
    "NotifyPlan",
    "deliver",
    "deliver_in_phases",
    "plan_notifications",
    "record_notifications",
    "send_notifications",
]

DEFAULT_NOTIFY_WITHIN_DAYS = 3
DEFAULT_MAX_ATTEMPTS = 10  # a key failing this often is left alone (still visible as failed)
_ORDER = {OPENED: 0, DIGEST: 1, RESOLVED: 2}


def event_key(event: IncidentEvent) -> str:
    """The ``event`` column: one opened and one resolved per incident, one digest per day."""
    return f"{DIGEST}:{event.day.isoformat()}" if event.event == DIGEST else event.event


@dataclass
class Delivery:
    """One (incident, event, channel) this run sends or suppresses, and how it went."""

    event: IncidentEvent  # what is sent (a late opening is an 'opened' built from a digest)
    channel: str
    key: str
    earlier: bool = False  # a failure recorded by an earlier run, tried again
    status: str = "pending"  # -> 'sent' | 'failed' | 'suppressed'
    reason: str | None = None  # why suppressed
    attempted: bool = False
    http_status: int | None = None
    error: str | None = None

    @property
    def delivery_id(self) -> str:
        return f"{self.event.incident_id}:{self.key}"


@dataclass
class NotifyPlan:
    today: dt.date
    cutoff: dt.date  # events about days before this are not sent
    channels: tuple[str, ...]
    deliveries: list[Delivery] = field(default_factory=list)
    events: int = 0
    already_sent: int = 0  # (event, channel) pairs sent by an earlier run
    skipped: int = 0  # digests while digests are off, or with no message on a channel


@dataclass
class DeliveryReport:
    """The run's figures; ``errors`` are scrubbed and bounded."""

    today: dt.date
    channels: tuple[str, ...]
    events: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    already_sent: int = 0
    skipped: int = 0
    retried_earlier: int = 0
    by_channel: dict[str, Counter] = field(default_factory=dict)
    suppressed_reasons: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, object]:
        """Plain values for Dagster metadata (no secrets, no trace text)."""
        return {
            "channels": ", ".join(self.channels) or "none configured",
            "events": self.events,
            "sent": self.sent,
            "failed": self.failed,
            "suppressed": self.suppressed,
            "already_sent": self.already_sent,
            "retried_earlier": self.retried_earlier,
        }


def _existing(
    conn: duckdb.DuckDBPyConnection | None, incident_ids: list[str], max_attempts: int
) -> tuple[dict[tuple[str, str, str], str], list[tuple[str, str, str, str]]]:
    """(status of every stored key of these incidents, failed keys of any incident to retry
    as (incident, event, channel, payload))."""
    if conn is None:
        return {}, []
    rows = conn.execute(
        "SELECT incident_id, event, channel, status FROM notifications "
        "WHERE list_contains(?, incident_id)",
        [incident_ids],
    ).fetchall()
    state = {(i, e, c): s for i, e, c, s in rows}
    retry = conn.execute(
        "SELECT incident_id, event, channel, payload FROM notifications "
        "WHERE status = 'failed' AND attempts < ? ORDER BY day, first_seen_at",
        [max_attempts],
    ).fetchall()
    for i, e, c, _ in retry:
        state[(i, e, c)] = "failed"
    return state, retry


def plan_notifications(
    conn: duckdb.DuckDBPyConnection | None,
    events: Sequence[IncidentEvent],
    config: ChannelConfig,
    *,
    today: dt.date,
    notify_within_days: int = DEFAULT_NOTIFY_WITHIN_DAYS,
    digest: bool = False,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> NotifyPlan:
    """Phase 1 (store, read only): what to send, what to suppress, what was sent already.

    With ``conn=None`` nothing is known about earlier runs (a dry run or a harness): every
    event within the window is planned once.
    """
    if notify_within_days < 0:
        raise ValueError("notify_within_days must be >= 0")
    cutoff = today - dt.timedelta(days=notify_within_days)
    plan = NotifyPlan(today=today, cutoff=cutoff, channels=config.channels, events=len(events))
    if not plan.channels:
        return plan
    # Same key twice in one batch (a ranged run emitting a day twice): the last one wins.
    batch: dict[tuple[str, str], IncidentEvent] = {}
    for ev in events:
        batch[(ev.incident_id, event_key(ev))] = ev
    ordered = sorted(
        batch.values(), key=lambda e: (e.day, _ORDER[e.event], e.incident_id, event_key(e))
    )
    state, retry = _existing(conn, sorted({e.incident_id for e in ordered}), max_attempts)

    def add(ev: IncidentEvent, channel: str, key: str, earlier: bool = False) -> None:
        d = Delivery(ev, channel, key, earlier=earlier)
        if ev.day < cutoff:
            d.status, d.reason = "suppressed", f"old: {ev.day.isoformat()} is before {cutoff}"
        plan.deliveries.append(d)
        state[(ev.incident_id, key, channel)] = d.status

    # Earlier failures first, so an opening that failed yesterday goes out before today's
    # resolve of the same incident.
    for incident_id, key, channel, payload in retry:
        if channel not in plan.channels or (incident_id, key) in batch:
            continue
        try:
            ev = IncidentEvent.from_json(json.loads(payload))
        except (ValueError, KeyError, TypeError):
            continue  # written by this module; an unreadable row is left as it is
        add(ev, channel, key, earlier=True)

    for ev in ordered:
        key = event_key(ev)
        for channel in plan.channels:
            seen = state.get((ev.incident_id, key, channel))
            if seen == "sent":
                plan.already_sent += 1
                continue
            if seen == "pending":
                continue  # planned above as an earlier failure
            opened = state.get((ev.incident_id, OPENED, channel))
            if ev.event == OPENED:
                add(ev, channel, key)
            elif ev.event == RESOLVED:
                if opened in (None, "suppressed") and ev.day >= cutoff:
                    d = Delivery(ev, channel, key, status="suppressed", reason="never opened")
                    plan.deliveries.append(d)
                    state[(ev.incident_id, key, channel)] = "suppressed"
                else:
                    add(ev, channel, key)
            else:  # a digest: the incident is still open on ev.day
                if ev.day < cutoff:
                    plan.skipped += 1  # an old reminder is noise, not worth a row
                elif opened in (None, "suppressed"):
                    add(replace(ev, event=OPENED), channel, OPENED)  # announce it late
                elif digest and channel != PAGERDUTY:
                    add(ev, channel, key)
                else:
                    plan.skipped += 1
    return plan


def send_notifications(
    plan: NotifyPlan,
    config: ChannelConfig,
    *,
    transport: httpx.BaseTransport | None = None,
    policy: RetryPolicy = NOTIFY_POLICY,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Phase 2 (network, no store): each pending delivery sent through the shared HTTP layer
    (a few quick retries); its outcome is set on it. Never raises for HTTP trouble. A channel
    still unreachable, rate limited or failing with 5xx after the retries is not tried again
    in this run: its other deliveries are left failed, unattempted, for the next run."""
    pending = [d for d in plan.deliveries if d.status == "pending"]
    if not pending:
        return
    backed_off: dict[str, str] = {}
    with make_client(config, transport) as client:
        for d in pending:
            if d.channel in backed_off:
                d.status, d.error = "failed", f"not tried: {backed_off[d.channel]}"
                continue
            try:
                result = send(
                    d.channel,
                    d.event,
                    config,
                    client,
                    delivery_id=d.delivery_id,
                    policy=policy,
                    sleep=sleep,
                )
            except Exception as exc:  # a notification must never fail the pipeline
                d.status, d.attempted = "failed", True
                d.error = config.scrub(f"unexpected error: {exc!r}")[:300]
                continue
            if result is None:
                d.status, d.reason = "suppressed", f"no {d.event.event} message on {d.channel}"
                continue
            d.attempted = True
            d.status, d.http_status, d.error = result.status, result.http_status, result.error
            if result.back_off:
                wait = f", Retry-After {result.retry_after:.0f}s" if result.retry_after else ""
                backed_off[d.channel] = (
                    f"{d.channel} still failing earlier in this run (HTTP {result.http_status}{wait})"
                    if result.http_status
                    else f"{d.channel} unreachable earlier in this run"
                )


def record_notifications(conn: duckdb.DuckDBPyConnection, plan: NotifyPlan) -> DeliveryReport:
    """Phase 3 (store, one transaction): every delivery's state, and the run's figures.

    A key that another process marked 'sent' meanwhile stays 'sent'; attempts are counted
    from the row as it is at write time."""
    report = _report(plan)
    if not plan.deliveries:
        return report
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn.execute("BEGIN TRANSACTION")
    try:
        for d in plan.deliveries:
            row = conn.execute(
                "SELECT status, attempts FROM notifications "
                "WHERE incident_id = ? AND event = ? AND channel = ?",
                [d.event.incident_id, d.key, d.channel],
            ).fetchone()
            if row and row[0] == "sent":
                continue
            attempts = (row[1] if row else 0) + (1 if d.attempted else 0)
            values = [
                d.event.kind,
                d.event.day,
                d.status,
                d.reason,
                attempts,
                d.http_status,
                d.error,
                json.dumps(d.event.to_json(), ensure_ascii=False),
                now if d.attempted else None,
                now if d.status == "sent" else None,
            ]
            if row:
                conn.execute(
                    "UPDATE notifications SET kind = ?, day = ?, status = ?, reason = ?, "
                    "attempts = ?, http_status = ?, last_error = ?, payload = ?, "
                    "last_attempt_at = coalesce(?, last_attempt_at), sent_at = ? "
                    "WHERE incident_id = ? AND event = ? AND channel = ?",
                    [*values, d.event.incident_id, d.key, d.channel],
                )
            else:
                conn.execute(
                    "INSERT INTO notifications (kind, day, status, reason, attempts, "
                    "http_status, last_error, payload, last_attempt_at, sent_at, incident_id, "
                    "event, channel, first_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?, ?)",
                    [*values, d.event.incident_id, d.key, d.channel, now],
                )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return report


def _report(plan: NotifyPlan) -> DeliveryReport:
    report = DeliveryReport(
        today=plan.today,
        channels=plan.channels,
        events=plan.events,
        already_sent=plan.already_sent,
        skipped=plan.skipped,
    )
    for d in plan.deliveries:
        report.by_channel.setdefault(d.channel, Counter())[d.status] += 1
        if d.earlier:
            report.retried_earlier += 1
        if d.status == "sent":
            report.sent += 1
        elif d.status == "failed":
            report.failed += 1
            if len(report.errors) < 20:
                report.errors.append(f"{d.channel} {d.delivery_id}: {d.error}")
        elif d.status == "suppressed":
            report.suppressed += 1
            report.suppressed_reasons[(d.reason or "").split(":")[0]] += 1
    return report


def deliver(
    conn: duckdb.DuckDBPyConnection | None,
    events: Sequence[IncidentEvent],
    config: ChannelConfig,
    *,
    today: dt.date,
    notify_within_days: int = DEFAULT_NOTIFY_WITHIN_DAYS,
    digest: bool = False,
    transport: httpx.BaseTransport | None = None,
    policy: RetryPolicy = NOTIFY_POLICY,
    sleep: Callable[[float], object] = time.sleep,
) -> DeliveryReport:
    """Plan, send and record on one connection (the asset runs the phases itself so that no
    connection is open while sending). With ``conn=None`` nothing is deduplicated against
    or recorded: a dry run."""
    plan = plan_notifications(
        conn, events, config, today=today, notify_within_days=notify_within_days, digest=digest
    )
    send_notifications(plan, config, transport=transport, policy=policy, sleep=sleep)
    if conn is None:
        return _report(plan)
    return record_notifications(conn, plan)


def deliver_in_phases(
    connect: Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]],
    events: Sequence[IncidentEvent],
    config: ChannelConfig,
    *,
    today: dt.date,
    notify_within_days: int = DEFAULT_NOTIFY_WITHIN_DAYS,
    digest: bool = False,
    transport: httpx.BaseTransport | None = None,
    policy: RetryPolicy = NOTIFY_POLICY,
    sleep: Callable[[float], object] = time.sleep,
) -> DeliveryReport:
    """``deliver`` for callers that own the store (the Dagster asset): ``connect()`` opens a
    short connection for the plan, none is open while sending, a second one records."""
    with connect() as conn:
        plan = plan_notifications(
            conn, events, config, today=today, notify_within_days=notify_within_days, digest=digest
        )
    send_notifications(plan, config, transport=transport, policy=policy, sleep=sleep)
    with connect() as conn:
        return record_notifications(conn, plan)
