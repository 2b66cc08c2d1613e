"""Traces in: the trace-source interface, the JSONL/Parquet inbox source, and day ingestion.

A source *stages* one UTC day into two temporary tables of the connection it is given:
``staged_traces`` (the canonical trace columns) and ``staged_rejects`` (rows it could not
use, with location, line and reason). ``ingest_day`` then replaces that day in
``raw_traces`` / ``trace_rejects`` in one transaction. A source that cannot be read raises
``SourceUnavailable``: that day fails loudly instead of being recorded as a quiet day.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb
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
    rejects_by_reason: dict[str, int]
    segments: dict[str, int]
    notes: list[str]


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
    by_reason = dict(
        conn.execute(
            "SELECT regexp_replace(reason, ' \\(.*$', ''), count(*) FROM staged_rejects "
            "GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    )
    segments = dict(
        conn.execute(
            "SELECT coalesce(segment, '(none)'), count(*) FROM staged_traces GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
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
    )


# --- the inbox source -------------------------------------------------------------------

_DATE_IN_PATH = re.compile(r"(\d{4}-\d{2}-\d{2})")
CHUNK_BYTES = 32 * 1024 * 1024
EXCERPT_CHARS = 200


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
    SELECT source_file, line_no, raw, decode_error, dated,
        CASE WHEN NOT decode_error AND line_no > 0 THEN try(json_extract(raw, [
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
            THEN 'timestamp ' || strftime(ts, '%Y-%m-%dT%H:%M:%S')
                 || ' is outside the file''s day ' || $day
    END AS reason
FROM parsed
)
-- Only a rejected row keeps an excerpt of its text: copying 200 characters of every good
-- row cost more than any other column.
SELECT * EXCLUDE (raw), CASE WHEN reason IS NOT NULL THEN left(raw, {EXCERPT_CHARS}) END AS excerpt
FROM classified
"""


