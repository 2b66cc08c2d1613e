"""The freshness rule and the heartbeat: is the daily drift report on time?

Rule: the report for day D exists by ``deadline`` (default 06:00 UTC) on day D + 1. At a
moment ``now`` the newest day that must have a report is yesterday once the deadline has
passed, the day before yesterday until then. The rule looks back ``lookback_days`` days
from that one (default 3), so a daemon that was down for two days opens two incidents, while
the history before the project's first days (or before the lookback) is never paged for.

Both read plain values (which days have a report, and the latest one's run), never Dagster
or the store, so the sensor, the CLI and the HTTP endpoint share them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from eval_pipeline import settings

DEFAULT_DEADLINE = dt.time(6, 0)
DEFAULT_LOOKBACK_DAYS = 3


def parse_deadline(text: str) -> dt.time:
    """``HH:MM`` (UTC) -> a time; anything else is refused with a reason."""
    try:
        hours, minutes = text.strip().split(":")
        return dt.time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"deadline {text!r} is not HH:MM (UTC), e.g. 06:00") from None


@dataclass(frozen=True)
class FreshnessRule:
    deadline: dt.time = DEFAULT_DEADLINE  # on the day after, UTC
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    first_day: dt.date | None = None  # no day before this is ever expected (the partitions' start)

    def __post_init__(self) -> None:
        if self.lookback_days < 1:
            raise ValueError("lookback_days must be >= 1")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, first_day: dt.date | None = None
    ) -> FreshnessRule:
        env = os.environ if env is None else env
        return cls(
            deadline=settings.resolve(
                None, env, "EVAL_HEALTH_DEADLINE", DEFAULT_DEADLINE, parse_deadline
            ),
            lookback_days=settings.resolve(
                None, env, "EVAL_HEALTH_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS, int
            ),
            first_day=first_day,
        )

    def due_at(self, day: dt.date) -> dt.datetime:
        """When ``day``'s report is due (naive UTC)."""
        return dt.datetime.combine(day + dt.timedelta(days=1), self.deadline)

    def latest_due(self, now: dt.datetime) -> dt.date:
        """The newest day whose report must exist at ``now``."""
        yesterday = now.date() - dt.timedelta(days=1)
        return yesterday if now >= self.due_at(yesterday) else yesterday - dt.timedelta(days=1)

    def expected_days(self, now: dt.datetime) -> list[dt.date]:
        """The days checked at ``now``, newest first."""
        last = self.latest_due(now)
        days = [last - dt.timedelta(days=i) for i in range(self.lookback_days)]
        return [d for d in days if self.first_day is None or d >= self.first_day]

    def missing(self, now: dt.datetime, reported: Collection[dt.date]) -> list[dt.date]:
        """Expected days with no report, oldest first."""
        return sorted(d for d in self.expected_days(now) if d not in reported)


def missing_reason(
    day: dt.date, rule: FreshnessRule, last_run_status: str | None, last_run_id: str | None
) -> str:
    """The sentence on a missing-day incident: says whether a run was ever launched."""
    due = f"no drift report for {day.isoformat()} by {rule.deadline:%H:%M} UTC"
    if last_run_id is None:
        return f"{due}: no run was launched for this day (is the Dagster daemon running?)"
    return f"{due}: its latest run {last_run_id} is {last_run_status}"


@dataclass(frozen=True)
class Heartbeat:
    """The answer to "is the watcher alive?": the last day with a report, and its run."""

    now: dt.datetime
    expected_day: dt.date  # the newest day that must have a report by now
    last_day: dt.date | None
    last_run_id: str | None
    last_reported_at: dt.datetime | None
    missing: tuple[dt.date, ...]
    open_incidents: int | None  # None: the store could not be read

    @property
    def stale(self) -> bool:
        return self.last_day is None or self.last_day < self.expected_day or bool(self.missing)

    def as_json(self) -> dict[str, Any]:
        def iso(v: Any) -> Any:
            return v.isoformat() if v is not None else None

        return {
            "status": "stale" if self.stale else "ok",
            "now": iso(self.now),
            "expected_day": iso(self.expected_day),
            "last_successful_day": iso(self.last_day),
            "last_successful_run": self.last_run_id,
            "last_reported_at": iso(self.last_reported_at),
            "missing_days": [d.isoformat() for d in self.missing],
            "open_health_incidents": self.open_incidents,
        }

    def text(self) -> str:
        j = self.as_json()
        lines = [
            f"status: {j['status']}",
            f"last successful day: {j['last_successful_day'] or 'none'}"
            + (
                f" (run {self.last_run_id}, at {j['last_reported_at']})" if self.last_run_id else ""
            ),
            f"expected by now: {j['expected_day']}",
        ]
        if self.missing:
            lines.append("missing: " + ", ".join(j["missing_days"]))
        if self.open_incidents is not None:
            lines.append(f"open health incidents: {self.open_incidents}")
        else:
            lines.append("open health incidents: unknown (the store could not be read)")
        return "\n".join(lines)


def heartbeat(
    rule: FreshnessRule,
    now: dt.datetime,
    reported: Collection[dt.date],
    last_run: tuple[str, dt.datetime] | None,
    open_incidents: int | None,
) -> Heartbeat:
    """``reported``: the days with a report; ``last_run``: (run id, when) of the newest one."""
    last_day = max(reported) if reported else None
    return Heartbeat(
        now=now,
        expected_day=rule.latest_due(now),
        last_day=last_day,
        last_run_id=last_run[0] if last_run else None,
        last_reported_at=last_run[1] if last_run else None,
        missing=tuple(rule.missing(now, reported)),
        open_incidents=open_incidents,
    )
