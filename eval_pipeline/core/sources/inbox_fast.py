"""The inbox's fast path: a plain JSONL file parsed by DuckDB's JSON reader straight into
``raw_traces``, inside ``ingest_day``'s transaction, so the day is parsed once and written once.

Two reads of each file:

1. The *line map*: DuckDB's CSV reader, with no delimiter, quote or escape a JSON line can hold,
   splits the file (in parallel) and keeps each line's byte length and whether it is blank,
   in file order (temp table ``_ln``, a few bytes a line; a line's number is its row's
   distance from the file's first row, plus one). It refuses a file with a line over the
   cap, bytes that are not UTF-8 or a carriage return; such a file is streamed by the inbox's
   Python reader instead.
2. The *parse*: ``read_json`` with the trace's columns, appended to ``raw_traces`` in file
   order. The JSON reader skips blank lines and gives a line it cannot read as a row of NULLs,
   so the k-th row is the k-th non-blank line; the line map turns that into a line number.

A line is accepted here only when every check of the full classifier
(:mod:`eval_pipeline.core.sources.inbox_sql`) would accept it with the same values. Any other
line is appended as a marker row (``CHECK_MARK``: no text) under ``UNSTAGED_DATE``, read back
from the file at its byte offset and classified line by line, which gives the reject its
reason; markers are deleted after the commit (``release_unstaged``). Rows of an undated file
that belong to another day are markers too (``OTHER_MARK``). Bad lines are rare, so the day
pays for one parse and one write. A good row's ``source_ref`` is its file (its line would
need a second write of the day); a reject has file and line.

Whatever does not add up (rows and non-blank lines differ, rows not contiguous, too many
lines to classify) sends the file to the Python reader with nothing of it left behind.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from eval_pipeline.core import store
from eval_pipeline.core.sources.inbox_fast_sql import (
    CHECK_MARK,
    DROPPED_MARK,
    INSERT_SQL,
    LINE_MAP_SQL,
    UNSTAGED_DATE,
)

# Past this many blank, over-long or unaccepted lines a file is streamed instead: their line
# numbers are held in Python.
MAX_LISTED_LINES = 100_000
_READ_BATCH = 1_000
_OFFSET_BLOCK = 1 << 12  # lines per block when summing line lengths into byte offsets
# Memory per thread the fast path needs: the JSON reader's buffers and the rows in flight.
_JSON_READER_BYTES = 48 << 20
_BOM = b"\xef\xbb\xbf"


@dataclass
class PlainFile:
    """A plain file's line map and, once parsed, where its rows are in raw_traces."""

    file_no: int
    path: Path
    dated: bool
    lines: int  # every line, blank ones included
    line_base: int  # rowid of its first line in _ln
    blank_lines: list[int]  # line numbers, ascending
    long_lines: list[int]  # lines over the cap, ascending
    line_size: int  # the longest line the CSV reader took
    base: int = 0  # rowid of its first row in raw_traces
    seen: int = 0  # rows of the day or of another day (not left for the classifier)
    checks: int = 0  # lines left for the classifier

    @property
    def nonblank(self) -> int:
        return self.lines - len(self.blank_lines)

    @functools.cached_property
    def blanks_before(self) -> list[int]:
        """For the i-th blank line (1-based), at line b: b - i, the non-blank lines before it.
        Built once: line_of runs for every line left to the classifier."""
        return [b - i for i, b in enumerate(self.blank_lines, start=1)]

    def line_of(self, ordinal: int) -> int:
        """The line number of the ordinal-th non-blank line: the blank lines before it are
        those with fewer than ``ordinal`` non-blank lines before them."""
        return ordinal + bisect.bisect_left(self.blanks_before, ordinal)

    def ordinal_of(self, line: int) -> int:
        """The ordinal among the non-blank lines of a non-blank line."""
        return line - bisect.bisect_left(self.blank_lines, line)