@dataclass
class InboxSource:
    """Reads ``*.jsonl`` (and ``*.parquet``) files dropped in an inbox folder.

    A file belongs to the day named in its path (``2026-10-01.jsonl``,
    ``2026-10-01/part-1.jsonl``); a file with no date in its path is read for every day and
    contributes the rows whose timestamp falls on that day. A row in a dated file whose
    timestamp is on another day is rejected with that reason, never moved silently.
    """

    root: Path
    name: str = "jsonl"

    def files_for(self, day: dt.date) -> list[Path]:
        if not self.root.is_dir():
            raise SourceUnavailable(f"trace inbox {self.root} does not exist")
        files = []
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix not in (".jsonl", ".ndjson", ".parquet"):
                continue
            fday = file_day(path, self.root)
            if fday is None or fday == day:
                files.append(path)
        return files

    def stage_day(self, conn: duckdb.DuckDBPyConnection, day: dt.date) -> StageReport:
        report = StageReport(source=self.name)
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE _lines (source_file VARCHAR, line_no BIGINT, "
            "raw VARCHAR, decode_error BOOLEAN, dated BOOLEAN)"
        )
        for path in self.files_for(day):
            report.files_read += 1
            dated = file_day(path, self.root) is not None
            if path.suffix == ".parquet":
                _load_parquet_lines(conn, path, dated)
            else:
                _load_jsonl_lines(conn, path, dated)
        report.rows_seen = conn.execute("SELECT count(*) FROM _lines").fetchone()[0]
        start = dt.datetime.combine(day, dt.time())
        conn.execute(
            _CLASSIFY_SQL,
            {"start": start, "end": start + dt.timedelta(days=1), "day": day.isoformat()},
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
            SELECT ?, r.source_file, r.line_no, 'duplicate trace_id ' || r.trace_id
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


def _load_jsonl_lines(conn: duckdb.DuckDBPyConnection, path: Path, dated: bool) -> None:
    """Append the file's lines to _lines with 1-based line numbers.

    The fast path lets DuckDB read and split the file. A file that is not valid UTF-8 makes
    DuckDB refuse it whole; it then goes through the Python path below, which flags the bad
    lines one by one and keeps the rest.
    """
    try:
        conn.execute(
            """
            INSERT INTO _lines
            SELECT ?, line_no, raw, false, ? FROM (
                SELECT unnest(parts) AS raw, generate_subscripts(parts, 1) AS line_no
                FROM (SELECT string_split(content, chr(10)) AS parts FROM read_text(?))
            ) -- blank lines carry nothing; a trailing CR is JSON whitespace and harmless
            WHERE length(raw) > 2 OR trim(raw) <> ''
            """,
            [str(path), dated, str(path)],
        )
    except duckdb.InvalidInputException:
        _load_jsonl_lines_python(conn, path, dated)
        return
    if not conn.execute(
        "SELECT count(*) FROM _lines WHERE source_file = ?", [str(path)]
    ).fetchone()[0]:
        # Line 0 stands for the whole file; the classifier reports it as an empty file.
        conn.execute("INSERT INTO _lines VALUES (?, 0, NULL, false, ?)", [str(path), dated])


def _load_jsonl_lines_python(conn: duckdb.DuckDBPyConnection, path: Path, dated: bool) -> None:
    """Append the file's lines to _lines with 1-based line numbers, in Python.

    Reads in large chunks and decodes each chunk at once; only a chunk that is not valid
    UTF-8 is decoded line by line, so each bad line is flagged and the rest kept.
    """
    line_no = 0
    saw_content = False
    with path.open("rb") as fh:
        carry = b""
        while True:
            block = fh.read(CHUNK_BYTES)
            if not block and not carry:
                break
            data = carry + block
            if block:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no newline yet in this chunk: keep reading
                    carry = data
                    continue
                data, carry = data[:cut], data[cut:]
            else:
                carry = b""
            raw_lines = data.split(b"\n")
            if raw_lines and raw_lines[-1] == b"":
                raw_lines.pop()
            try:
                texts = data.decode("utf-8").split("\n")
                if texts and texts[-1] == "":
                    texts.pop()
                bad = None
            except UnicodeDecodeError:
                texts, bad = [], []
                for raw in raw_lines:
                    try:
                        texts.append(raw.decode("utf-8"))
                        bad.append(False)
                    except UnicodeDecodeError:
                        texts.append(raw.decode("utf-8", errors="replace"))
                        bad.append(True)
            numbers = range(line_no + 1, line_no + 1 + len(texts))
            line_no += len(texts)
            frame = pd.DataFrame(
                {
                    "line_no": numbers,
                    "raw": pd.Series(texts, dtype=object).str.rstrip("\r"),
                    "decode_error": bad if bad is not None else False,
                }
            )
            # Blank lines are allowed in JSONL and carry nothing.
            frame = frame[frame["raw"].str.strip() != ""]
            if len(frame):
                saw_content = True
                conn.register("_chunk", frame)
                conn.execute(
                    "INSERT INTO _lines SELECT ?, line_no, raw, decode_error, ? FROM _chunk",
                    [str(path), dated],
                )
                conn.unregister("_chunk")
    if not saw_content:
        # Line 0 stands for the whole file; the classifier reports it as an empty file.
        conn.execute("INSERT INTO _lines VALUES (?, 0, NULL, false, ?)", [str(path), dated])


def _load_parquet_lines(conn: duckdb.DuckDBPyConnection, path: Path, dated: bool) -> None:
    """A Parquet file goes through the same checks: each row becomes a JSON object."""
    try:
        conn.execute(
            "INSERT INTO _lines SELECT ?, file_row_number + 1, "
            "to_json(t)::VARCHAR, false, ? FROM read_parquet(?, file_row_number = true) t",
            [str(path), dated, str(path)],
        )
    except duckdb.Error as exc:
        conn.execute(
            "INSERT INTO _lines VALUES (?, 0, ?, false, ?)",
            [str(path), f"unreadable parquet file: {exc}", dated],
        )
