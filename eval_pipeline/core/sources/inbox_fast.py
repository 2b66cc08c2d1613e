"""The inbox's fast path: each plain JSONL file parsed once into typed columns.

DuckDB's CSV reader splits the file into lines (in parallel, in file order) and
``json_transform`` parses each line once into the trace's columns, straight into the temp
table ``_fast``. A line is accepted here only when every check of the full classifier
(:mod:`eval_pipeline.core.sources.inbox_sql`) would accept it with the same values; any
other line keeps its text and goes to that classifier, which gives the reject its reason.
Bad lines are rare, so the day pays for one parse. A trace's parts (retrieved documents, a
conversation, tool calls) are read from their own JSON text into typed lists and checked
against the limits and shapes of :mod:`eval_pipeline.core.sources.trace_parts`; the values
are the classifier's (the tests hold the two paths to the same rows and rejects).

Line numbers: an INSERT from the CSV reader keeps the file's order (``preserve_insertion_order``)
and appends one row per line (blank lines included), so a row's line number is its rowid
minus the file's first rowid, plus one. :meth:`FastPass.load` checks that a file's rows are
contiguous and raises otherwise rather than mislabel a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from eval_pipeline.core.sources import trace_parts

# Verdicts of the fast path.
GOOD, OTHER_DAY, CHECK, BLANK = 0, 1, 2, 3

FAST_DDL = """
CREATE OR REPLACE TEMP TABLE _fast (
    file_no INTEGER, trace_id VARCHAR, ts TIMESTAMP, user_query VARCHAR,
    assistant_response VARCHAR, segment VARCHAR, model VARCHAR, prompt_version VARCHAR,
    user_id VARCHAR, metadata JSON, context JSON, conversation JSON, tool_calls JSON,
    verdict UTINYINT, raw VARCHAR)
