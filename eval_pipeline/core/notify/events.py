"""What a notification is about: the channels, the lifecycle events, and one incident event.

``IncidentEvent`` is what the drift incidents (and the pipeline's health) hand to
:mod:`eval_pipeline.core.notify.lifecycle`; its fields may carry untrusted text (segment
names, causes), which every channel escapes when it renders them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SLACK, WEBHOOK, PAGERDUTY = "slack", "webhook", "pagerduty"
CHANNELS = (SLACK, WEBHOOK, PAGERDUTY)
OPENED, RESOLVED, DIGEST = "opened", "resolved", "digest"
EVENTS = (OPENED, RESOLVED, DIGEST)

PAGERDUTY_MAX_DEDUP_KEY = 255  # the incident id is PagerDuty's dedup_key


@dataclass(frozen=True)
class IncidentEvent:
    """One thing worth telling people about an incident.

    ``event`` is ``opened`` (day = the day it opened), ``resolved`` (day = the day it
    resolved) or ``digest`` (day = a day on which it is still open). ``title``, ``segments``
    and ``details`` may carry trace content: channels escape them, never trust them.
    """

    incident_id: str
    event: str
    kind: str
    day: dt.date
    title: str
    segments: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown event {self.event!r} (known: {', '.join(EVENTS)})")
        if not isinstance(self.incident_id, str) or not self.incident_id.strip():
            raise ValueError("incident_id must be a non-empty string")
        if len(self.incident_id) > PAGERDUTY_MAX_DEDUP_KEY:
            raise ValueError(
                f"incident_id is {len(self.incident_id)} characters; PagerDuty's dedup_key "
                f"allows {PAGERDUTY_MAX_DEDUP_KEY}"
            )
        if not self.incident_id.isprintable():
            raise ValueError("incident_id must not contain control characters")
        if isinstance(self.day, dt.datetime) or not isinstance(self.day, dt.date):
            raise ValueError(f"day must be a datetime.date, got {type(self.day).__name__}")
        if not isinstance(self.title, str) or not isinstance(self.kind, str):
            raise ValueError("title and kind must be strings")
        segments = tuple(self.segments)
        if not all(isinstance(s, str) for s in segments):
            raise ValueError("segments must be strings")
        object.__setattr__(self, "segments", segments)
        if not isinstance(self.details, Mapping):
            raise ValueError("details must be a mapping")
        object.__setattr__(self, "details", dict(self.details))

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict of the event (what the store keeps to retry it)."""
        return {
            "incident_id": self.incident_id,
            "event": self.event,
            "kind": self.kind,
            "day": self.day.isoformat(),
            "title": self.title,
            "segments": list(self.segments),
            "details": jsonable(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IncidentEvent:
        return cls(
            incident_id=data["incident_id"],
            event=data["event"],
            kind=data["kind"],
            day=dt.date.fromisoformat(data["day"]),
            title=data["title"],
            segments=tuple(data.get("segments") or ()),
            details=data.get("details") or {},
        )


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as strict JSON data: NaN/inf become null, dates ISO strings, other objects
    their ``str``; nesting beyond 8 levels is cut (details are for people, not archives)."""
    if depth > 8:
        return "…"
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        try:
            return jsonable(value.item(), depth + 1)
        except (TypeError, ValueError):
            pass
    return str(value)