@dataclass
class FastPass:
    """The fast path for plain JSONL files, in two steps: ``map_lines`` (outside the day's
    transaction: the CSV reader may refuse a file, and an error would abort a transaction)
    and ``parse`` (inside it: appends the rows to raw_traces, leaves the unaccepted lines with
    their line numbers in _lines)."""

    conn: duckdb.DuckDBPyConnection
    params: dict
    source: str
    excerpt_chars: int
    files: dict[str, PlainFile] = field(default_factory=dict)

    def setup(self) -> None:
        self.conn.execute(
            "CREATE OR REPLACE TEMP TABLE _ln (file_no INTEGER, n INTEGER, blank BOOLEAN)"
        )
        self.conn.execute(
            "CREATE OR REPLACE TEMP TABLE _files (file_no INTEGER, source_file VARCHAR, "
            "base BIGINT, blanks_before BIGINT[])"
        )

    def map_lines(self, path: Path, dated: bool, line_size: int, buffer_size: int) -> bool:
        """Map the file's lines (True), or return False: the CSV reader refused it (or it is
        not worth the fast path) and the caller streams it."""
        conn = self.conn
        if not _json_reader_fits(conn):
            return False
        file_no = len(self.files) + 1
        try:
            conn.execute(
                LINE_MAP_SQL,
                {
                    "file_no": file_no,
                    "path": str(path),
                    "line_size": line_size,
                    "buffer_size": buffer_size,
                },
            )
        except (duckdb.InvalidInputException, duckdb.NotImplementedException):
            conn.execute("DELETE FROM _ln WHERE file_no = ?", [file_no])
            return False
        lines, blank, first, last = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE blank), min(rowid), max(rowid) FROM _ln "
            "WHERE file_no = ?",
            [file_no],
        ).fetchone()
        # A line is its row's distance from the file's first row, plus one: the rows must be
        # contiguous, and the lists below are held in Python.
        if (lines and last - first + 1 != lines) or blank > MAX_LISTED_LINES:
            conn.execute("DELETE FROM _ln WHERE file_no = ?", [file_no])
            return False
        listed = conn.execute(
            "SELECT rowid - $first + 1 AS line, blank FROM _ln "
            "WHERE file_no = $no AND (blank OR n > $cap) ORDER BY line",
            {"first": first or 0, "no": file_no, "cap": self.params["max_row_bytes"]},
        ).fetchall()
        if len(listed) - blank > MAX_LISTED_LINES:
            conn.execute("DELETE FROM _ln WHERE file_no = ?", [file_no])
            return False
        self.files[str(path)] = PlainFile(
            file_no,
            path,
            dated,
            lines,
            first or 0,
            [line for line, is_blank in listed if is_blank],
            [line for line, is_blank in listed if not is_blank],
            line_size,
        )
        return True

    def parse(self, path: Path) -> bool:
        """Append the mapped file's rows to raw_traces and its unaccepted lines to _lines
        (True), or leave nothing of it and return False: the caller streams it instead."""
        conn, ref, f = self.conn, str(path), self.files[str(path)]
        if f.nonblank:
            conn.execute(
                INSERT_SQL,
                {
                    "day": self.params["day"],
                    "start": self.params["start"],
                    "end": self.params["end"],
                    "max_chars": self.params["max_chars"],
                    "dated": f.dated,
                    "path": ref,
                    "ref": ref,
                    "source": self.source,
                    "line_size": f.line_size,
                    "unstaged": UNSTAGED_DATE,
                },
            )
            first, last, rows, f.seen, f.checks = conn.execute(
                f"""SELECT min(rowid), max(rowid), count(*),
                           count(*) FILTER (WHERE source <> '{CHECK_MARK}'),
                           count(*) FILTER (WHERE source = '{CHECK_MARK}')
                    FROM raw_traces WHERE partition_date IN ($day, $unstaged)
                    AND source_ref = $ref""",
                {"day": self.params["day"], "ref": ref, "unstaged": UNSTAGED_DATE},
            ).fetchone()
            # One row per non-blank line, in order: otherwise line numbers cannot be trusted.
            if rows != f.nonblank or (rows and last - first + 1 != rows):
                self.forget(path)
                return False
            f.base = first or 0
        if f.long_lines:
            # A line over the cap is the classifier's ("line too long"), whatever the JSON
            # reader made of it.
            changed = conn.execute(
                f"UPDATE raw_traces SET partition_date = $unstaged, source = '{CHECK_MARK}' "
                f"WHERE partition_date IN ($day, $unstaged) AND rowid IN (SELECT unnest($ids)) "
                f"AND source <> '{CHECK_MARK}'",
                {
                    "day": self.params["day"],
                    "unstaged": UNSTAGED_DATE,
                    "ids": [f.base + f.ordinal_of(line) - 1 for line in f.long_lines],
                },
            ).fetchone()[0]
            f.seen -= changed
            f.checks += changed
        if f.checks > MAX_LISTED_LINES:
            self.forget(path)
            return False
        if f.checks:
            self._to_classifier(f)
        conn.execute("DELETE FROM _ln WHERE file_no = ?", [f.file_no])
        conn.execute(
            "INSERT INTO _files VALUES (?, ?, ?, ?)",
            [f.file_no, ref, f.base, f.blanks_before],
        )
        return True

    def _to_classifier(self, f: PlainFile) -> None:
        """Read the file's unaccepted lines back at their byte offsets into _lines."""
        conn, ref = self.conn, str(f.path)
        wanted = [
            f.line_of(rowid - f.base + 1)
            for (rowid,) in conn.execute(
                f"SELECT rowid FROM raw_traces WHERE partition_date = $unstaged "
                f"AND source_ref = $ref AND source = '{CHECK_MARK}' ORDER BY rowid",
                {"unstaged": UNSTAGED_DATE, "ref": ref},
            ).fetchall()
        ]
        # Byte offset of a line: the lengths of the lines before it, each with its newline.
        # Summed per block of lines, and within a block only for the blocks that hold a wanted
        # line: a running sum over every line of the file costs more than the rest of this.
        spans = conn.execute(
            f"""WITH lines AS (SELECT rowid - $first AS i, (rowid - $first) // {_OFFSET_BLOCK} AS b,
                                      coalesce(n, 0) AS n FROM _ln WHERE file_no = $no),
               blocks AS (SELECT b, coalesce(sum(s) OVER (ORDER BY b ROWS BETWEEN
                                 UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                          FROM (SELECT b, sum(n + 1) AS s FROM lines GROUP BY b)),
               within AS (SELECT i + 1 AS line, b, n, coalesce(sum(n + 1) OVER (PARTITION BY b
                                 ORDER BY i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                                 0) AS s
                          FROM lines WHERE b IN (SELECT DISTINCT (line - 1) // {_OFFSET_BLOCK}
                                                 FROM (SELECT unnest($lines) AS line)))
               SELECT w.line, k.before + w.s, w.n FROM within w JOIN blocks k USING (b)
               WHERE w.line IN (SELECT unnest($lines)) ORDER BY w.line""",
            {"lines": wanted, "first": f.line_base, "no": f.file_no},
        ).fetchall()
        cap = self.params["max_row_bytes"]
        with f.path.open("rb") as fh:
            # The CSV reader drops a byte order mark at the start of the file.
            skip = 3 if fh.read(3) == _BOM else 0
            for at in range(0, len(spans), _READ_BATCH):
                batch = spans[at : at + _READ_BATCH]
                texts, too_long = [], []
                for _, off, n in batch:
                    fh.seek(skip + off)
                    data = fh.read(n if n <= cap else self.excerpt_chars * 4)
                    text = data.decode("utf-8", errors="replace")
                    texts.append(text if n <= cap else text[: self.excerpt_chars])
                    too_long.append(n if n > cap else None)
                frame = pd.DataFrame(
                    {
                        "line_no": [line for line, _, _ in batch],
                        "raw": pd.Series(texts, dtype=object),
                        "too_long": pd.array(too_long, dtype="Int64"),
                    }
                )
                with store.registered(conn, "_check_lines", frame):
                    conn.execute(
                        "INSERT INTO _lines SELECT ?, line_no, raw, false, ?, too_long "
                        "FROM _check_lines",
                        [ref, f.dated],
                    )

    def counts(self, path: Path) -> tuple[int, int]:
        """(non-blank lines, lines left for the classifier) of a parsed file."""
        f = self.files[str(path)]
        return f.nonblank, f.checks

    def forget(self, path: Path) -> None:
        """Drop a file's rows and map (it changed while it was read, or it is streamed)."""
        f = self.files.pop(str(path), None)
        if f is None:
            return
        self.conn.execute(
            f"UPDATE raw_traces SET partition_date = $unstaged, source = '{DROPPED_MARK}' "
            "WHERE partition_date IN ($day, $unstaged) AND source_ref = $ref",
            {"day": self.params["day"], "unstaged": UNSTAGED_DATE, "ref": str(path)},
        )
        self.conn.execute("DELETE FROM _ln WHERE file_no = ?", [f.file_no])
        self.conn.execute("DELETE FROM _files WHERE file_no = ?", [f.file_no])

    def rows_seen(self) -> int:
        return sum(f.seen for f in self.files.values())


