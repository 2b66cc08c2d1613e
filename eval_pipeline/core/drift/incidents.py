"""Incidents: drift that stays open until it is fixed.

``run_history`` replays the per-day, per-segment judged scores in day order and returns
every day's verdict and every incident. It is a pure function of its inputs (the day
counts, the recorded rebaselines and the recorded hand actions), so the same traces give
the same incidents whether the days were run as one ranged backfill, day by day, or with a
past day re-run later: the store keeps the per-day scores, and the ``drift_incidents``
asset replays the whole history on every run.

Per segment (and the overall row), each day is one of:
- no verdict: a thin reference (warm-up, after a rebaseline), too few judged traces, or
  too many judge failures. A warm-up day still enters the reference; a thin day does not;
- in an open incident: degraded when its shortfall z > ``healthy_z``, else healthy; the
  incident resolves after ``resolve_after`` consecutive healthy days of all its segments
  that also pass the recovery test (``detectors.recovery_z``: pooled, the drop is shown
  to be under ``min_drop``), or by hand, or by a rebaseline of its segment;
- otherwise tested: the day test and the CUSUM (``detectors``). An alarm opens an
  incident. A CUSUM alarm dates the incident from the first day of the CUSUM run that
  led to it (the change-point estimate), so the reference stops using those days too.
  A day-test alarm dates the incident from today (the page and the incident's span are
  today's), but when a CUSUM run was building before it, the run's days were already
  low: they leave the reference too, and the incident records ``degraded_since``.

How the day's alarms become incidents (grouping by cause) is ``grouping``; the records
(verdicts, incidents, actions, events) are ``records``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import special

from eval_pipeline.core.drift import detectors
from eval_pipeline.core.drift.grouping import (
    CauseFn,
    SegState,
    fold_signal_alarms,
    is_value_cause,
    join_by_cause,
    mark_run_degraded,
    open_incidents,
    peak,
    reference_days_at,
    release_held,
)
from eval_pipeline.core.drift.records import (
    ALL,
    Action,
    DayVerdict,
    History,
    Incident,
    SegmentDay,
)
from eval_pipeline.core.drift.reference import (
    Counts,
    HistoryDay,
    Rebaseline,
    Reference,
    ReferenceConfig,
    select_reference,
)
from eval_pipeline.core.stats import holm


@dataclass(frozen=True)
class IncidentConfig:
    reference: ReferenceConfig = ReferenceConfig()
    k: float = detectors.CUSUM_K
    h: float = detectors.CUSUM_H
    day_alpha: float = detectors.DAY_ALPHA
    min_drop: float = 0.2  # the day test also needs a practical drop, in points
    min_n: int = 10  # fewer judged traces in a segment-day: no verdict
    max_failure_rate: float = 0.2  # more judge failures in a segment-day: no verdict
    healthy_z: float = 0.5  # an open incident's day is healthy when z <= this, or when its
    # drop is under min_drop / 2 points
    resolve_after: int = 2
    # ... and the healthy run must show, pooled, that the true drop is under min_drop: a
    # one-sided non-inferiority test at this level (None: K healthy days are enough). A
    # noisy segment then needs more healthy days than a big one.
    recovery_alpha: float | None = 0.2
    overall: bool = True  # test the overall row too (mix-standardised)
    use_day_test: bool = True
    # A day tested while the CUSUM is above this waits out of the reference until the
    # CUSUM falls back to it without an alarm (for 0: until the run ends), so a shift too
    # small to page at once is not absorbed before the CUSUM adds it up. A frozen
    # reference shares its own error with every day of the run and the CUSUM adds that up
    # too, so it costs false alarms (None: off; figures in docs/incidents.md).
    hold_run_s: float | None = 3.0
    # ... and only a segment-day with fewer judged scores than this (None: any): the small
    # segments, whose runs the trailing reference absorbs first, pay for it, not all rows.
    hold_max_n: int | None = 30


def _overall_shortfall(
    per_seg_today: dict[str, Counts], ref_days: tuple[dt.date, ...], by_day: dict
) -> tuple[detectors.Shortfall | None, float | None, int]:
    """Mix-standardised overall shortfall: today's segment means weighted by the reference's
    segment mix, against the reference's segment means."""
    pools: dict[str, Counts] = {}
    for d in ref_days:
        for seg, c in by_day[d].items():
            pools[seg] = pools.get(seg, Counts()) + c
    parts, today_parts = [], []
    for seg, c in per_seg_today.items():
        pool = pools.get(seg)
        if pool is None or pool.n < 2 or c.n == 0:
            continue
        var = pool.variance
        parts.append((float(pool.n), pool.mean, c.mean, var / c.n + var / pool.n))
        # today's mean of c.n scores: variance var/n, third central moment m3/n²
        today_parts.append((var / c.n, pool.third_moment / c.n**2))
    if not parts:
        return None, None, 0
    sf = detectors.stratified_shortfall(parts, today_parts=today_parts)
    ref_mean = sum(w * r for w, r, _, _ in parts) / sum(w for w, *_ in parts)
    return sf, ref_mean, int(sum(w for w, *_ in parts))


