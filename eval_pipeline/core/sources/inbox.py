"""Traces in: the trace-source interface, the JSONL/Parquet inbox source, and day ingestion.

A source *stages* one UTC day into two temporary tables of the connection it is given:
``staged_traces`` (the canonical trace columns) and ``staged_rejects`` (rows it could not
use, with location, line and reason). ``ingest_day`` then replaces that day in
``raw_traces`` / ``trace_rejects`` in one transaction. A source that cannot be read raises
``SourceUnavailable``: that day fails loudly instead of being recorded as a quiet day.

The inbox is untrusted input (anyone who can drop a file, and every end user whose text is
in a trace). What the inbox source does with it:

- Names: ``*.jsonl``, ``*.ndjson`` (plain or ``.gz``) and ``*.parquet`` are read; names
  are case-sensitive. Any other file, a symbolic link (file or folder: never followed), and
  anything that is not a regular file (a FIFO would block the run) is skipped and listed in
  the day's notes. Names starting with ``.`` are ignored silently: write under such a name
  (or any unread one) and rename into place, which is atomic.
- Settle rule, for plain JSONL (the only format where a partial file looks valid): a file
  whose last line is unfinished (no final newline) and that was modified less than
  ``settle_seconds`` ago (default 60 s, ``$EVAL_TRACE_SETTLE_SECONDS``; 0 reads everything)
  is still being written: it is skipped with a note and read by a later run. A file whose
  size or mtime changes while it is read is dropped from the day the same way. Gzip and
  Parquet carry their own end markers: a truncated one is rejected whole (line 0), never
  read in part. An older file with an unfinished last line is read; that line is rejected.
- Size: a line over ``max_row_bytes`` (default 1 MiB, ``$EVAL_TRACE_MAX_ROW_BYTES``) is
  rejected as ``line too long`` without being held whole in memory (only its first bytes are
  kept, for the excerpt); a query or answer over ``max_chars`` (default 100,000, the Phoenix
  source's cap, ``$EVAL_TRACE_MAX_CHARS``) is rejected as ``value too large``. Nothing
  bigger ever reaches the store or the judge.
- A UTF-8 byte order mark at the start of a file is dropped.
- Reject summaries (``rejects_by_reason``) count reasons by *kind* (the text before the
  first ``:`` or `` (``, at most ``MAX_REASON_KINDS`` kinds, the rest under ``other``) with
  at most ``EXAMPLES_PER_KIND`` examples each, so a day of a million bad rows still gives a
  small summary. Every rejected row is kept in ``trace_rejects`` with its full reason.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import duckdb
import numpy as np
import pandas as pd

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
    "source",
    "source_ref",
)

STAGED_TRACES_DDL = """
CREATE OR REPLACE TEMP TABLE staged_traces (
    trace_id VARCHAR, ts TIMESTAMP, user_query VARCHAR, assistant_response VARCHAR,
    segment VARCHAR, model VARCHAR, prompt_version VARCHAR, user_id VARCHAR, metadata JSON,
    source VARCHAR, source_ref VARCHAR)
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
    the store, so the DuckDB file is not held while a remote system answers."""

    name: str

    def stage_day(self, conn: duckdb.DuckDBPyConnection, day: dt.date) -> StageReport:
        """Fill temp tables staged_traces/staged_rejects with the day's rows."""
        ...