"""
FILES_DDL = (
    "CREATE OR REPLACE TEMP TABLE _files (file_no INTEGER, source_file VARCHAR, base BIGINT)"
)

# Strings come out of json_transform as VARCHAR (unescaped once, by the parser); the fields
# that may be other types come out as JSON text, whose first character is the type. A trace's
# lists of parts come out as JSON text too (absent on most lines); a list is then read into
# typed structs from its own text, so it is checked and normalised without parsing the line
# or the list again.
_SCHEMA = (
    '{"trace_id": "VARCHAR", "timestamp": "JSON", "user_query": "VARCHAR", '
    '"assistant_response": "VARCHAR", "segment": "VARCHAR", "model": "VARCHAR", '
    '"prompt_version": "VARCHAR", "user_id": "VARCHAR", "metadata": "JSON", '
    '"context": "JSON", "retrieved_documents": "JSON", "conversation": "JSON", '
    '"tool_calls": "JSON"}'
)
_DOCS = '[{"id": "VARCHAR", "text": "VARCHAR", "content": "VARCHAR", "score": "JSON"}]'
_TURNS = '[{"role": "VARCHAR", "content": "VARCHAR"}]'
_CALLS = '[{"name": "VARCHAR", "arguments": "JSON", "result": "JSON"}]'
_STRINGS = ("trace_id", "user_query", "assistant_response", "segment", "model")
_STRINGS += ("prompt_version", "user_id")


def _is_string(field: str) -> str:
    """SQL: the field is missing, null or a JSON string.

    json_transform writes a number, boolean, object or array given for a VARCHAR as its JSON
    text, which is valid JSON; a real string rarely is, and only then is the line looked at
    again for the field's type.
    """
    return (
        f"CASE WHEN {field} IS NULL OR NOT json_valid({field}) THEN true "
        f"ELSE json_type(raw, '$.{field}') = 'VARCHAR' END"
    )


def _text(x: str) -> str:
    """SQL: a part's string field (VARCHAR from json_transform) is a string within the cap.

    A non-string comes out as its JSON text, which is valid JSON; a string that is valid JSON
    too is left to the classifier. strlen counts bytes, never fewer than the characters the
    classifier counts, so a text within it is within the classifier's cap.
    """
    return f"({x} IS NOT NULL AND NOT json_valid({x}) AND strlen({x}) <= $max_chars)"


# An element that is not an object comes out with every field NULL, so it fails these.
_DOC_OK = (
    f"({_text('e.text')} OR (e.text IS NULL AND {_text('e.content')}))"
    # an id is a string or an integer (either comes out as its text; an integer past 18 digits
    # may be read as a double, so the classifier decides); anything else is JSON
    " AND (e.id IS NULL OR NOT json_valid(e.id) OR regexp_full_match(e.id, '-?[0-9]{1,18}'))"
    " AND (e.score IS NULL OR left(e.score, 1) IN"
    " ('-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'))"
)
_TURN_OK = f"{_text('e.role')} AND trim(e.role) <> '' AND {_text('e.content')}"
_CALL_OK = (
    f"{_text('e.name')} AND trim(e.name) <> ''"
    " AND coalesce(strlen(e.arguments), 0) <= $max_chars"
    " AND coalesce(strlen(e.result), 0) <= $max_chars"
)


def _all(items: str, limit: int, ok: str) -> str:
    return (
        f"(len({items}) <= {limit} AND "
        f"coalesce(list_bool_and(list_transform({items}, lambda e: coalesce({ok}, false))), true))"
    )


# A list field that is not a JSON array (the classifier names what it is) is left to it.
_PARTS_CHECK = f"""
        WHEN p_ctx IS NOT NULL AND (left(p_ctx, 1) <> '"' OR strlen(p_ctx) > $max_chars
            OR j_docs IS NOT NULL) THEN {CHECK}
        WHEN (j_docs IS NOT NULL AND p_docs IS NULL) OR (j_conv IS NOT NULL AND p_conv IS NULL)
            OR (j_calls IS NOT NULL AND p_calls IS NULL) THEN {CHECK}
        WHEN p_docs IS NOT NULL AND NOT {_all("p_docs", trace_parts.MAX_DOCUMENTS, _DOC_OK)}
            THEN {CHECK}
        WHEN p_conv IS NOT NULL AND NOT {_all("p_conv", trace_parts.MAX_TURNS, _TURN_OK)}
            THEN {CHECK}
        WHEN p_calls IS NOT NULL AND NOT {_all("p_calls", trace_parts.MAX_TOOL_CALLS, _CALL_OK)}
            THEN {CHECK}"""

# The same values as trace_parts.columns_sql gives the classifier (to_json of a struct writes
# what json_object writes).
_PARTS_COLUMNS = """
    CASE WHEN p_ctx IS NOT NULL THEN
            CASE WHEN trim(p_ctx ->> '$') = '' THEN '[]'::JSON
                 ELSE json_array(json_object('id', NULL, 'text', p_ctx ->> '$', 'score', NULL))
            END
         WHEN p_docs IS NOT NULL THEN to_json(list_transform(p_docs, lambda e: {
            'id': e.id, 'text': coalesce(e.text, e.content), 'score': try_cast(CAST(e.score AS VARCHAR) AS DOUBLE)}))
    END AS context,
    CASE WHEN p_conv IS NOT NULL THEN to_json(list_transform(p_conv,
        lambda e: {'role': e.role, 'content': e.content}))
    END AS conversation,
    CASE WHEN p_calls IS NOT NULL THEN to_json(list_transform(p_calls,
        lambda e: {'name': e.name, 'arguments': e.arguments, 'result': e.result}))
    END AS tool_calls"""

_FAST_SQL = f"""
INSERT INTO _fast
SELECT $file_no, trace_id, ts,
    CASE WHEN verdict = {GOOD} THEN user_query END,
    CASE WHEN verdict = {GOOD} THEN assistant_response END,
    segment, model, prompt_version, user_id,
    CASE WHEN verdict = {GOOD} THEN metadata END,
    {_PARTS_COLUMNS},
    verdict, CASE WHEN verdict = {CHECK} THEN raw END
