"""Traces in: the trace-source interface and day ingestion, shared by every source.

A source *stages* one UTC day into two temporary tables of the connection it is given:
``staged_traces`` (the canonical trace columns) and ``staged_rejects`` (rows it could not
use, with location, line and reason). ``ingest_day`` then replaces that day in
``raw_traces`` / ``trace_rejects`` in one transaction; a source may also append its accepted
rows to ``raw_traces`` itself inside it (``write_day``: the inbox does, so a large day is
written once). A source that cannot be read raises
``SourceUnavailable``: that day fails loudly instead of being recorded as a quiet day. A
source may stage ``staged_traces`` as a view, and may have ``release(conn)``, called once the
day is written, to drop what the view reads. A day whose raw traces the retention dropped
(``core/retention.py``) is not re-ingested as an empty day: that raises ``RawDayDropped``.

Reject summaries (``rejects_by_reason``) count reasons by *kind* (the text before the first
``:`` or `` (``, at most ``MAX_REASON_KINDS`` kinds, the rest under ``other``) with at most
``EXAMPLES_PER_KIND`` examples each, so a day of a million bad rows still gives a small
summary. Every rejected row is kept in ``trace_rejects`` with its full reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

import duckdb

from eval_pipeline.core import retention

TRACE_COLUMNS = (
    "trace_id",
    "ts",
    "user_query",
    "assistant_response",
    "segment",
    "model",
    "prompt_version",
    "user_id",
    "metadata",
    "context",
    "conversation",
    "tool_calls",
    "source",
    "source_ref",
)

STAGED_TRACES_DDL = """
CREATE OR REPLACE TEMP TABLE staged_traces (
    trace_id VARCHAR, ts TIMESTAMP, user_query VARCHAR, assistant_response VARCHAR,
    segment VARCHAR, model VARCHAR, prompt_version VARCHAR, user_id VARCHAR, metadata JSON,
    context JSON, conversation JSON, tool_calls JSON, source VARCHAR, source_ref VARCHAR)
"""
STAGED_REJECTS_DDL = """
CREATE OR REPLACE TEMP TABLE staged_rejects (
    source VARCHAR, location VARCHAR, line_no BIGINT, reason VARCHAR, excerpt VARCHAR)
"""


class SourceUnavailable(RuntimeError):
    """The source could not be read (down, erroring, too slow). The day must fail."""


@dataclass
class StageReport:
    source: str
    files_read: int = 0
    rows_seen: int = 0
    notes: list[str] = field(default_factory=list)


class TraceSource(Protocol):
    """A source may also have ``prefetch(day)``: network reads done before the caller opens
    the store, so the DuckDB file is not held while a remote system answers; ``write_day(conn,
    day)``: called inside ``ingest_day``'s transaction, to append rows to ``raw_traces`` itself
    and finish staging (reads that may fail belong in ``stage_day``: an error aborts the
    transaction); and ``resolves_duplicates = True`` when it rejects a repeated trace id
    itself."""

    name: str

    def stage_day(self, conn: duckdb.DuckDBPyConnection, day: dt.date) -> StageReport:
        """Fill temp tables staged_traces/staged_rejects with the day's rows."""
        ...


def create_staging(conn: duckdb.DuckDBPyConnection) -> None:
    drop_staged_traces(conn)  # a source may have left it as a view
    conn.execute(STAGED_TRACES_DDL)
    conn.execute(STAGED_REJECTS_DDL)


@dataclass
class IngestResult:
    day: dt.date
    source: str
    files_read: int
    rows_seen: int
    rows_ingested: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]  # by reason kind, at most MAX_REASON_KINDS keys
    segments: dict[str, int]  # at most MAX_SEGMENTS_REPORTED keys, the rest summed
    notes: list[str]
    reject_examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)


# Bounds on what a day's summary can hold, whatever the data: Dagster metadata and log lines
# are kept forever in the run storage.
MAX_REASON_KINDS = 20
EXAMPLES_PER_KIND = 3
MAX_SEGMENTS_REPORTED = 50
OTHER_SEGMENTS = "(other segments)"
OTHER_KIND = "other"
_EXAMPLE_CHARS = 200

# The kind of a reason: the text before its first ":" or " (" (values come after).
_KIND_SQL = "left(rtrim(regexp_extract(reason, '^[^:(]*')), 80)"