def create_staging(conn: duckdb.DuckDBPyConnection) -> None:
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
    """Stage the day from the source, then replace the day in the store atomically."""
    create_staging(conn)
    report = source.stage_day(conn, day)  # raises SourceUnavailable: nothing is written
    dup = conn.execute(
        "SELECT trace_id FROM staged_traces GROUP BY trace_id HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    if dup:
        raise RuntimeError(f"source {report.source} staged trace_id {dup[0]} twice")
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("DELETE FROM raw_traces WHERE partition_date = ?", [day])
        conn.execute(
            f"INSERT INTO raw_traces (partition_date, {', '.join(TRACE_COLUMNS)}) "
            f"SELECT ?::DATE, {', '.join(TRACE_COLUMNS)} FROM staged_traces",
            [day],
        )
        conn.execute("DELETE FROM trace_rejects WHERE partition_date = ?", [day])
        conn.execute(
            "INSERT INTO trace_rejects SELECT ?::DATE, source, location, line_no, reason, "
            "excerpt FROM staged_rejects",
            [day],
        )
        ingested = conn.execute("SELECT count(*) FROM staged_traces").fetchone()[0]
        rejected = conn.execute("SELECT count(*) FROM staged_rejects").fetchone()[0]
        conn.execute(
            "INSERT OR REPLACE INTO trace_ingests VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
            [day, report.source, report.files_read, report.rows_seen, ingested, rejected],
        )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    by_reason, examples = summarize_rejects(conn)
    seg_counts = conn.execute(
        "SELECT coalesce(segment, '(none)'), count(*) FROM staged_traces GROUP BY 1 "
        "ORDER BY 2 DESC, 1"
    ).fetchall()
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


# --- the inbox source -------------------------------------------------------------------

_DATE_IN_PATH = re.compile(r"(\d{4}-\d{2}-\d{2})")
CHUNK_BYTES = 32 * 1024 * 1024
EXCERPT_CHARS = 200
# Plain files are read and split by DuckDB in one go (about twice as fast as the Python
# reader). A file bigger than this is first scanned for a line over the row cap: if it has
# one, it is streamed in CHUNK_BYTES pieces instead, so a huge line never has to fit in
# memory. Gzip files and files that are not valid UTF-8 are always streamed.
FAST_PATH_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ROW_BYTES = 1024 * 1024
DEFAULT_MAX_CHARS = 100_000  # the Phoenix source's cap on a query or an answer
DEFAULT_SETTLE_SECONDS = 60.0
PLAIN_SUFFIXES = (".jsonl", ".ndjson")
GZIP_SUFFIXES = (".jsonl.gz", ".ndjson.gz")
READ_SUFFIXES = (*PLAIN_SUFFIXES, *GZIP_SUFFIXES, ".parquet")
_BOM = "\ufeff"
_BOM_BYTES = _BOM.encode()
_NOTE_EXAMPLES = 5


def file_day(path: Path, root: Path) -> dt.date | None:
    """The day a file belongs to: the first YYYY-MM-DD in its path below the inbox."""
    match = _DATE_IN_PATH.search(str(path.relative_to(root)))
    if not match:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _kind(expr: str) -> str:
    """SQL for the JSON type of an extracted JSON value, from its first character."""
    return (
        f"CASE WHEN {expr} IS NULL THEN NULL ELSE CASE left({expr}, 1) "
        "WHEN '\"' THEN 'VARCHAR' WHEN '{' THEN 'OBJECT' WHEN '[' THEN 'ARRAY' "
        "WHEN 'n' THEN 'NULL' WHEN 't' THEN 'BOOLEAN' WHEN 'f' THEN 'BOOLEAN' "
        "ELSE 'NUMBER' END END"
    )


# Classify each line once, in SQL, so a day of a million traces never goes through a Python
# loop per row. json_extract with a list of paths parses each line once; try() turns a line
# that is not JSON into NULL, and only those rows pay for finding out what is wrong.
_CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE _classified AS
WITH fields AS (
    SELECT source_file, line_no, raw, decode_error, dated, too_long,
        CASE WHEN NOT decode_error AND line_no > 0 AND too_long IS NULL
        THEN try(json_extract(raw, [
            '$.trace_id', '$.timestamp', '$.user_query', '$.assistant_response', '$.segment',
            '$.model', '$.prompt_version', '$.user_id', '$.metadata'])) END AS v
    FROM _lines
), typed AS (
    -- The JSON type of each extracted value from its first character: cheaper than
    -- parsing it again, and enough to tell string, number, object, array and null apart.
    SELECT *,
        {_kind("v[1]")} AS t_id, {_kind("v[2]")} AS t_ts, {_kind("v[3]")} AS t_q,
        {_kind("v[4]")} AS t_a, {_kind("v[5]")} AS t_seg, {_kind("v[6]")} AS t_model,
        {_kind("v[7]")} AS t_pv, {_kind("v[8]")} AS t_uid, {_kind("v[9]")} AS t_meta
    FROM fields
), parsed AS (
    SELECT *,
        CASE
            WHEN t_ts = 'VARCHAR' THEN
                try_cast(v[2] ->> '$' AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
            WHEN t_ts = 'NUMBER' THEN
                try(epoch_ms(CAST(CAST(v[2] AS DOUBLE) AS BIGINT)))
        END AS ts
    FROM typed
), classified AS (
SELECT source_file, line_no, raw, ts,
    v[1] ->> '$' AS trace_id, v[3] ->> '$' AS user_query, v[4] ->> '$' AS assistant_response,
    v[5] ->> '$' AS segment, v[6] ->> '$' AS model, v[7] ->> '$' AS prompt_version,
    v[8] ->> '$' AS user_id, CASE WHEN t_meta = 'OBJECT' THEN v[9] END AS metadata,
    (ts >= $start AND ts < $end) AS in_day,
    CASE
        WHEN line_no = 0 THEN coalesce(raw, 'empty file: no rows')
        WHEN too_long IS NOT NULL
            THEN 'line too long (' || too_long || ' bytes > ' || $max_row_bytes || ')'
        WHEN decode_error THEN 'undecodable bytes (not UTF-8)'
        WHEN v IS NULL THEN 'not valid JSON'
        WHEN t_id IS NULL AND json_type(raw) <> 'OBJECT'
            THEN 'not a JSON object (got ' || lower(json_type(raw)) || ')'
        WHEN t_id IS NULL OR t_id = 'NULL' THEN 'missing field trace_id'
        WHEN t_id <> 'VARCHAR' THEN 'wrong type: trace_id must be a string'
        WHEN length(trim(v[1] ->> '$')) = 0 THEN 'empty trace_id'
        WHEN t_ts IS NULL OR t_ts = 'NULL' THEN 'missing field timestamp'
        WHEN t_ts NOT IN ('VARCHAR', 'NUMBER')
            THEN 'wrong type: timestamp must be ISO 8601 text or epoch milliseconds'
        -- Epoch seconds read as milliseconds would land in January 1970, quietly.
        WHEN t_ts = 'NUMBER' AND abs(try_cast(v[2] AS DOUBLE)) < 1e11
            THEN 'bad timestamp: ' || v[2] || ' looks like epoch seconds; expected epoch '
                 || 'milliseconds'
        WHEN ts IS NULL THEN 'bad timestamp: not ISO 8601 or epoch milliseconds'
        WHEN t_q IS NULL OR t_q = 'NULL' THEN 'missing field user_query'
        WHEN t_q <> 'VARCHAR' THEN 'wrong type: user_query must be a string'
        WHEN t_a IS NULL OR t_a = 'NULL' THEN 'missing field assistant_response'
        WHEN t_a <> 'VARCHAR' THEN 'wrong type: assistant_response must be a string'
        WHEN length(v[3] ->> '$') > $max_chars THEN 'value too large (user query '
            || length(v[3] ->> '$') || ' chars > ' || $max_chars || ')'
        WHEN length(v[4] ->> '$') > $max_chars THEN 'value too large (answer '
            || length(v[4] ->> '$') || ' chars > ' || $max_chars || ')'
        WHEN coalesce(t_seg, 'NULL') NOT IN ('NULL', 'VARCHAR')
            THEN 'wrong type: segment must be a string'
        WHEN coalesce(t_model, 'NULL') NOT IN ('NULL', 'VARCHAR')
            THEN 'wrong type: model must be a string'
        WHEN coalesce(t_pv, 'NULL') NOT IN ('NULL', 'VARCHAR')
            THEN 'wrong type: prompt_version must be a string'
        WHEN coalesce(t_uid, 'NULL') NOT IN ('NULL', 'VARCHAR')
            THEN 'wrong type: user_id must be a string'
        WHEN coalesce(t_meta, 'NULL') NOT IN ('NULL', 'OBJECT')
            THEN 'wrong type: metadata must be an object'
        -- Fine except for landing on another day: a dated file's row is rejected; an
        -- undated file's row belongs to that other day and is simply not today's.
        WHEN dated AND NOT (ts >= $start AND ts < $end)
            THEN 'timestamp outside the file''s day: ' || strftime(ts, '%Y-%m-%dT%H:%M:%S')
                 || ' is not on ' || $day
    END AS reason
FROM parsed
)
-- Only a rejected row keeps an excerpt of its text: copying 200 characters of every good
-- row cost more than any other column.
SELECT * EXCLUDE (raw), CASE WHEN reason IS NOT NULL THEN left(raw, {EXCERPT_CHARS}) END AS excerpt
FROM classified
"""


def _env_number(name: str, default: float, convert=float):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = convert(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"${name} cannot be negative, got {raw!r}")
    return value


def _grouped_notes(skipped: list[tuple[str, str]]) -> list[str]:
    """One note per skip reason with a few names: bounded however many files there are."""
    by_why: dict[str, list[str]] = {}
    for name, why in skipped:
        by_why.setdefault(why, []).append(name)
    notes = []
    for why, names in by_why.items():
        shown = ", ".join(n[-120:] for n in names[:_NOTE_EXAMPLES])
        more = f" and {len(names) - _NOTE_EXAMPLES} more" if len(names) > _NOTE_EXAMPLES else ""
        notes.append(f"skipped {len(names)} file(s), {why}: {shown}{more}")
    return notes


@dataclass
class InboxSource:
    """Reads ``*.jsonl`` / ``*.ndjson`` (plain or gzip) and ``*.parquet`` files dropped in an
    inbox folder (what else is in it, and what is skipped, is in the module docstring).

    A file belongs to the day named in its path (``2026-10-01.jsonl``,
    ``2026-10-01/part-1.jsonl``); a file with no date in its path is read for every day and
    contributes the rows whose timestamp falls on that day. A row in a dated file whose
    timestamp is on another day is rejected with that reason, never moved silently.

    ``max_row_bytes``, ``max_chars`` and ``settle_seconds`` left at None come from
    ``$EVAL_TRACE_MAX_ROW_BYTES``, ``$EVAL_TRACE_MAX_CHARS`` and ``$EVAL_TRACE_SETTLE_SECONDS``,
    else the defaults above.
    """

    root: Path
    name: str = "jsonl"
    max_row_bytes: int | None = None
    max_chars: int | None = None
    settle_seconds: float | None = None

    def row_cap(self) -> int:
        if self.max_row_bytes is not None:
            return self.max_row_bytes
        return _env_number("EVAL_TRACE_MAX_ROW_BYTES", DEFAULT_MAX_ROW_BYTES, int)

    def value_cap(self) -> int:
        if self.max_chars is not None:
            return self.max_chars
        return _env_number("EVAL_TRACE_MAX_CHARS", DEFAULT_MAX_CHARS, int)

    def settle(self) -> float:
        if self.settle_seconds is not None:
            return self.settle_seconds
        return _env_number("EVAL_TRACE_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS)

    def scan(
        self, day: dt.date, now: float | None = None
    ) -> tuple[list[tuple[Path, os.stat_result]], list[tuple[str, str]]]:
        """The day's files to read (with their stat) and the skipped ones (name, why)."""
        if not self.root.is_dir():
            raise SourceUnavailable(f"trace inbox {self.root} does not exist")
        now = time.time() if now is None else now
        settle = self.settle()
        files: list[tuple[Path, os.stat_result]] = []
        skipped: list[tuple[str, str]] = []

        def ours(path: Path) -> bool:
            fday = file_day(path, self.root)
            return fday is None or fday == day

        for top, dirs, names in os.walk(self.root, followlinks=False):
            here = Path(top)
            for d in list(dirs):
                if d.startswith("."):
                    dirs.remove(d)
                elif (here / d).is_symlink():
                    dirs.remove(d)  # os.walk would not enter it; say so
                    if ours(here / d):
                        skipped.append((str((here / d).relative_to(self.root)), "symbolic link"))
            dirs.sort()
            for name in sorted(names):
                if name.startswith("."):
                    continue
                path = here / name
                if not ours(path):
                    continue
                rel = str(path.relative_to(self.root))
                try:
                    st = os.lstat(path)
                except FileNotFoundError:  # moved away while we looked
                    continue
                if stat.S_ISLNK(st.st_mode):
                    skipped.append((rel, "symbolic link"))
                elif not stat.S_ISREG(st.st_mode):
                    skipped.append((rel, "not a regular file"))
                elif not name.endswith(READ_SUFFIXES):
                    skipped.append((rel, f"unknown extension (read: {', '.join(READ_SUFFIXES)})"))
                elif name.endswith(PLAIN_SUFFIXES) and now - st.st_mtime < settle:
                    if _unfinished(path, st):
                        skipped.append((rel, "still being written (last line unfinished)"))
                    else:
                        files.append((path, st))
                else:
                    files.append((path, st))
        files.sort(key=lambda f: str(f[0]))
        return files, skipped

    def files_for(self, day: dt.date) -> list[Path]:
        return [path for path, _ in self.scan(day)[0]]

    def stage_day(self, conn: duckdb.DuckDBPyConnection, day: dt.date) -> StageReport:
        report = StageReport(source=self.name)
        cap, max_chars = self.row_cap(), self.value_cap()
        files, skipped = self.scan(day)
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE _lines (source_file VARCHAR, line_no BIGINT, "
            "raw VARCHAR, decode_error BOOLEAN, dated BOOLEAN, too_long BIGINT)"
        )
        for path, before in files:
            dated = file_day(path, self.root) is not None
            name = path.name
            if name.endswith(".parquet"):
                _load_parquet_lines(conn, path, dated, cap)
            elif name.endswith(GZIP_SUFFIXES):
                _load_gzip_lines(conn, path, dated, cap)
            else:
                _load_jsonl_lines(conn, path, dated, cap, before.st_size)
            try:
                after = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                after = None
            if after is None or (after.st_size, after.st_mtime_ns) != (
                before.st_size,
                before.st_mtime_ns,
            ):
                # Written to (or replaced) while we read it: none of it counts today.
                conn.execute("DELETE FROM _lines WHERE source_file = ?", [str(path)])
                skipped.append((str(path.relative_to(self.root)), "changed while being read"))
                continue
            report.files_read += 1
        report.notes.extend(_grouped_notes(skipped))
        report.rows_seen = conn.execute("SELECT count(*) FROM _lines").fetchone()[0]
        start = dt.datetime.combine(day, dt.time())
        conn.execute(
            _CLASSIFY_SQL,
            {
                "start": start,
                "end": start + dt.timedelta(days=1),
                "day": day.isoformat(),
                "max_row_bytes": cap,
                "max_chars": max_chars,
            },
        )
        conn.execute("DROP TABLE _lines")  # the raw text is no longer needed: free it now
        # Rejects of undated files are recorded on every day that reads them (each day's
        # report is complete on its own); a dated file's rejects only on its own day.
        conn.execute(
            "INSERT INTO staged_rejects SELECT ?, source_file, line_no, reason, excerpt "
            "FROM _classified WHERE reason IS NOT NULL",
            [self.name],
        )
        # Duplicate trace ids: the first occurrence (by file, line) wins, the others are
        # rejected naming it. A hash aggregate finds the few duplicated ids cheaply.
        conn.execute(
            """
            CREATE OR REPLACE TEMP TABLE _dups AS
            SELECT trace_id, min({'f': source_file, 'l': line_no}) AS first
            FROM _classified WHERE reason IS NULL AND in_day
            GROUP BY trace_id HAVING count(*) > 1
            """
        )
        conn.execute(
            """
            INSERT INTO staged_rejects
            SELECT ?, r.source_file, r.line_no, 'duplicate trace_id: ' || r.trace_id
                   || ' (first seen at ' || d.first.f || ':' || d.first.l || ')', r.excerpt
            FROM _classified r JOIN _dups d USING (trace_id)
            WHERE r.reason IS NULL AND r.in_day
              AND (r.source_file, r.line_no) <> (d.first.f, d.first.l)
            """,
            [self.name],
        )
        conn.execute(
            """
            INSERT INTO staged_traces
            SELECT r.trace_id, r.ts, r.user_query, r.assistant_response,
                   nullif(trim(r.segment), ''), r.model, r.prompt_version, r.user_id,
                   r.metadata, ?, r.source_file || ':' || r.line_no
            FROM _classified r LEFT JOIN _dups d USING (trace_id)
            WHERE r.reason IS NULL AND r.in_day
              AND (d.trace_id IS NULL OR (r.source_file, r.line_no) = (d.first.f, d.first.l))
            """,
            [self.name],
        )
        for table in ("_classified", "_dups"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        return report


def _unfinished(path: Path, st: os.stat_result) -> bool:
    """Whether a plain JSONL file ends in the middle of a line (no final newline)."""
    if st.st_size == 0:
        return False
    try:
        with path.open("rb") as fh:
            fh.seek(st.st_size - 1)
            return fh.read(1) != b"\n"
    except OSError:
        return True


def _longest_line(path: Path) -> int:
    """The length in bytes of the file's longest line, read in CHUNK_BYTES pieces."""
    longest, start, offset = 0, 0, 0  # start: offset where the current line began
    with path.open("rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset
            if len(ends):
                starts = np.concatenate(([start], ends[:-1] + 1))
                longest = max(longest, int((ends - starts).max()))
                start = int(ends[-1]) + 1
            offset += len(block)
    return max(longest, offset - start)


def _mark_empty(conn: duckdb.DuckDBPyConnection, path: Path, dated: bool) -> None:
    if not conn.execute(
        "SELECT count(*) FROM _lines WHERE source_file = ?", [str(path)]
    ).fetchone()[0]:
        # Line 0 stands for the whole file; the classifier reports it as an empty file.
        conn.execute("INSERT INTO _lines VALUES (?, 0, NULL, false, ?, NULL)", [str(path), dated])


def _load_jsonl_lines(
    conn: duckdb.DuckDBPyConnection, path: Path, dated: bool, cap: int, size: int
) -> None:
    """Append the file's lines to _lines with 1-based line numbers.

    The fast path lets DuckDB read and split the file, for files small enough to hold whole.
    A bigger file, or one that is not valid UTF-8 (DuckDB refuses it whole), is streamed by
    the Python path below, which flags bad lines one by one and keeps the rest.
    """
    if size > FAST_PATH_MAX_BYTES and _longest_line(path) > cap:
        with path.open("rb") as fh:
            _stream_lines(conn, fh, path, dated, cap)
        _mark_empty(conn, path, dated)
        return
    try:
        conn.execute(
            """
            INSERT INTO _lines
            SELECT ?, line_no,
                   CASE WHEN strlen(raw) > ? THEN left(raw, ?) ELSE raw END, false, ?,
                   CASE WHEN strlen(raw) > ? THEN strlen(raw) END
            FROM (
                SELECT CASE WHEN line_no = 1 AND starts_with(raw, chr(65279)) THEN raw[2:]
                            ELSE raw END AS raw, line_no
                FROM (
                    SELECT unnest(parts) AS raw, generate_subscripts(parts, 1) AS line_no
                    FROM (SELECT string_split(content, chr(10)) AS parts FROM read_text(?))
                )
            ) -- blank lines carry nothing; a trailing CR is JSON whitespace and harmless
            WHERE trim(raw, ' ' || chr(9) || chr(13)) <> ''
            """,
            [str(path), cap, EXCERPT_CHARS, dated, cap, str(path)],
        )
    except duckdb.InvalidInputException:
        with path.open("rb") as fh:
            _stream_lines(conn, fh, path, dated, cap)
    _mark_empty(conn, path, dated)


def _load_gzip_lines(conn: duckdb.DuckDBPyConnection, path: Path, dated: bool, cap: int) -> None:
    """A gzip file is streamed; a truncated or corrupt one is rejected whole, never in part."""
    try:
        with gzip.open(path, "rb") as fh:
            _stream_lines(conn, fh, path, dated, cap)
    except (OSError, EOFError, zlib.error) as exc:
        conn.execute("DELETE FROM _lines WHERE source_file = ?", [str(path)])
        why = str(exc)[:200] or type(exc).__name__
        conn.execute(
            "INSERT INTO _lines VALUES (?, 0, ?, false, ?, NULL)",
            [str(path), f"unreadable gzip file: {why}", dated],
        )
        return
    _mark_empty(conn, path, dated)


def _bounded_lines(fh: IO[bytes], cap: int) -> Iterator[list[tuple[bytes, int]]]:
    """Batches of (line bytes, full length) from a binary stream, about CHUNK_BYTES each.

    A line longer than ``cap`` comes with only its first ``cap + 1`` bytes: memory stays
    bounded by CHUNK_BYTES + cap however long a line is (a 1 GB line without a newline
    included). A BOM at the start of the stream is dropped.
    """
    head, head_len = b"", 0  # the line in progress: its first bytes and its full length
    first = True
    while True:
        block = fh.read(CHUNK_BYTES)
        if first:
            while len(block) < len(_BOM_BYTES) and block and _BOM_BYTES.startswith(block):
                more = fh.read(len(_BOM_BYTES) - len(block))
                if not more:
                    break
                block += more
            if block.startswith(_BOM_BYTES):
                block = block[len(_BOM_BYTES) :]
            first = False
        if not block:
            if head_len:
                yield [(head, head_len)]
            return
        parts = block.split(b"\n")
        room = max(0, cap + 1 - len(head))
        head, head_len = head + parts[0][:room], head_len + len(parts[0])
        if len(parts) == 1:
            continue
        batch = [(head, head_len)]
        batch.extend((p[: cap + 1], len(p)) for p in parts[1:-1])
        tail = parts[-1]
        head, head_len = tail[: cap + 1], len(tail)
        del parts, block
        yield batch


def _stream_lines(
    conn: duckdb.DuckDBPyConnection, fh: IO[bytes], path: Path, dated: bool, cap: int
) -> None:
    """Append a stream's lines to _lines, flagging undecodable and oversize lines."""
    line_no = 0
    for batch in _bounded_lines(fh, cap):
        numbers = range(line_no + 1, line_no + 1 + len(batch))
        line_no += len(batch)
        too_long = [n if n > cap else None for _, n in batch]
        raws = [b if n <= cap else b"" for b, n in batch]
        try:  # most batches are valid UTF-8: decode them in one go
            texts = b"\n".join(raws).decode("utf-8").split("\n")
            bad = [False] * len(raws)
        except UnicodeDecodeError:
            texts, bad = [], []
            for raw in raws:
                try:
                    texts.append(raw.decode("utf-8"))
                    bad.append(False)
                except UnicodeDecodeError:
                    texts.append(raw.decode("utf-8", errors="replace"))
                    bad.append(True)
        for i, (raw, n) in enumerate(batch):
            if n > cap:  # only the head is kept, for the excerpt
                texts[i] = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
        frame = pd.DataFrame(
            {
                "line_no": numbers,
                "raw": pd.Series(texts, dtype=object).str.rstrip("\r"),
                "decode_error": bad,
                "too_long": pd.array(too_long, dtype="Int64"),
            }
        )
        # Blank lines are allowed in JSONL and carry nothing (JSON whitespace only).
        frame = frame[frame["raw"].str.strip(" \t\r") != ""]
        if len(frame):
            frame["raw"] = frame["raw"].where(
                frame["too_long"].isna(), frame["raw"].str[:EXCERPT_CHARS]
            )
            conn.register("_chunk", frame)
            try:
                conn.execute(
                    "INSERT INTO _lines SELECT ?, line_no, raw, decode_error, ?, too_long "
                    "FROM _chunk",
                    [str(path), dated],
                )
            finally:
                conn.unregister("_chunk")


def _load_parquet_lines(conn: duckdb.DuckDBPyConnection, path: Path, dated: bool, cap: int) -> None:
    """A Parquet file goes through the same checks: each row becomes a JSON object."""
    try:
        conn.execute(
            "INSERT INTO _lines SELECT ?, n, CASE WHEN strlen(j) > ? THEN left(j, ?) ELSE j END, "
            "false, ?, CASE WHEN strlen(j) > ? THEN strlen(j) END FROM ("
            "SELECT file_row_number + 1 AS n, to_json(t)::VARCHAR AS j "
            "FROM read_parquet(?, file_row_number = true) t)",
            [str(path), cap, EXCERPT_CHARS, dated, cap, str(path)],
        )
    except duckdb.Error as exc:
        conn.execute(
            "INSERT INTO _lines VALUES (?, 0, ?, false, ?, NULL)",
            [str(path), f"unreadable parquet file: {exc}", dated],
        )
