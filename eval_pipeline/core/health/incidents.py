"""Pipeline-health incidents: the pipeline itself failed, or a day was never evaluated.

Lifecycle, per (job, scope) (scope: a partition key, ``first...last`` for a ranged run, the
feedback file's hash, or '' for an unpartitioned job):

- a failed run opens an incident, or extends the open one (``failures`` + 1, the latest
  step, error and run);
- a day whose drift report is missing after the freshness deadline opens one too (reason
  'missing'), even when no run was ever launched; a failure of the same day is the same
  incident;
- the next successful run of the same job and scope resolves it (a ranged run resolves every
  open single-day incident inside its range, and a single day resolves the open range
  incidents that contain it only when the range is that one day).

Quiet by design: a failure is *recorded* at once but *paged* only once it has stayed open for
``retry_window`` (a Dagster run retry, or the feedback sensor's next attempt, succeeding
within it resolves the incident without anyone hearing of it: no 'opened', no 'resolved').
A missing day is already hours late, so it pages at once. The events returned here go to the
notifications' ``deliver``/``deliver_in_phases`` with ``kind="pipeline"``; its notify window
(``notify_within_days``) keeps a backfill over old days from paging about old failures,
because each event's day is the day the incident is about, not the day the run happened.

Plain Python over a DuckDB connection; callers keep the connection short and never hold it
while notifications are sent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from eval_pipeline.core.http import scrub
from eval_pipeline.core.notify.events import OPENED, RESOLVED, IncidentEvent

KIND = "pipeline"
FAILURE, MISSING = "failure", "missing"
DEFAULT_RETRY_WINDOW = dt.timedelta(minutes=20)
MAX_ERROR_CHARS = 300
RANGE_SEP = "..."

_QUALIFIED = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )")

_COLUMNS = (
    "incident_id, kind, job, scope, day, reason, status, opened_at, last_failure_at, failures, "
    "step, error, run_id, run_url, paged, resolved_at, resolved_by_run, resolution"
)


def first_line(text: str | None, secrets: Iterable[str | None] = ()) -> str:
    """The first non-blank line of an error, secrets scrubbed (before the cut), bounded."""
    lines = [ln.strip() for ln in scrub(str(text or ""), secrets).splitlines() if ln.strip()]
    line = " ".join(lines[0].split()) if lines else "no error message"
    line = _QUALIFIED.sub(
        "", line
    )  # "pkg.mod.PhoenixUnavailable: ..." -> "PhoenixUnavailable: ..."
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def run_url(base_url: str | None, run_id: str | None) -> str | None:
    """The run's page in the Dagster UI, when a base URL is configured."""
    if not base_url or not run_id:
        return None
    if not re.fullmatch(r"https?://[^\s<>|]+", base_url):
        return None  # not a plain http(s) URL: no link rather than a broken one
    return f"{base_url.rstrip('/')}/runs/{run_id}"


def scope_days(scope: str) -> tuple[dt.date, dt.date] | None:
    """(first, last) day of a partition scope, or None for a scope that is not days."""
    first, _, last = scope.partition(RANGE_SEP)
    try:
        return dt.date.fromisoformat(first), dt.date.fromisoformat(last or first)
    except ValueError:
        return None


@dataclass(frozen=True)
class RunOutcome:
    """What the sensors saw of one finished run, in plain values."""

    job: str  # the logical job (an ad-hoc asset run is mapped to the job of its assets)
    scope: str
    run_id: str
    at: dt.datetime  # when it finished (naive UTC)
    day: dt.date | None = None  # None: the day of ``at`` (an unpartitioned job)
    step: str | None = None
    error: str = ""  # already one scrubbed line (see ``first_line``)

    @property
    def about(self) -> dt.date:
        if self.day is not None:
            return self.day
        days = scope_days(self.scope)
        return days[1] if days else self.at.date()