def release_unstaged(conn: duckdb.DuckDBPyConnection) -> None:
    """Delete the rows appended under UNSTAGED_DATE (after the day's commit, or left by a run
    that died between its commit and this)."""
    conn.execute("DELETE FROM raw_traces WHERE partition_date = ?", [UNSTAGED_DATE])


def resolve_duplicates(conn: duckdb.DuckDBPyConnection, day: dt.date, source: str) -> bool:
    """Reject the later occurrences of a repeated trace id, naming the first, into
    staged_rejects, and move the fast path's out of the day; True if there were any (the
    classified ones are in _dup_rows, for the caller to leave out)."""
    if not find_duplicates(conn, day):
        return False
    conn.execute(
        """
        INSERT INTO staged_rejects
        SELECT ?, r.source_file, r.line_no, 'duplicate trace_id: ' || r.trace_id
               || ' (first seen at ' || d.first.f || ':' || d.first.l || ')', NULL
        FROM _dup_rows r JOIN _dups d USING (trace_id)
        """,
        [source],
    )
    conn.execute(
        f"UPDATE raw_traces SET partition_date = $unstaged, source = '{DROPPED_MARK}' "
        "WHERE partition_date = $day AND rowid IN (SELECT rid FROM _dup_rows "
        "WHERE rid IS NOT NULL)",
        {"day": day, "unstaged": UNSTAGED_DATE},
    )
    return True


