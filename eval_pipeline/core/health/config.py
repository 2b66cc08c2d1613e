"""Health settings, all from the environment (the one precedence rule of ``settings``)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass

from eval_pipeline import settings
from eval_pipeline.core.health.incidents import DEFAULT_RETRY_WINDOW
from eval_pipeline.core.notify.lifecycle import DEFAULT_NOTIFY_WITHIN_DAYS

# Environment variables whose values must never reach an incident's error text.
SECRET_VARIABLES = (
    "PHOENIX_API_KEY",
    "EVAL_JUDGE_API_KEY",
    "EVAL_REGRESSION_API_KEY",
    "EVAL_ALERT_WEBHOOK_URL",
    "EVAL_NOTIFY_WEBHOOK_URL",
    "EVAL_NOTIFY_WEBHOOK_SECRET",
    "EVAL_PAGERDUTY_ROUTING_KEY",
)


def _minutes(raw: str) -> dt.timedelta:
    value = float(raw)
    if value < 0:
        raise ValueError(raw)
    return dt.timedelta(minutes=value)


def _days(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


@dataclass(frozen=True)
class HealthConfig:
    retry_window: dt.timedelta = DEFAULT_RETRY_WINDOW
    notify_within_days: int = DEFAULT_NOTIFY_WITHIN_DAYS
    ui_base_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HealthConfig:
        env = os.environ if env is None else env
        return cls(
            retry_window=settings.resolve(
                None, env, "EVAL_HEALTH_RETRY_WINDOW_MINUTES", DEFAULT_RETRY_WINDOW, _minutes
            ),
            notify_within_days=settings.resolve(
                None, env, "EVAL_HEALTH_NOTIFY_WITHIN_DAYS", DEFAULT_NOTIFY_WITHIN_DAYS, _days
            ),
            ui_base_url=(env.get("EVAL_UI_BASE_URL") or "").strip() or None,
        )


def secrets(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return [env[name] for name in SECRET_VARIABLES if env.get(name)]
