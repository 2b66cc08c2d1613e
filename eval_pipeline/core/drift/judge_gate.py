"""What the judge's trust does to drift notifications.

Every drift incident's notification carries the status of the judge that scored its day
("validated (212 labels; κ 0.78 [0.71, 0.84])" or why not). An ``opened`` event on a day
when the anchor set found that the judge itself changed is held back (the score drift is the
judge's, not the app's) and a judge-drift incident is announced instead; so is one from an
unvalidated judge when ``$EVAL_UNVALIDATED_JUDGE_MAY_PAGE`` is false. A held opening is
never announced, so the notifications never send its ``resolved`` either ("never opened").
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace

import duckdb

from eval_pipeline.core.judge import trust
from eval_pipeline.core.notify.events import OPENED, IncidentEvent


@dataclass
class GatedEvents:
    send: list[IncidentEvent]
    held: list[IncidentEvent] = field(default_factory=list)  # app openings not paged, and why
    trust_by_day: dict[dt.date, trust.DayJudgeTrust] = field(default_factory=dict)


def judge_drift_event(day_trust: trust.DayJudgeTrust) -> IncidentEvent:
    """One judge-drift incident per day the anchor set says the judge changed."""
    digest = hashlib.sha256(f"judge|{day_trust.day}".encode()).hexdigest()[:16]
    return IncidentEvent(
        incident_id=f"judge-{digest}",
        event=OPENED,
        kind="judge",
        day=day_trust.day,
        title=f"The judge changed on {day_trust.day}: score drift that day is the judge's",
        segments=(),
        details={"judge": day_trust.line(), "findings": list(day_trust.judge_changed)},
    )


def gate_events(
    conn: duckdb.DuckDBPyConnection,
    events: list[IncidentEvent],
    env: dict[str, str] | None = None,
    days: list[dt.date] = (),
) -> GatedEvents:
    """The events to send, each carrying its day's judge status; ``days`` get a status too."""
    out = GatedEvents(send=[])
    for day in days:
        out.trust_by_day[day] = trust.for_day(conn, day)
    for event in events:
        day_trust = out.trust_by_day.get(event.day)
        if day_trust is None:
            day_trust = out.trust_by_day[event.day] = trust.for_day(conn, event.day)
        tagged = replace(event, details={**event.details, "judge": day_trust.line()})
        if event.event == OPENED and not trust.may_page(day_trust, env):
            out.held.append(tagged)
            continue
        out.send.append(tagged)
    for day_trust in out.trust_by_day.values():
        if day_trust.app_drift_is_judge:
            out.send.append(judge_drift_event(day_trust))
    return out
