"""Drift alerts: stored, posted once to a Slack-compatible webhook, every attempt recorded.

The alert id is a hash of (day, segment, rule): re-running or backfilling a day recomputes
the same ids, and an id that already has a 'sent' delivery is never posted again.
The webhook URL is a secret: it is never logged, stored or put in an error message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

import duckdb
import httpx

from eval_pipeline.core.drift.report import ALL_SEGMENTS

RULE = "mean-drop-v1"


def alert_id(day: dt.date, segment: str, rule: str = RULE) -> str:
    return hashlib.sha256(f"{day.isoformat()}|{segment}|{rule}".encode()).hexdigest()[:24]


def slack_payload(day: dt.date, segment: str, message: str, judge_name: str | None) -> dict:
    where = "all segments" if segment == ALL_SEGMENTS else f"segment *{segment}*"
    text = f":rotating_light: LLM quality drop on {day.isoformat()} in {where}: {message}"
    if judge_name:
        text += f" (judge: {judge_name})"
    return {"text": text}


@dataclass
class AlertOutcome:
    day: dt.date
    raised: int = 0
    sent: int = 0
    failed: int = 0
    not_configured: int = 0
    already_sent: int = 0
    alerts: list[dict] = field(default_factory=list)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "<webhook-url>") if secret else text


def post_webhook(
    client: httpx.Client, url: str, payload: dict, attempts: int = 3
) -> tuple[str, int | None, str | None]:
    """(status, http_status, error) after up to ``attempts`` tries; never raises."""
    last_status, last_error = None, None
    for _ in range(attempts):
        try:
            resp = client.post(url, json=payload)
        except httpx.HTTPError as exc:
            last_status, last_error = None, _redact(f"{type(exc).__name__}: {exc}", url)
            continue
        if 200 <= resp.status_code < 300:
            return "sent", resp.status_code, None
        last_status = resp.status_code
        last_error = _redact(f"HTTP {resp.status_code}: {resp.text[:200]}", url)
        if resp.status_code < 500 and resp.status_code != 429:
            break  # a 4xx other than 429 will not get better by retrying
    return "failed", last_status, last_error


def alert_day(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    webhook_url: str | None,
    client: httpx.Client | None = None,
) -> AlertOutcome:
    """Turn the day's drift report rows with alert=true into alerts and deliver them."""
    rows = conn.execute(
        "SELECT segment, baseline_mean, mean_score, delta, mean_p_adjusted, verdict, judge_name "
        "FROM drift_reports WHERE partition_date = ? AND alert ORDER BY segment",
        [day],
    ).fetchall()
    outcome = AlertOutcome(day=day)
    own_client = client is None and webhook_url
    if own_client:
        client = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
    try:
        # Alerts for the day that no longer hold (e.g. after a re-judge) are withdrawn from
        # the table; their delivery history stays.
        current = [alert_id(day, r[0]) for r in rows]
        conn.execute(
            "DELETE FROM drift_alerts WHERE partition_date = ? AND NOT list_contains(?, alert_id)",
            [day, current],
        )
        for (segment, base, mean, delta, p, verdict, judge_name), aid in zip(
            rows, current, strict=True
        ):
            outcome.raised += 1
            conn.execute(
                "INSERT OR REPLACE INTO drift_alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "coalesce((SELECT created_at FROM drift_alerts WHERE alert_id = ?), "
                "now()::TIMESTAMP))",
                [aid, day, segment, base, mean, delta, p, verdict, aid],
            )
            outcome.alerts.append(
                {
                    "day": day.isoformat(),
                    "segment": segment,
                    "baseline_mean": base,
                    "mean_score": mean,
                    "delta": delta,
                    "p_value": p,
                    "message": verdict,
                }
            )
            already = conn.execute(
                "SELECT count(*) FROM alert_deliveries WHERE alert_id = ? AND status = 'sent'",
                [aid],
            ).fetchone()[0]
            if already:
                outcome.already_sent += 1
                continue
            if not webhook_url:
                status, http_status, error = (
                    "not_configured",
                    None,
                    "EVAL_ALERT_WEBHOOK_URL not set",
                )
            else:
                payload = slack_payload(day, segment, verdict, judge_name)
                status, http_status, error = post_webhook(client, webhook_url, payload)
            conn.execute(
                "INSERT INTO alert_deliveries VALUES (?, 'webhook', ?, ?, ?, now()::TIMESTAMP)",
                [aid, status, http_status, error],
            )
            setattr(outcome, status, getattr(outcome, status) + 1)
    finally:
        if own_client:
            client.close()
    return outcome