# days of an open incident pooled by the recovery test
RECOVERY_WINDOW = 7


def _recovered(st: SegState, config: IncidentConfig) -> bool:
    """K healthy days running and, pooled over them, a true drop under ``min_drop``."""
    if st.streak < config.resolve_after:
        return False
    if config.recovery_alpha is None:
        return True
    z_crit = -float(special.ndtri(config.recovery_alpha))
    # Either pool passes: the healthy run alone (a big segment right after a fix), or the
    # incident's last RECOVERY_WINDOW days, degraded ones included (a noisy segment whose
    # healthy runs are short). Two looks at the same question: a little above alpha.
    run = st.recovery[-min(st.streak, len(st.recovery)) :]
    return (
        detectors.recovery_z(run, config.min_drop) > z_crit
        or detectors.recovery_z(st.recovery, config.min_drop) > z_crit
    )


def _primary(inc: Incident, verdicts: dict, min_drop: float) -> str:
    """The segment whose traffic the incident's cause is looked for in: of the segments
    that dropped by ``min_drop`` at some point (else all), the one with the most judged
    scores inside the incident. The largest drop would pick the noisiest (smallest)
    segment of a change seen in several, where a spurious value is likeliest to win."""
    members = [s for s in inc.segments if s != ALL] or list(inc.segments)
    dropped = [s for s in members if peak(verdicts, inc.incident_id, s) >= min_drop] or members

    def judged(seg: str) -> int:
        return sum(
            v.n for (_, s), v in verdicts.items() if s == seg and v.incident_id == inc.incident_id
        )

    return max(dropped, key=lambda s: (judged(s), s))


