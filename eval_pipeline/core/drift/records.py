"""The incident records: a segment-day's judged scores, a day's verdict, an incident, a
hand action, and the lifecycle messages an incident calls for.

Plain data shared by the engine (``incidents.run_history``), its grouping of alarms
(``grouping``), the store (``history``) and the notifications. The incident id is a hash
of the first day and the first segment: stable across re-runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from eval_pipeline.core.drift.reference import Counts

ALL = "__all__"


@dataclass(frozen=True)
class SegmentDay:
    day: dt.date
    segment: str
    counts: Counts  # ok judgments by score
    n_failed: int = 0
    judge: str = "judge"  # judge name/model/rubric: days of different judges never mix
    # Judged (ok) traces when ``counts`` are not one per trace (the harness's weighted
    # comparison): the min_n guard counts traces judged. None: counts.n.
    n_judged: int | None = None


@dataclass(frozen=True)
class Action:
    """A hand-made incident action, recorded: 'ack' or 'resolve' (effective on ``day``)."""

    incident_id: str
    action: str
    day: dt.date
    actor: str
    reason: str = ""
    at: dt.datetime | None = None


@dataclass
class DayVerdict:
    day: dt.date
    segment: str
    state: str  # no_verdict | healthy | alarm | degraded | recovering | resolved
    n: int
    n_failed: int
    mean: float | None
    reference_mean: float | None = None
    reference_n: int | None = None
    reference_days: int | None = None
    drop: float | None = None
    z: float | None = None
    p: float | None = None
    p_holm: float | None = None
    cusum: float | None = None
    incident_id: str | None = None
    verdict: str = ""


@dataclass
class Incident:
    incident_id: str
    segments: list[str]
    opened_on: dt.date  # first affected day (the CUSUM change-point for a CUSUM alarm)
    detected_on: dt.date  # the day the alarm fired: the page
    last_degraded_on: dt.date
    detector: str  # day-test | cusum | day-test+cusum
    reference_mean: float | None
    current_mean: float | None
    peak_drop: float
    current_drop: float
    detected_mean: float | None = None  # the figures on the day of the page
    detected_drop: float | None = None
    cause_key: str | None = None
    cause: str = ""
    resolved_on: dt.date | None = None
    resolution: str | None = None  # healthy | manual | rebaseline
    resolved_by: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    kind: str = "drift"
    # First day the data shows degraded, when before opened_on: a day-test alarm dates the
    # incident from today, but a CUSUM run was already building (its days leave the reference).
    degraded_since: dt.date | None = None

    @property
    def status(self) -> str:
        return "resolved" if self.resolved_on else "open"


@dataclass
class History:
    verdicts: list[DayVerdict]
    incidents: list[Incident]

    def verdict(self, day: dt.date, segment: str) -> DayVerdict | None:
        return next((v for v in self.verdicts if v.day == day and v.segment == segment), None)


def incident_id(opened_on: dt.date, segment: str, kind: str = "drift") -> str:
    return "inc-" + hashlib.sha256(f"{kind}|{opened_on}|{segment}".encode()).hexdigest()[:12]


def planned_events(incidents: Sequence[Incident], metric: str = "quality") -> list[dict]:
    """The lifecycle messages the incidents call for: one on open (dated the day it was
    detected), one on resolve. Fields follow the notifications' IncidentEvent. ``metric``:
    the score series the incidents are about, named in the titles (a criterion's name)."""
    events = []
    for inc in incidents:
        base = {
            "reference_mean": inc.reference_mean,
            "detector": inc.detector,
            "cause": inc.cause,
            "opened_on": inc.opened_on.isoformat(),
            "peak_drop": inc.peak_drop,
        }
        if inc.degraded_since is not None:
            base["degraded_since"] = inc.degraded_since.isoformat()
        where = ", ".join("overall" if s == ALL else s for s in inc.segments)
        events.append(
            dict(
                incident_id=inc.incident_id,
                event="opened",
                kind=inc.kind,
                day=inc.detected_on,
                title=f"LLM {metric} drop in {where} since {inc.opened_on} "
                f"(-{inc.detected_drop:.2f} points)",
                segments=tuple(inc.segments),
                details={**base, "current_mean": inc.detected_mean, "drop": inc.detected_drop},
            )
        )
        if inc.resolved_on is not None:
            events.append(
                dict(
                    incident_id=inc.incident_id,
                    event="resolved",
                    kind=inc.kind,
                    day=inc.resolved_on,
                    title=f"Resolved ({inc.resolution}): LLM {metric} drop in {where} "
                    f"from {inc.opened_on} to {inc.last_degraded_on}",
                    segments=tuple(inc.segments),
                    details={**base, "current_mean": inc.current_mean, "drop": inc.current_drop},
                )
            )
    return events