def _json_reader_fits(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the memory limit leaves room for the JSON reader, which holds a 32 MiB buffer
    per thread whatever the lines' size: under a smaller limit the file is streamed."""
    limit, threads = conn.execute(
        "SELECT (SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'), "
        "current_setting('threads')"
    ).fetchall()[0]
    number, _, unit = limit.strip().partition(" ")
    scale = {
        "KiB": 1 << 10,
        "MiB": 1 << 20,
        "GiB": 1 << 30,
        "TiB": 1 << 40,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "bytes": 1,
    }
    try:
        limit_bytes = float(number) * scale.get(unit, 1)
    except ValueError:  # an unlimited or unknown setting
        return True
    return limit_bytes >= _JSON_READER_BYTES * int(threads)


def find_duplicates(conn: duckdb.DuckDBPyConnection, day) -> bool:
    """Fill _dups (trace_id, first {f, l}) and _dup_rows (the later occurrences) with the
    day's repeated trace ids, over the rows the fast path wrote and the classified rows; True
    if any.

    Most days have none: grouping 64-bit hashes finds the candidates far more cheaply than
    grouping the ids themselves, and only candidates get line numbers and exact comparison.
    """
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE _dup_hashes AS
        SELECT h FROM (
            SELECT hash(trace_id) AS h FROM raw_traces WHERE partition_date = $day
            UNION ALL
            SELECT hash(trace_id) FROM _classified WHERE reason IS NULL AND in_day
        ) GROUP BY h HAVING count(*) > 1
        """,
        {"day": day},
    )
    if not conn.execute("SELECT count(*) FROM _dup_hashes").fetchone()[0]:
        conn.execute("DROP TABLE _dup_hashes")
        return False
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE _dup_candidates AS
        -- a fast row's line: its ordinal among the non-blank lines, plus the blank lines
        -- before it (the i-th blank line, at b, has b - i non-blank lines before it)
        SELECT r.rowid AS rid, f.source_file, r.trace_id,
               r.rowid - f.base + 1 + len(list_filter(f.blanks_before,
                   lambda p: p < r.rowid - f.base + 1)) AS line_no
        FROM raw_traces r JOIN _files f ON r.source_ref = f.source_file
        WHERE r.partition_date = $day AND hash(r.trace_id) IN (SELECT h FROM _dup_hashes)
        UNION ALL
        SELECT NULL, source_file, trace_id, line_no FROM _classified
        WHERE reason IS NULL AND in_day AND hash(trace_id) IN (SELECT h FROM _dup_hashes)
        """,
        {"day": day},
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE _dups AS
        SELECT trace_id, min({'f': source_file, 'l': line_no}) AS first
        FROM _dup_candidates GROUP BY trace_id HAVING count(*) > 1
        """
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE _dup_rows AS
        SELECT c.* FROM _dup_candidates c JOIN _dups d USING (trace_id)
        WHERE (c.source_file, c.line_no) <> (d.first.f, d.first.l)
        """
    )
    conn.execute("DROP TABLE _dup_hashes")
    conn.execute("DROP TABLE _dup_candidates")
    return bool(conn.execute("SELECT count(*) FROM _dups").fetchone()[0])
