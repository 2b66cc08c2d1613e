"""The JSONL/Parquet inbox: the trace source that reads a day's files from a folder.

It stages a day for :func:`eval_pipeline.core.sources.ingest.ingest_day`.

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
- Memory and speed: a plain file is mapped by DuckDB's CSV reader (each line's length and
  whether it is blank) and parsed once by DuckDB's JSON reader straight into ``raw_traces``
  (``inbox_fast``; ``stage_day`` maps, ``write_day`` parses inside ``ingest_day``'s
  transaction); only the lines that fast path does not accept are read back and classified
  line by line in SQL (``inbox_sql``), so the day's text is never held in Python and the
  ceiling does not depend on the day's size. A day may be split into any number of part
  files (``2026-10-01/part-0001.jsonl``, ``.jsonl.gz``, ``.parquet``): the same lines give the
  same rows, rejects and sample however they are cut. A good row's ``source_ref`` is its
  file; a reject has file and line.
- Reject summaries are bounded (``core/sources/ingest.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from eval_pipeline.core.sources.inbox_fast import FastPass, release_unstaged, resolve_duplicates
from eval_pipeline.core.sources.inbox_sql import (
    _CLASSIFY_SQL,
    EXCERPT_CHARS,
    LINES_DDL,
    _Classifier,
    _sql_string,
)
from eval_pipeline.core.sources.inbox_stream import (
    load_gzip_lines,
    load_parquet_lines,
    stream_lines,
)
from eval_pipeline.core.sources.ingest import (
    SourceUnavailable,
    StageReport,
    drop_staged_traces,
)

# --- the inbox source -------------------------------------------------------------------

_DATE_IN_PATH = re.compile(r"(\d{4}-\d{2}-\d{2})")
# Plain files are split into lines by DuckDB's CSV reader (parallel, in bounded memory, and
# much faster than the Python reader). A file it refuses (a line longer than the cap plus
# _CSV_SLACK, bytes that are not UTF-8, a carriage return) is streamed by the Python reader in
# CHUNK_BYTES pieces instead (inbox_stream), so a huge line never has to fit in memory. Gzip
# files are always streamed.
_CSV_SLACK = 64
# DuckDB's CSV buffers default to 16 times the line limit, per thread: sized from the line
# limit instead, so a small memory_limit is not eaten by read buffers.
_CSV_MIN_BUFFER = 16 * 1024 * 1024
DEFAULT_MAX_ROW_BYTES = 1024 * 1024
DEFAULT_MAX_CHARS = 100_000  # the Phoenix source's cap on a query or an answer
DEFAULT_SETTLE_SECONDS = 60.0
PLAIN_SUFFIXES = (".jsonl", ".ndjson")
GZIP_SUFFIXES = (".jsonl.gz", ".ndjson.gz")
READ_SUFFIXES = (*PLAIN_SUFFIXES, *GZIP_SUFFIXES, ".parquet")
_BOM = "\ufeff"
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
    _pending: _Pending | None = field(default=None, init=False, repr=False, compare=False)
    # A repeated trace id is rejected here, naming its first occurrence (ingest_day need not
    # check the day's rows again).
    resolves_duplicates = True

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
        start = dt.datetime.combine(day, dt.time())
        params = {
            "start": start,
            "end": start + dt.timedelta(days=1),
            "day": day.isoformat(),
            "max_row_bytes": cap,
            "max_chars": max_chars,
        }
        conn.execute(LINES_DDL)
        # What is held is in DuckDB (spilled past its memory_limit), never the day's text.
        conn.execute(
            _CLASSIFY_SQL.replace(
                "INSERT INTO _classified", "CREATE OR REPLACE TEMP TABLE _classified AS"
            ).replace("__LINES__", "(SELECT * FROM _lines LIMIT 0)"),
            params,
        )
        # Plain files are mapped here and parsed into raw_traces by write_day.
        fast = FastPass(conn, {**params, "day": day}, self.name, EXCERPT_CHARS)
        fast.setup()
        stage = _Classifier(conn, params)
        read: list[tuple[Path, os.stat_result]] = []
        line_size = max(cap, EXCERPT_CHARS) + _CSV_SLACK
        for path, before in files:
            dated = file_day(path, self.root) is not None
            name = path.name
            if name.endswith(".parquet"):
                load_parquet_lines(conn, path, dated, cap, stage)
            elif name.endswith(GZIP_SUFFIXES):
                load_gzip_lines(conn, path, dated, cap, stage)
            elif fast.map_lines(path, dated, line_size, max(4 * line_size, _CSV_MIN_BUFFER)):
                read.append((path, before))
                continue
            else:
                # Refused by the CSV reader (a line over the cap, bytes that are not UTF-8, a
                # carriage return, a control character it takes for a delimiter): streamed.
                with path.open("rb") as fh:
                    seen = stream_lines(conn, fh, path, dated, cap, stage.classify)
                stage.flush(path, dated, mark_empty=not seen)
            if _changed(path, before):
                conn.execute("DELETE FROM _classified WHERE source_file = ?", [str(path)])
                skipped.append((str(path.relative_to(self.root)), "changed while being read"))
                continue
            report.files_read += 1
        self._pending = _Pending(day, fast, stage, read, skipped, report)
        return report

    def write_day(self, conn: duckdb.DuckDBPyConnection, day: dt.date) -> None:
        """Inside ingest_day's transaction: parse the mapped plain files into raw_traces, then
        stage the rejects, the duplicates and the classified rows."""
        pending = self._pending
        if pending is None or pending.day != day:
            raise RuntimeError(f"write_day({day}) without stage_day of that day")
        self._pending = None
        fast, stage, report, skipped = pending.fast, pending.stage, pending.report, pending.skipped
        release_unstaged(conn)  # what a run that died after its commit left
        for path, before in pending.read:
            dated = file_day(path, self.root) is not None
            if _changed(path, before):  # since mapped; read now, it could abort the day
                fast.forget(path)
                skipped.append((str(path.relative_to(self.root)), "changed while being read"))
                continue
            if fast.parse(path):
                lines, check = fast.counts(path)
                if check or not lines:  # only the lines the fast path did not accept
                    stage.flush(path, dated, mark_empty=not lines)
            else:
                with path.open("rb") as fh:
                    cap = stage.params["max_row_bytes"]
                    seen = stream_lines(conn, fh, path, dated, cap, stage.classify)
                stage.flush(path, dated, mark_empty=not seen)
            if _changed(path, before):
                # Written to (or replaced) while we read it: none of it counts today.
                conn.execute("DELETE FROM _classified WHERE source_file = ?", [str(path)])
                fast.forget(path)
                skipped.append((str(path.relative_to(self.root)), "changed while being read"))
                continue
            report.files_read += 1
        conn.execute("DROP TABLE IF EXISTS _lines")
        report.notes.extend(_grouped_notes(skipped))
        report.rows_seen = (
            conn.execute("SELECT count(*) FROM _classified").fetchone()[0] + fast.rows_seen()
        )
        # Rejects of undated files are recorded on every day that reads them (each day's
        # report is complete on its own); a dated file's rejects only on its own day.
        conn.execute(
            "INSERT INTO staged_rejects SELECT ?, source_file, line_no, reason, excerpt "
            "FROM _classified WHERE reason IS NOT NULL",
            [self.name],
        )
        # Duplicate trace ids: the first occurrence (by file, line) wins, the others are
        # rejected naming it.
        dups = resolve_duplicates(conn, day, self.name)
        # staged_traces: the classified rows (gzip and Parquet files, and the lines the fast
        # path left to the classifier); the fast path's rows are in raw_traces already.
        drop_staged_traces(conn)
        keep = (
            " AND (r.source_file, r.line_no) NOT IN (SELECT (source_file, line_no) FROM"
            " _dup_rows WHERE rid IS NULL)"
            if dups
            else ""
        )
        conn.execute(
            f"""
            CREATE TEMP VIEW staged_traces AS
            SELECT r.trace_id, r.ts, r.user_query, r.assistant_response,
                   nullif(trim(r.segment), '') AS segment, r.model, r.prompt_version, r.user_id,
                   r.metadata, r.context, r.conversation, r.tool_calls,
                   {_sql_string(self.name)} AS source, r.source_file AS source_ref
            FROM _classified r WHERE r.reason IS NULL AND r.in_day{keep}
            """
        )

    def release(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Free what stage_day left for ingest_day to read (called once the day is written)."""
        release_unstaged(conn)
        drop_staged_traces(conn)
        for table in ("_classified", "_dups", "_dup_rows", "_files", "_ln"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


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


def _changed(path: Path, before: os.stat_result) -> bool:
    """Whether the file was written to, replaced or removed since it was listed."""
    try:
        after = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return True
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


@dataclass
class _Pending:
    """What stage_day leaves for write_day."""

    day: dt.date
    fast: FastPass
    stage: _Classifier
    read: list[tuple[Path, os.stat_result]]
    skipped: list[tuple[str, str]]
    report: StageReport
