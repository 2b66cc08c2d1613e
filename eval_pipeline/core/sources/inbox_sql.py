"""The inbox's line classifier: every line of a day's files checked once, in DuckDB SQL.

The readers in :mod:`eval_pipeline.core.sources.inbox` leave lines in the temp table _lines:
every line of a gzip, Parquet or refused file, and the few lines of a plain file that the
fast path (:mod:`eval_pipeline.core.sources.inbox_fast`) did not accept. The classifier
turns them into trace rows or rejects with a reason, in SQL, never a Python loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from eval_pipeline.core.sources import trace_parts

EXCERPT_CHARS = 200


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
INSERT INTO _classified
WITH fields AS (
    SELECT source_file, line_no, raw, decode_error, dated, too_long,
        CASE WHEN NOT decode_error AND line_no > 0 AND too_long IS NULL
        THEN try(json_extract(raw, [
            '$.trace_id', '$.timestamp', '$.user_query', '$.assistant_response', '$.segment',
            '$.model', '$.prompt_version', '$.user_id', '$.metadata',
            {", ".join(repr(p) for p in trace_parts.INBOX_PATHS)}])) END AS v
    FROM __LINES__
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
        END AS ts,
        v[1] ->> '$' AS trace_id, v[3] ->> '$' AS user_query,
        v[4] ->> '$' AS assistant_response, v[5] ->> '$' AS segment,
        v[6] ->> '$' AS model, v[7] ->> '$' AS prompt_version,
        v[8] ->> '$' AS user_id
    FROM typed
), classified AS (
SELECT source_file, line_no, raw, ts, trace_id, user_query, assistant_response, segment, model,
    prompt_version, user_id, CASE WHEN t_meta = 'OBJECT' THEN v[9] END AS metadata,
    -- retrieved context, conversation, tool calls (core/sources/trace_parts.py)
    {trace_parts.columns_sql("v[10]", "v[11]", "v[12]", "v[13]")},
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
        WHEN length(trim(trace_id)) = 0 THEN 'empty trace_id'
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
        -- strlen (bytes, stored) bounds length (characters, counted): count only the few
        -- values whose bytes are over the cap.
        WHEN strlen(user_query) > $max_chars AND length(user_query) > $max_chars
            THEN 'value too large (user query '
            || length(user_query) || ' chars > ' || $max_chars || ')'
        WHEN strlen(assistant_response) > $max_chars AND length(assistant_response) > $max_chars
            THEN 'value too large (answer '
            || length(assistant_response) || ' chars > ' || $max_chars || ')'
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
        {trace_parts.reject_sql("v[10]", "v[11]", "v[12]", "v[13]")}
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


def _sql_string(text: str) -> str:
    """A SQL string literal (a view cannot take parameters)."""
    return "'" + text.replace("'", "''") + "'"


LINES_DDL = (
    "CREATE OR REPLACE TEMP TABLE _lines (source_file VARCHAR, line_no BIGINT, "
    "raw VARCHAR, decode_error BOOLEAN, dated BOOLEAN, too_long BIGINT)"
)


@dataclass
class _Classifier:
    """Classifies what the loaders left in _lines into _classified."""

    conn: duckdb.DuckDBPyConnection
    params: dict

    def flush(self, path: Path, dated: bool, mark_empty: bool = True) -> None:
        if mark_empty:
            _mark_empty(self.conn, path, dated)
        self.classify()

    def classify(self) -> None:
        """Classify what _lines holds and empty it: a streamed file is classified a chunk at a
        time, so a file larger than the memory limit never sits in _lines whole."""
        self.conn.execute(_CLASSIFY_SQL.replace("__LINES__", "_lines"), self.params)
        self.conn.execute(LINES_DDL)


def _mark_empty(conn: duckdb.DuckDBPyConnection, path: Path, dated: bool) -> None:
    if not conn.execute(
        "SELECT count(*) FROM _lines WHERE source_file = ?", [str(path)]
    ).fetchone()[0]:
        # Line 0 stands for the whole file; the classifier reports it as an empty file.
        conn.execute("INSERT INTO _lines VALUES (?, 0, NULL, false, ?, NULL)", [str(path), dated])