def summarize_rejects(
    conn: duckdb.DuckDBPyConnection, table: str = "staged_rejects"
) -> tuple[dict[str, int], dict[str, list[dict[str, str]]]]:
    """Counts by reason kind and a few examples of each, both bounded in size."""
    counts = conn.execute(
        f"SELECT {_KIND_SQL} AS kind, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    kept = counts if len(counts) <= MAX_REASON_KINDS else counts[: MAX_REASON_KINDS - 1]
    by_kind = {kind or OTHER_KIND: int(n) for kind, n in kept}
    rest = sum(int(n) for _, n in counts[len(kept) :])
    if rest:
        by_kind[OTHER_KIND] = by_kind.get(OTHER_KIND, 0) + rest
    examples: dict[str, list[dict[str, str]]] = {}
    rows = conn.execute(
        f"""
        SELECT kind, location, line_no, reason FROM (
            SELECT {_KIND_SQL} AS kind, right(location, 120) AS location, line_no,
                   left(reason, {_EXAMPLE_CHARS}) AS reason,
                   row_number() OVER (PARTITION BY {_KIND_SQL} ORDER BY location, line_no) AS k
            FROM {table}
        ) WHERE k <= ? ORDER BY kind, k
        """,
        [EXAMPLES_PER_KIND],
    ).fetchall()
    for kind, location, line_no, reason in rows:
        key = kind if kind in by_kind else OTHER_KIND
        bucket = examples.setdefault(key, [])
        if len(bucket) < EXAMPLES_PER_KIND:
            bucket.append({"at": f"{location}:{line_no}", "reason": reason})
    return by_kind, examples


def reject_summary(res: IngestResult) -> str:
    """One bounded log line: rejects by kind and the first example of the commonest kind."""
    kinds = ", ".join(f"{kind} {n}" for kind, n in res.rejects_by_reason.items())
    text = f"{res.rows_rejected} rows rejected: {kinds}"
    if res.rejects_by_reason:
        top = next(iter(res.rejects_by_reason))
        first = (res.reject_examples.get(top) or [None])[0]
        if first:
            text += f" (e.g. {first['at'][-80:]}: {first['reason'][:150]})"
    return text


def ingest_day(conn: duckdb.DuckDBPyConnection, source: TraceSource, day: dt.date) -> IngestResult:
    """Stage the day from the source, then replace the day in the store atomically.

    A source with ``write_day(conn, day)`` has it called inside the transaction, after the
    day's old rows are deleted: it may append its accepted rows to ``raw_traces`` itself (the
    inbox does, so a large day is written once) and finish staging there. Whatever fails
    leaves the store as it was.
    """
    create_staging(conn)
    report = source.stage_day(conn, day)  # raises SourceUnavailable: nothing is written
    was_dropped = retention.dropped(conn, day)
    write_day = getattr(source, "write_day", None)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("DELETE FROM raw_traces WHERE partition_date = ?", [day])
        if callable(write_day):
            write_day(conn, day)
        conn.execute(
            f"INSERT INTO raw_traces (partition_date, {', '.join(TRACE_COLUMNS)}) "
            f"SELECT ?::DATE, {', '.join(TRACE_COLUMNS)} FROM staged_traces",
            [day],
        )
        ingested = conn.execute(
            "SELECT count(*) FROM raw_traces WHERE partition_date = ?", [day]
        ).fetchone()[0]
        if was_dropped and not ingested:
            # Recording an empty day would hide that its traces were dropped, not absent.
            raise retention.dropped_error(day, was_dropped, "re-ingesting")
        # A source that resolves repeats itself (first occurrence wins) says so: the day's rows
        # are not grouped twice.
        resolved = getattr(source, "resolves_duplicates", False)
        dup = None if resolved else _repeated_trace_id(conn, day)
        if dup:
            raise RuntimeError(f"source {report.source} staged trace_id {dup} twice")
        conn.execute("DELETE FROM trace_rejects WHERE partition_date = ?", [day])
        conn.execute(
            "INSERT INTO trace_rejects SELECT ?::DATE, source, location, line_no, reason, "
            "excerpt FROM staged_rejects",
            [day],
        )
        rejected = conn.execute("SELECT count(*) FROM staged_rejects").fetchone()[0]
        conn.execute(
            "INSERT OR REPLACE INTO trace_ingests VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
            [day, report.source, report.files_read, report.rows_seen, ingested, rejected],
        )
        # The day's files were put back: it is whole again.
        conn.execute("DELETE FROM raw_trace_retention WHERE partition_date = ?", [day])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    release = getattr(source, "release", None)
    try:
        by_reason, examples = summarize_rejects(conn)
        seg_counts = conn.execute(
            "SELECT coalesce(segment, '(none)'), count(*) FROM raw_traces "
            "WHERE partition_date = ? GROUP BY 1 ORDER BY 2 DESC, 1",
            [day],
        ).fetchall()
    finally:
        # Whatever the summary does, what the source left (the inbox's marker rows) goes.
        if callable(release):
            release(conn)
    segments = dict(sorted(seg_counts[:MAX_SEGMENTS_REPORTED]))
    if len(seg_counts) > MAX_SEGMENTS_REPORTED:
        segments[OTHER_SEGMENTS] = sum(n for _, n in seg_counts[MAX_SEGMENTS_REPORTED:])
    return IngestResult(
        day=day,
        source=report.source,
        files_read=report.files_read,
        rows_seen=report.rows_seen,
        rows_ingested=int(ingested),
        rows_rejected=int(rejected),
        rejects_by_reason=by_reason,
        segments=segments,
        notes=report.notes,
        reject_examples=examples,
    )


def _repeated_trace_id(conn: duckdb.DuckDBPyConnection, day: dt.date) -> str | None:
    """A trace id the day holds twice, if any. Grouping 64-bit hashes is far cheaper than
    grouping the ids; only a repeated hash is checked exactly."""
    row = conn.execute(
        """
        SELECT trace_id FROM raw_traces WHERE partition_date = $day AND hash(trace_id) IN (
            SELECT h FROM (SELECT hash(trace_id) AS h FROM raw_traces WHERE partition_date = $day)
            GROUP BY h HAVING count(*) > 1)
        GROUP BY trace_id HAVING count(*) > 1 LIMIT 1
        """,
        {"day": day},
    ).fetchone()
    return row[0] if row else None


def drop_staged_traces(conn: duckdb.DuckDBPyConnection) -> None:
    """Drop staged_traces whether a source left it as a table or as a view."""
    if conn.execute(
        "SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name = 'staged_traces'"
    ).fetchone()[0]:
        conn.execute("DROP VIEW staged_traces")
    conn.execute("DROP TABLE IF EXISTS staged_traces")