def run_history(
    days: Sequence[SegmentDay],
    config: IncidentConfig = IncidentConfig(),
    *,
    rebaselines: Sequence[Rebaseline] = (),
    actions: Sequence[Action] = (),
    cause_fn: CauseFn | None = None,
    signal_alarms: Mapping[tuple[dt.date, str], Sequence[tuple[str, str]]] | None = None,
    states: dict[str, SegState] | None = None,
) -> History:
    """``signal_alarms``: (day, segment) -> [(signal, figures)] of the paging trace signals
    (``core.signals.detect.paging_alarms``). They open, extend and keep open incidents like a
    judge alarm does, and join the judge's alarm on the same segment and day.

    ``states``: an empty dict to receive each row's state after the last day (its
    reference history, held days, rebaseline), for ``history.references_on``."""
    signal_alarms = signal_alarms or {}
    by_day: dict[dt.date, dict[str, Counts]] = {}
    failed: dict[tuple[dt.date, str], int] = {}
    judged: dict[tuple[dt.date, str], float] = {}
    judge_of: dict[dt.date, str] = {}
    for sd in days:
        by_day.setdefault(sd.day, {})
        by_day[sd.day][sd.segment] = by_day[sd.day].get(sd.segment, Counts()) + sd.counts
        failed[(sd.day, sd.segment)] = failed.get((sd.day, sd.segment), 0) + sd.n_failed
        judged_n = sd.counts.n if sd.n_judged is None else sd.n_judged
        judged[(sd.day, sd.segment)] = judged.get((sd.day, sd.segment), 0) + judged_n
        judge_of[sd.day] = sd.judge
    rebase_by_day: dict[dt.date, list[Rebaseline]] = {}
    for rb in rebaselines:
        rebase_by_day.setdefault(rb.from_day, []).append(rb)
    action_by_day: dict[dt.date, list[Action]] = {}
    for a in actions:
        action_by_day.setdefault(a.day, []).append(a)

    segs: dict[str, SegState] = {} if states is None else states
    verdicts: dict[tuple[dt.date, str], DayVerdict] = {}
    incidents: list[Incident] = []

    def close(inc: Incident, day: dt.date, how: str, by: str | None = None) -> None:
        inc.resolved_on, inc.resolution, inc.resolved_by = day, how, by
        for seg in inc.segments:
            st = segs[seg]
            if st.incident is inc:
                st.incident, st.s, st.run_start, st.streak = None, 0.0, None, 0
                st.recovery = []

    for day in sorted(by_day):
        judge = judge_of[day]
        today = dict(by_day[day])
        # Rebaselines take effect before the day is judged.
        for rb in rebase_by_day.get(day, []):
            st = segs.setdefault(rb.segment, SegState())
            st.rebaseline_from = day
            if st.incident is not None:
                inc = st.incident
                st.incident, st.s, st.run_start, st.streak = None, 0.0, None, 0
                st.recovery = []
                if all(segs[s].incident is not inc for s in inc.segments):
                    inc.resolved_on, inc.resolution = day, "rebaseline"
                    inc.resolved_by = rb.created_by
        rows: list[str] = sorted(today)
        if config.overall and rows:
            rows = [ALL, *rows]
        tested: dict[str, tuple[detectors.Shortfall, Reference | None, float, int]] = {}
        for seg in rows:
            st = segs.setdefault(seg, SegState())
            if seg == ALL:
                counts = Counts()
                for c in today.values():
                    counts = counts + c
                n_failed = sum(failed.get((day, s), 0) for s in today)
                n_judged = sum(judged.get((day, s), 0) for s in today)
            else:
                counts, n_failed = today[seg], failed.get((day, seg), 0)
                n_judged = judged.get((day, seg), 0)
            v = DayVerdict(day, seg, "no_verdict", counts.n, n_failed, counts.mean)
            verdicts[(day, seg)] = v
            ref = select_reference(st.history, day, judge, config.reference, st.rebaseline_from)
            st.reference_days = ref.days
            v.reference_days = len(ref.days)
            total = counts.n + n_failed
            reason = None
            if ref.thin:
                reason = ref.thin_reason
            elif n_judged < config.min_n:
                reason = f"{n_judged} judged traces (< {config.min_n}): no verdict"
            elif total and n_failed / total > config.max_failure_rate:
                reason = f"judge failures {n_failed / total:.0%}: no verdict"
            sf = None
            if reason is None:
                if seg == ALL and config.reference.mode != "value":
                    sf, ref_mean, ref_n = _overall_shortfall(today, ref.days, by_day)
                    if sf is None:
                        reason = "no segment of today is in the reference: no verdict"
                else:
                    ref_mean = ref.mean
                    ref_n = ref.counts.n if ref.pinned is None else None
                    var = ref.counts.variance if ref.pinned is None else counts.variance
                    pinned = ref.pinned is not None
                    sf = detectors.shortfall(
                        ref_mean,
                        var,
                        ref_n,
                        counts.mean,
                        counts.n,
                        ref_probs=None if pinned else ref.counts.probs(),
                        tau2=0.0 if pinned else ref.between_day_var,
                    )
            if reason is not None:
                v.verdict = reason
                v.reference_mean = ref.mean if not ref.thin else None
                v.incident_id = st.incident.incident_id if st.incident else None
                # Warm-up days build the reference; thin or failed days never do.
                warm_up = ref.thin and st.incident is None
                st.history.append(HistoryDay(day, counts, judge, healthy=warm_up))
                continue
            v.reference_mean, v.reference_n = ref_mean, ref_n
            v.drop, v.z, v.p = sf.drop, sf.z, sf.p
            tested[seg] = (sf, ref, ref_mean, ref_n)
        for seg, p_adj in zip(list(tested), holm([tested[s][0].p for s in tested]), strict=True):
            verdicts[(day, seg)].p_holm = p_adj

        candidates: list[tuple[str, str, dt.date]] = []  # (segment, detector, start)
        run_since: dict[str, dt.date] = {}  # a day-test alarm's earlier CUSUM run start
        for seg, (sf, _ref, ref_mean, _ref_n) in tested.items():
            st, v = segs[seg], verdicts[(day, seg)]
            counts_today = today.get(seg) if seg != ALL else None
            hist_counts = counts_today if counts_today is not None else Counts()
            if seg == ALL:
                for c in today.values():
                    hist_counts = hist_counts + c
            figures = f"mean {v.mean:.2f} vs reference {ref_mean:.2f} (z={sf.z:.2f})"
            if st.incident is not None:
                inc = st.incident
                v.incident_id = inc.incident_id
                inc.peak_drop = max(inc.peak_drop, sf.drop)
                inc.current_drop, inc.current_mean = sf.drop, v.mean
                # Healthy: not distinguishable from the reference, or practically recovered.
                if sf.z > config.healthy_z and sf.drop > config.min_drop / 2:
                    st.streak = 0
                    st.recovery = [*st.recovery, (sf, hist_counts.n)][-RECOVERY_WINDOW:]
                    inc.last_degraded_on = day
                    v.state, v.verdict = "degraded", f"still degraded: {figures}"
                else:
                    st.streak += 1
                    st.recovery = [*st.recovery, (sf, hist_counts.n)][-RECOVERY_WINDOW:]
                    v.state = "recovering"
                    v.verdict = f"healthy day {st.streak}/{config.resolve_after}: {figures}"
                st.history.append(HistoryDay(day, hist_counts, judge, healthy=False))
                continue
            s_prev = st.s
            st.s = detectors.cusum_step(st.s, sf.z, config.k)
            if st.s > 0 and s_prev == 0:
                st.run_start = day
            elif st.s == 0:
                st.run_start = None
            v.cusum = st.s
            day_alarm = (
                config.use_day_test
                and v.p is not None
                and v.p < config.day_alpha
                and sf.drop >= config.min_drop - 1e-12
            )
            cusum_alarm = st.s > config.h
            if day_alarm or cusum_alarm:
                detector = "+".join(
                    n for n, on in (("day-test", day_alarm), ("cusum", cusum_alarm)) if on
                )
                # A day-test alarm is a jump today (also when the CUSUM passes h with it: a
                # run of one or two noisy days before a step is no change-point); a CUSUM
                # alarm alone dates the change from the first day of its run.
                start = day if day_alarm else (st.run_start or day)
                candidates.append((seg, detector, start))
                if st.run_start is not None and st.run_start < start:
                    run_since[seg] = st.run_start
                v.state = "alarm"
                v.verdict = f"quality dropped ({detector}): {figures}, CUSUM {st.s:.1f}"
                st.history.append(HistoryDay(day, hist_counts, judge, healthy=False))
            else:
                v.state = "healthy"
                v.verdict = f"no alarm: {figures}, CUSUM {st.s:.1f} (h={config.h})"
                held = (
                    config.hold_run_s is not None
                    and st.s > config.hold_run_s
                    and (config.hold_max_n is None or hist_counts.n < config.hold_max_n)
                )
                st.history.append(HistoryDay(day, hist_counts, judge, healthy=not held))
                if held:
                    st.held.append(day)
                elif st.held:
                    release_held(st)

        fold_signal_alarms(day, signal_alarms, candidates, segs, verdicts)
        open_incidents(candidates, day, segs, verdicts, incidents, cause_fn)
        for seg, since in run_since.items():
            mark_run_degraded(segs[seg], since, day)
        if cause_fn is not None:
            # An incident opened before its cause showed clearly keeps looking, so later
            # alarms with the same cause join it instead of paging again.
            for inc in incidents:
                if inc.resolved_on is None and inc.cause_key is None:
                    seg = next((s for s in inc.segments if s != ALL), inc.segments[0])
                    cur = tuple(d for (d, s) in verdicts if s == seg and inc.opened_on <= d <= day)
                    ref = reference_days_at(segs, seg, inc.opened_on, config.reference.days)
                    inc.cause_key = cause_fn(seg, ref, cur).key
            join_by_cause(day, tested, segs, verdicts, incidents, cause_fn)

        # Resolutions: every segment of the incident healthy K days running.
        for inc in incidents:
            attached = [s for s in inc.segments if segs[s].incident is inc]
            if (
                inc.resolved_on is None
                and attached
                and all(_recovered(segs[s], config) for s in attached)
            ):
                close(inc, day, "healthy")
                for s in inc.segments:
                    if (day, s) in verdicts:
                        verdicts[(day, s)].state = "resolved"
        for a in action_by_day.get(day, []):
            inc = next((i for i in incidents if i.incident_id == a.incident_id), None)
            if inc is None or inc.opened_on > day:
                continue
            if a.action == "ack" and inc.acknowledged_by is None:
                inc.acknowledged_by, inc.acknowledged_at = a.actor, a.at
            elif a.action == "resolve" and inc.resolved_on is None:
                close(inc, day, "manual", a.actor)

    if cause_fn is not None:
        for inc in incidents:
            primary = _primary(inc, verdicts, config.min_drop)
            cur_days = tuple(
                d
                for (d, s), v in sorted(verdicts.items())
                if s == primary
                and v.incident_id == inc.incident_id
                and inc.opened_on <= d <= inc.last_degraded_on
            )
            ref_days = reference_days_at(segs, primary, inc.opened_on, config.reference.days)
            cause = cause_fn(primary, ref_days, cur_days or (inc.opened_on,))
            if cause.key is None:
                # Test, alone, the causes named for the incidents that overlap this one.
                for key in sorted(
                    {
                        o.cause_key
                        for o in incidents
                        if o is not inc
                        and is_value_cause(o.cause_key)
                        and o.opened_on <= (inc.resolved_on or day)
                        and inc.opened_on <= (o.resolved_on or day)
                    }
                ):
                    tried = cause_fn(
                        primary, ref_days, cur_days or (inc.opened_on,), hypothesis=key
                    )
                    if tried.key == key:
                        cause = tried
                        break
            # The attribution over the whole incident replaces the early one (a day or two
            # of data) that grouped the alarms: the key and the sentence always agree.
            inc.cause, inc.cause_key = cause.text, cause.key
    return History(
        verdicts=[verdicts[k] for k in sorted(verdicts)],
        incidents=sorted(incidents, key=lambda i: (i.opened_on, i.incident_id)),
    )
