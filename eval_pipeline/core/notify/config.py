"""Which notification channels are configured: from the environment only, secrets never shown."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from eval_pipeline.core.http import scrub
from eval_pipeline.core.notify.events import CHANNELS, PAGERDUTY, SLACK, WEBHOOK

DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


class NotifyConfigError(ValueError):
    """The notification settings in the environment cannot work (no secret in the text)."""


def _check_url(name: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NotifyConfigError(f"{name} must be an http(s) URL")
    return url


@dataclass(frozen=True)
class ChannelConfig:
    """Which channels are configured, and their secrets (never shown by ``repr``)."""

    slack_url: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    pagerduty_routing_key: str | None = field(default=None, repr=False)
    pagerduty_url: str = field(default=DEFAULT_PAGERDUTY_URL, repr=False)
    pagerduty_source: str = "eval-pipeline"
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.slack_url:
            _check_url("EVAL_ALERT_WEBHOOK_URL", self.slack_url)
        if self.webhook_url:
            _check_url("EVAL_NOTIFY_WEBHOOK_URL", self.webhook_url)
            if not self.webhook_secret:
                raise NotifyConfigError(
                    "EVAL_NOTIFY_WEBHOOK_URL is set but EVAL_NOTIFY_WEBHOOK_SECRET is not: "
                    "the generic webhook is only sent signed"
                )
        if self.pagerduty_routing_key:
            _check_url("EVAL_PAGERDUTY_URL", self.pagerduty_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChannelConfig:
        """EVAL_ALERT_WEBHOOK_URL (Slack-compatible), EVAL_NOTIFY_WEBHOOK_URL +
        EVAL_NOTIFY_WEBHOOK_SECRET (signed JSON), EVAL_PAGERDUTY_ROUTING_KEY (+
        EVAL_PAGERDUTY_URL, default the public Events API v2 endpoint; EVAL_PAGERDUTY_SOURCE,
        default "eval-pipeline"), EVAL_NOTIFY_TIMEOUT_S (default 10). Unset or empty = off."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = (env.get(name) or "").strip()
            return value or None

        timeout = get("EVAL_NOTIFY_TIMEOUT_S")
        try:
            timeout_s = float(timeout) if timeout else 10.0
        except ValueError:
            raise NotifyConfigError("EVAL_NOTIFY_TIMEOUT_S must be a number of seconds") from None
        if not 0 < timeout_s <= 120:
            raise NotifyConfigError("EVAL_NOTIFY_TIMEOUT_S must be in (0, 120]")
        return cls(
            slack_url=get("EVAL_ALERT_WEBHOOK_URL"),
            webhook_url=get("EVAL_NOTIFY_WEBHOOK_URL"),
            webhook_secret=get("EVAL_NOTIFY_WEBHOOK_SECRET"),
            pagerduty_routing_key=get("EVAL_PAGERDUTY_ROUTING_KEY"),
            pagerduty_url=get("EVAL_PAGERDUTY_URL") or DEFAULT_PAGERDUTY_URL,
            pagerduty_source=get("EVAL_PAGERDUTY_SOURCE") or "eval-pipeline",
            timeout_s=timeout_s,
        )

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels, in delivery order."""
        on = {
            SLACK: bool(self.slack_url),
            WEBHOOK: bool(self.webhook_url),
            PAGERDUTY: bool(self.pagerduty_routing_key),
        }
        return tuple(c for c in CHANNELS if on[c])

    def secrets(self) -> list[str]:
        """Every secret value: the keys and both webhook URLs (the shared scrubber also
        removes a URL's path, query and longer path segments: a receiver may echo just the
        token part of its own URL)."""
        values = (self.slack_url, self.webhook_url, self.webhook_secret, self.pagerduty_routing_key)
        return [v for v in values if v]

    def scrub(self, text: str) -> str:
        """``text`` without any secret; run before any truncation."""
        return scrub(text, self.secrets())
