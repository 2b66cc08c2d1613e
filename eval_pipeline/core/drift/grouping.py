"""Grouping the day's alarms into incidents: open one per cause, join an open incident
with the same cause, and fold the paging trace signals into the judge's verdicts.

Segments that alarm on the same day with the same named cause are one incident; an alarm
whose cause is already an open incident's cause joins it (an overall drop explained by an
open segment incident is that incident). Called by ``incidents.run_history`` once per day;
the per-segment state (``SegState``) is the engine's, mutated here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from eval_pipeline.core.drift.cause import Cause
from eval_pipeline.core.drift.records import ALL, Incident, incident_id
from eval_pipeline.core.drift.reference import HistoryDay

# cause_fn(segment, reference days, current days[, hypothesis="dimension=value"]) -> Cause
CauseFn = Callable[..., Cause]


@dataclass
class SegState:
    history: list[HistoryDay] = field(default_factory=list)
    s: float = 0.0
    run_start: dt.date | None = None
    incident: Incident | None = None
    streak: int = 0
    # the open incident's healthy days so far (shortfall, n judged), for the recovery test
    recovery: list = field(default_factory=list)
    rebaseline_from: dt.date | None = None
    reference_days: tuple[dt.date, ...] = ()
    # days of the CUSUM run under way, held out of the reference until it ends
    held: list[dt.date] = field(default_factory=list)


def release_held(st: SegState) -> None:
    """The CUSUM run ended without an alarm: its held days were noise, back into the
    reference."""
    held = set(st.held)
    st.history = [
        HistoryDay(h.day, h.counts, h.judge, True) if h.day in held else h for h in st.history
    ]
    st.held = []


def fold_signal_alarms(day, signal_alarms, candidates, segs, verdicts) -> None:
    """Fold the day's paging signals into the judge's verdicts: a segment in an open incident
    stays degraded; a judge alarm on the same segment gains the signal; otherwise the signal
    is an alarm of its own. A segment-day the judge did not see today is left out."""
    for (d, seg), fired in sorted(signal_alarms.items()):
        if d != day or (day, seg) not in verdicts or not fired:
            continue
        st, v = segs[seg], verdicts[(day, seg)]
        names = "+".join(sorted({f"signal:{name}" for name, _ in fired}))
        figures = "; ".join(text for _, text in fired)
        v.verdict = f"{v.verdict}; {names}: {figures}" if v.verdict else f"{names}: {figures}"
        if st.history and st.history[-1].day == day and st.history[-1].healthy:
            h = st.history[-1]
            st.history[-1] = HistoryDay(h.day, h.counts, h.judge, healthy=False)
        if st.incident is not None:
            inc = st.incident
            st.streak, inc.last_degraded_on, v.state = 0, day, "degraded"
            v.incident_id = inc.incident_id
            if names not in inc.detector:
                inc.detector = "+".join(
                    sorted(set(inc.detector.split("+")) | set(names.split("+")))
                )
            continue
        i = next((i for i, c in enumerate(candidates) if c[0] == seg), None)
        if i is not None:
            seg_, detector, start = candidates[i]
            candidates[i] = (seg_, f"{detector}+{names}", start)
        else:
            candidates.append((seg, names, day))
        v.state = "alarm"


def peak(verdicts, iid, seg) -> float:
    return max(
        (v.drop or 0.0 for (_, s), v in verdicts.items() if s == seg and v.incident_id == iid),
        default=0.0,
    )


def reference_days_at(segs, seg, day, n_days) -> tuple[dt.date, ...]:
    """The last ``n_days`` healthy days of the segment before ``day``."""
    hist = [h for h in segs[seg].history if h.day < day and h.healthy]
    return tuple(sorted(h.day for h in hist))[-n_days:]


def is_value_cause(key: str | None) -> bool:
    """A named dimension value (not 'no single dimension', not a segment)."""
    return key is not None and not key.startswith("segment=")


def open_incidents(candidates, day, segs, verdicts, incidents, cause_fn) -> None:
    """Group the day's alarms into incidents (one per cause) and open or join them."""
    if not candidates:
        return
    keyed = []
    for seg, detector, start in candidates:
        key = None
        cur_days = tuple(d for (d, s) in verdicts if s == seg and start <= d <= day)
        ref_days = tuple(d for d in segs[seg].reference_days if d < start)
        if cause_fn is not None:
            key = cause_fn(seg, ref_days, cur_days).key
        keyed.append((seg, detector, start, key, cur_days, ref_days))
    open_incs = [i for i in incidents if i.resolved_on is None]
    # An alarm whose own search names nothing tests, alone, the causes already named today
    # or for an open incident (a roll-out named on the big segments, seen on a small one).
    hypotheses = sorted(
        {k for *_, k, _c, _r in keyed if k is not None and not k.startswith("segment=")}
        | {i.cause_key for i in open_incs if is_value_cause(i.cause_key)}
    )
    for i, (seg, detector, start, key, cur_days, ref_days) in enumerate(keyed):
        if key is None and cause_fn is not None:
            key = next(
                (h for h in hypotheses if cause_fn(seg, ref_days, cur_days, hypothesis=h).key == h),
                None,
            )
        keyed[i] = (seg, detector, start, key)
    groups: dict[str, list] = {}
    for seg, detector, start, key in keyed:
        target = None
        if key is not None:
            target = next((i for i in open_incs if i.cause_key == key), None)
            if target is None and key.startswith("segment="):
                named = key.split("=", 1)[1]
                target = next((i for i in open_incs if named in i.segments), None)
        if target is not None:
            _join(target, seg, detector, start, day, segs, verdicts)
            continue
        gkey = key if key is not None else f"segment={seg}"
        groups.setdefault(gkey, []).append((seg, detector, start, key))
    # The overall row whose cause names a segment that alarmed today joins that group.
    for gkey in list(groups):
        members = groups[gkey]
        if (
            gkey.startswith("segment=")
            and len(members) == 1
            and members[0][0] == ALL
            and members[0][3] is not None
        ):
            named = gkey.split("=", 1)[1]
            home = next((k for k, ms in groups.items() if any(m[0] == named for m in ms)), None)
            if home is not None and home != gkey:
                groups[home].extend(groups.pop(gkey))
    for members in groups.values():
        members.sort(key=lambda m: (m[0] == ALL, m[0]))
        start = min(m[2] for m in members)
        detectors_fired = sorted({d for m in members for d in m[1].split("+")})
        vs = [verdicts[(day, m[0])] for m in members]
        inc = Incident(
            incident_id=incident_id(start, members[0][0]),
            segments=[m[0] for m in members],
            opened_on=start,
            detected_on=day,
            last_degraded_on=day,
            detector="+".join(detectors_fired),
            reference_mean=vs[0].reference_mean,
            current_mean=vs[0].mean,
            peak_drop=max(v.drop or 0.0 for v in vs),
            current_drop=vs[0].drop,
            detected_mean=vs[0].mean,
            detected_drop=vs[0].drop,
            cause_key=next((m[3] for m in members if m[3] is not None), None),
        )
        incidents.append(inc)
        for seg, _detector, seg_start, _key in members:
            _attach(inc, seg, seg_start, day, segs, verdicts)