@dataclass
class HealthIncident:
    incident_id: str
    kind: str
    job: str
    scope: str
    day: dt.date
    reason: str
    status: str
    opened_at: dt.datetime
    last_failure_at: dt.datetime
    failures: int
    step: str | None
    error: str
    run_id: str | None
    run_url: str | None
    paged: bool
    resolved_at: dt.datetime | None = None
    resolved_by_run: str | None = None
    resolution: str | None = None

    def title(self) -> str:
        what = self.job + (f" for {self.scope}" if self.scope else "")
        if self.reason == MISSING and self.run_id is None:
            return f"{what}: no report by the deadline"
        step = f" at step {self.step}" if self.step else ""
        return f"{what} failed{step}"

    def event(self, event: str, day: dt.date | None = None) -> IncidentEvent:
        details: dict[str, Any] = {
            "cause": self.error,
            "job": self.job,
            "scope": self.scope,
            "step": self.step,
            "run_id": self.run_id,
            "failures": self.failures,
            "opened_on": self.opened_at.date().isoformat(),
            "severity": "error",
        }
        if self.run_url:
            details["ui_url"] = self.run_url
        if event == RESOLVED and self.resolved_by_run:
            details["resolved_by_run"] = self.resolved_by_run
        return IncidentEvent(
            incident_id=self.incident_id,
            event=event,
            kind=self.kind,
            day=day or self.day,
            title=self.title(),
            details=details,
        )

    def as_row(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in _COLUMNS.split(", ")}
        for key in ("day", "opened_at", "last_failure_at", "resolved_at"):
            if row[key] is not None:
                row[key] = row[key].isoformat()
        return row


def _rows(
    conn: duckdb.DuckDBPyConnection, where: str, params: Sequence[Any]
) -> list[HealthIncident]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM health_incidents WHERE {where} ORDER BY opened_at, incident_id",
        list(params),
    ).fetchall()
    return [HealthIncident(*r) for r in rows]


def _save(conn: duckdb.DuckDBPyConnection, inc: HealthIncident) -> None:
    names = _COLUMNS.split(", ")
    values = [getattr(inc, k) for k in names]
    conn.execute(
        f"INSERT OR REPLACE INTO health_incidents ({_COLUMNS}) VALUES "
        f"({', '.join('?' for _ in names)})",
        values,
    )


def _new_id(job: str, scope: str, at: dt.datetime) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", scope)[:80]
    return (
        f"health-{job}-{safe}-{at.strftime('%Y%m%dT%H%M%S')}"
        if safe
        else (f"health-{job}-{at.strftime('%Y%m%dT%H%M%S')}")
    )


def open_incidents(conn: duckdb.DuckDBPyConnection, job: str | None = None) -> list[HealthIncident]:
    if job is None:
        return _rows(conn, "status = 'open'", [])
    return _rows(conn, "status = 'open' AND job = ?", [job])


def incidents(conn: duckdb.DuckDBPyConnection, status: str | None = None) -> list[HealthIncident]:
    """Every health incident (or those with ``status``), oldest first."""
    if status is None:
        return _rows(conn, "true", [])
    return _rows(conn, "status = ?", [status])


@dataclass
class Outcome:
    """What a call changed: the events to notify and the incidents it touched."""

    events: list[IncidentEvent] = field(default_factory=list)
    touched: list[HealthIncident] = field(default_factory=list)


def record_failure(
    conn: duckdb.DuckDBPyConnection,
    run: RunOutcome,
    *,
    retry_window: dt.timedelta = DEFAULT_RETRY_WINDOW,
    base_url: str | None = None,
) -> Outcome:
    """A failed run: open an incident for (job, scope), or extend the open one. Pages at once
    only when ``retry_window`` is zero; otherwise ``due_pages`` pages it later if it is still
    open (a retry that succeeds first keeps everyone asleep)."""
    out = Outcome()
    found = _rows(conn, "status = 'open' AND job = ? AND scope = ?", [run.job, run.scope])
    link = run_url(base_url, run.run_id)
    if found:
        inc = found[0]
        if inc.run_id == run.run_id and inc.last_failure_at == run.at:
            return out  # the same failure seen twice (a sensor re-evaluated): nothing new
        inc.failures += 1
        inc.last_failure_at = max(inc.last_failure_at, run.at)
        inc.step, inc.error, inc.run_id, inc.run_url = run.step, run.error, run.run_id, link
        inc.reason = FAILURE
    else:
        inc = HealthIncident(
            incident_id=_new_id(run.job, run.scope, run.at),
            kind=KIND,
            job=run.job,
            scope=run.scope,
            day=run.about,
            reason=FAILURE,
            status="open",
            opened_at=run.at,
            last_failure_at=run.at,
            failures=1,
            step=run.step,
            error=run.error or "the run failed",
            run_id=run.run_id,
            run_url=link,
            paged=False,
        )
    if not inc.paged and retry_window <= dt.timedelta(0):
        inc.paged = True
        out.events.append(inc.event(OPENED))
    _save(conn, inc)
    out.touched.append(inc)
    return out