FROM (
    SELECT *, CASE
        WHEN raw IS NULL THEN {BLANK}
        WHEN unparsed THEN
            CASE WHEN trim(raw, ' ' || chr(9) || chr(13)) = '' THEN {BLANK} ELSE {CHECK} END
        WHEN strlen(raw) > $max_row_bytes THEN {CHECK}
        WHEN trace_id IS NULL OR user_query IS NULL OR assistant_response IS NULL
            OR ts IS NULL THEN {CHECK}
        WHEN NOT ({" AND ".join(_is_string(f) for f in _STRINGS)}) THEN {CHECK}
        WHEN length(trim(trace_id)) = 0 THEN {CHECK}
        -- epoch seconds read as milliseconds would land in 1970: the classifier says so
        WHEN left(ts_json, 1) <> '"' AND abs(try_cast(ts_json AS DOUBLE)) < 1e11 THEN {CHECK}
        WHEN strlen(user_query) > $max_chars OR strlen(assistant_response) > $max_chars
            THEN {CHECK}
        WHEN metadata IS NOT NULL AND left(metadata, 1) <> '{{' THEN {CHECK}
        -- a trace's parts: the classifier's checks (core/sources/trace_parts.py) on the typed lists
        {_PARTS_CHECK}
        WHEN ts >= $start AND ts < $end THEN {GOOD}
        WHEN $dated THEN {CHECK}
        ELSE {OTHER_DAY}
    END AS verdict
    FROM (
        SELECT raw, s IS NULL AS unparsed, s.trace_id, s.user_query, s.assistant_response, s.segment, s.model,
            s.prompt_version, s.user_id, s.metadata, s.timestamp AS ts_json,
            s.context AS p_ctx, s.retrieved_documents AS j_docs, s.conversation AS j_conv,
            s.tool_calls AS j_calls,
            CASE WHEN left(s.retrieved_documents, 1) = '[' THEN
                try(json_transform(s.retrieved_documents, '{_DOCS}')) END AS p_docs,
            CASE WHEN left(s.conversation, 1) = '[' THEN
                try(json_transform(s.conversation, '{_TURNS}')) END AS p_conv,
            CASE WHEN left(s.tool_calls, 1) = '[' THEN
                try(json_transform(s.tool_calls, '{_CALLS}')) END AS p_calls,
            CASE left(s.timestamp, 1)
                WHEN '"' THEN try_cast(s.timestamp ->> '$' AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
                WHEN '-' THEN try(epoch_ms(CAST(CAST(s.timestamp AS DOUBLE) AS BIGINT)))
                ELSE CASE WHEN left(s.timestamp, 1) BETWEEN '0' AND '9'
                    THEN try(epoch_ms(CAST(CAST(s.timestamp AS DOUBLE) AS BIGINT))) END
            END AS ts
        FROM (
            SELECT raw, try(json_transform(raw, '{_SCHEMA}')) AS s
            FROM read_csv($path, columns = {{'raw': 'VARCHAR'}}, header = false,
                auto_detect = false, delim = chr(1), quote = '', escape = '',
                new_line = '\\n', max_line_size = $line_size, buffer_size = $buffer_size,
                parallel = true)
        )
    )
)
"""


class RowOrderError(RuntimeError):
    """The rows of a file did not land contiguously: line numbers cannot be trusted."""


@dataclass
class FastPass:
    """Loads plain JSONL files into ``_fast``; the staged rows of the day come from here."""

    conn: duckdb.DuckDBPyConnection
    params: dict
    files: int = 0

    def setup(self) -> None:
        self.conn.execute(FAST_DDL)
        self.conn.execute(FILES_DDL)

    def load(self, path: Path, dated: bool, line_size: int, buffer_size: int) -> int:
        """Parse the file into _fast; returns its number of lines. Raises duckdb's error when
        the CSV reader refuses the file (nothing of it is left in _fast then)."""
        self.files += 1
        file_no = self.files
        params = {
            "start": self.params["start"],
            "end": self.params["end"],
            "max_row_bytes": self.params["max_row_bytes"],
            "max_chars": self.params["max_chars"],
            "file_no": file_no,
            "dated": dated,
            "path": str(path),
            "line_size": line_size,
            "buffer_size": buffer_size,
        }
        try:
            n = self.conn.execute(_FAST_SQL, params).fetchone()[0]
        except duckdb.Error:
            self.conn.execute("DELETE FROM _fast WHERE file_no = ?", [file_no])
            raise
        first, last = self.conn.execute(
            "SELECT min(rowid), max(rowid) FROM _fast WHERE file_no = ?", [file_no]
        ).fetchone()
        if n and last - first + 1 != n:
            raise RowOrderError(f"{path}: {n} lines landed over rowids {first}..{last}")
        self.conn.execute("INSERT INTO _files VALUES (?, ?, ?)", [file_no, str(path), first])
        return n

    def counts(self, path: Path) -> tuple[int, int]:
        """(non-blank lines, lines left for the classifier) of a loaded file."""
        return self.conn.execute(
            f"""SELECT count(*) FILTER (WHERE verdict <> {BLANK}),
                       count(*) FILTER (WHERE verdict = {CHECK})
                FROM _fast JOIN _files USING (file_no) WHERE source_file = ?""",
            [str(path)],
        ).fetchone()

    def to_classifier(self, path: Path, dated: bool, excerpt_chars: int) -> None:
        """Copy the file's unaccepted lines, with their line numbers, into _lines."""
        self.conn.execute(
            f"""
            INSERT INTO _lines
            SELECT f.source_file, r.rowid - f.base + 1,
                   CASE WHEN strlen(r.raw) > $cap THEN left(r.raw, {excerpt_chars})
                        ELSE r.raw END,
                   false, $dated, CASE WHEN strlen(r.raw) > $cap THEN strlen(r.raw) END
            FROM _fast r JOIN _files f USING (file_no)
            WHERE f.source_file = $file AND r.verdict = {CHECK}
            """,
            {"cap": self.params["max_row_bytes"], "dated": dated, "file": str(path)},
        )

    def forget(self, path: Path) -> None:
        """Drop a file's rows (it changed while it was read)."""
        self.conn.execute(
            "DELETE FROM _fast WHERE file_no IN (SELECT file_no FROM _files WHERE source_file = ?)",
            [str(path)],
        )
        self.conn.execute("DELETE FROM _files WHERE source_file = ?", [str(path)])

    def rows_seen(self) -> int:
        return self.conn.execute(
            f"SELECT count(*) FROM _fast WHERE verdict IN ({GOOD}, {OTHER_DAY})"
        ).fetchone()[0]


def _sql_list(values: list) -> str:
    items = (
        "'" + v.replace("'", "''") + "'" if isinstance(v, str) else str(int(v)) for v in values
    )
    return "[" + ", ".join(items) + "]"


def create_good_view(conn: duckdb.DuckDBPyConnection) -> None:
    """The day's accepted rows, from both paths, with their file and line, as view _good.

    A fast row's file and first rowid come from constant lists indexed by its file_no (a
    lookup per row, not a join: the view is read once per million rows or more).
    """
    files = conn.execute("SELECT file_no, source_file, base FROM _files").fetchall()
    paths: list = [""] * (max((f for f, _, _ in files), default=0))
    bases: list = [0] * len(paths)
    for file_no, path, base in files:
        paths[file_no - 1], bases[file_no - 1] = path, base or 0  # an empty file: no rows
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW _good AS
        SELECT {_sql_list(paths)}[r.file_no] AS source_file,
               r.rowid - {_sql_list(bases)}[r.file_no] + 1 AS line_no, r.trace_id, r.ts,
               r.user_query, r.assistant_response, r.segment, r.model, r.prompt_version,
               r.user_id, r.metadata, r.context, r.conversation, r.tool_calls
        FROM _fast r WHERE r.verdict = {GOOD}
        UNION ALL
        SELECT source_file, line_no, trace_id, ts, user_query, assistant_response, segment,
               model, prompt_version, user_id, metadata, context, conversation, tool_calls
        FROM _classified WHERE reason IS NULL AND in_day
        """
    )


def find_duplicates(conn: duckdb.DuckDBPyConnection) -> bool:
    """Fill _dups (trace_id, first {f, l}) with the day's repeated trace ids; True if any.

    Most days have none: grouping 64-bit hashes finds the candidates far more cheaply than
    grouping the ids themselves, and only candidates are compared exactly.
    """
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE _dup_hashes AS
        SELECT h FROM (SELECT hash(trace_id) AS h FROM _good) GROUP BY h HAVING count(*) > 1
        """
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE _dups AS
        SELECT trace_id, min({'f': source_file, 'l': line_no}) AS first
        FROM _good WHERE hash(trace_id) IN (SELECT h FROM _dup_hashes)
        GROUP BY trace_id HAVING count(*) > 1
        """
    )
    conn.execute("DROP TABLE _dup_hashes")
    return bool(conn.execute("SELECT count(*) FROM _dups").fetchone()[0])