# A segment joins an incident by its cause only on strong evidence: the test is repeated
# every day of a CUSUM run, for every open named cause.
JOIN_ALPHA = 0.005
JOIN_MIN_S = 1.0


def join_by_cause(day, tested, segs, verdicts, incidents, cause_fn) -> None:
    """A segment below its reference (a CUSUM run under way, no alarm yet) joins an open
    incident whose cause is a dimension value when that value, tested alone in the segment
    over the run's days, scores lower than the segment's other traffic on the same days.

    This is how a change named on the big rows (a prompt rolled out to part of every
    segment) reaches a small segment whose own CUSUM has not yet passed h: it needs both
    the segment's own shortfall and the named value's own evidence there. Joining never
    pages (the incident has paged already). The test is repeated every day of the run, so
    its level is strict (``JOIN_ALPHA``) and the run must have gathered ``JOIN_MIN_S``."""
    named = [i for i in incidents if i.resolved_on is None and is_value_cause(i.cause_key)]
    if not named:
        return
    for seg in tested:
        st = segs[seg]
        if seg == ALL or st.incident is not None or st.s <= JOIN_MIN_S or st.run_start is None:
            continue
        cur = tuple(d for (d, s) in verdicts if s == seg and st.run_start <= d <= day)
        ref = tuple(d for d in st.reference_days if d < st.run_start)
        for inc in named:
            cause = cause_fn(seg, ref, cur, hypothesis=inc.cause_key)
            if cause.key == inc.cause_key and cause.finding.p_value < JOIN_ALPHA:
                v = verdicts[(day, seg)]
                v.state = "alarm"
                v.verdict = f"{v.verdict}; joins {inc.incident_id}: its cause {inc.cause_key}"
                if "cause-join" not in inc.detector.split("+"):
                    inc.detector = "+".join(sorted({*inc.detector.split("+"), "cause-join"}))
                _join(inc, seg, "cause-join", st.run_start, day, segs, verdicts)
                break


def _join(inc, seg, detector, start, day, segs, verdicts) -> None:
    if seg not in inc.segments:
        inc.segments.append(seg)
    inc.last_degraded_on = day
    inc.peak_drop = max(inc.peak_drop, verdicts[(day, seg)].drop or 0.0)
    _attach(inc, seg, start, day, segs, verdicts)


def _attach(inc, seg, start, day, segs, verdicts) -> None:
    st = segs[seg]
    st.incident, st.s, st.run_start, st.streak = inc, 0.0, None, 0
    st.held = []  # the run's days are the incident's now (or, before its start, stay out)
    # The days since the change-point belong to the incident: out of the reference.
    st.history = [
        HistoryDay(h.day, h.counts, h.judge, False) if start <= h.day <= day else h
        for h in st.history
    ]
    for (d, s), v in verdicts.items():
        if s == seg and start <= d <= day:
            v.incident_id = inc.incident_id


def mark_run_degraded(st: SegState, since: dt.date, day: dt.date) -> None:
    """A day-test alarm that fired while a CUSUM run was building: the run's earlier days
    (from ``since``, its first day) were low already, so they leave the reference, without
    changing the incident's dates or its page. The incident records ``degraded_since``."""
    inc = st.incident
    if inc is None:
        return
    st.history = [
        HistoryDay(h.day, h.counts, h.judge, False) if since <= h.day <= day else h
        for h in st.history
    ]
    if since < inc.opened_on:
        inc.degraded_since = min(inc.degraded_since or since, since)