def record_success(conn: duckdb.DuckDBPyConnection, run: RunOutcome) -> Outcome:
    """A successful run resolves the open incidents of the same job and scope (a ranged run:
    every open day inside its range too). Only an incident that was paged sends 'resolved'."""
    out = Outcome()
    span = scope_days(run.scope)
    for inc in open_incidents(conn, run.job):
        same = inc.scope == run.scope
        inside = False
        if span and not same:
            days = scope_days(inc.scope)
            inside = days is not None and span[0] <= days[0] and days[1] <= span[1]
        if not (same or inside):
            continue
        inc.status, inc.resolved_at, inc.resolved_by_run = "resolved", run.at, run.run_id
        inc.resolution = "recovered" if inc.paged else "recovered before paging"
        _save(conn, inc)
        out.touched.append(inc)
        if inc.paged:
            out.events.append(inc.event(RESOLVED, day=max(inc.day, run.about)))
    return out


def record_missing(
    conn: duckdb.DuckDBPyConnection,
    job: str,
    day: dt.date,
    error: str,
    *,
    now: dt.datetime,
    run_id: str | None = None,
    base_url: str | None = None,
) -> Outcome:
    """A day with no report after its deadline. Opens (and pages at once) an incident for the
    job's partition ``day`` unless one is already open for it (a failure of that day, or an
    earlier freshness tick): then nothing new is sent."""
    out = Outcome()
    scope = day.isoformat()
    if _rows(conn, "status = 'open' AND job = ? AND scope = ?", [job, scope]):
        return out
    inc = HealthIncident(
        incident_id=_new_id(job, scope, now),
        kind=KIND,
        job=job,
        scope=scope,
        day=day,
        reason=MISSING,
        status="open",
        opened_at=now,
        last_failure_at=now,
        failures=1,
        step=None,
        error=error,
        run_id=run_id,
        run_url=run_url(base_url, run_id),
        paged=True,
    )
    _save(conn, inc)
    out.touched.append(inc)
    out.events.append(inc.event(OPENED))
    return out


def due_pages(
    conn: duckdb.DuckDBPyConnection,
    *,
    now: dt.datetime,
    retry_window: dt.timedelta = DEFAULT_RETRY_WINDOW,
) -> Outcome:
    """Failures still open after the retry window, not yet paged: page them now."""
    out = Outcome()
    for inc in _rows(
        conn, "status = 'open' AND NOT paged AND opened_at <= ?", [now - retry_window]
    ):
        inc.paged = True
        _save(conn, inc)
        out.touched.append(inc)
        out.events.append(inc.event(OPENED))
    return out


def recent(conn: duckdb.DuckDBPyConnection, limit: int = 20) -> list[HealthIncident]:
    """Open incidents first, then the latest resolved ones."""
    rows = _rows(conn, "true", [])
    rows.sort(key=lambda i: (i.status != "open", -i.opened_at.timestamp()))
    return rows[:limit]


def _cell(text: object) -> str:
    return " ".join(str(text if text is not None else "").split()).replace("|", "/")[:160]


def markdown_table(rows: Sequence[HealthIncident]) -> str:
    """Health incidents as a markdown table for the UI (text on one line, pipes replaced)."""
    if not rows:
        return "no pipeline-health incidents"
    out = [
        "| incident | status | job | scope | opened | failures | step | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in rows:
        status = i.status if i.status == "open" else f"resolved ({i.resolution})"
        out.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    i.incident_id,
                    status,
                    i.job,
                    i.scope or "-",
                    i.opened_at.isoformat(timespec="minutes"),
                    i.failures,
                    i.step or "-",
                    i.error,
                )
            )
            + " |"
        )
    return "\n".join(out)


def fingerprint(rows: Sequence[HealthIncident]) -> str:
    """Changes when an incident opens, extends or resolves (to report the table only then)."""
    return ";".join(f"{i.incident_id}:{i.status}:{i.failures}:{i.paged}" for i in rows)


def table_exists(conn: duckdb.DuckDBPyConnection) -> bool:
    """False in a store opened read-only before its health migration was applied."""
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'health_incidents'"
        ).fetchone()[0]
    )
