"""The inbox's chunked reader: gzip files, Parquet files and the plain files the fast path
(:mod:`eval_pipeline.core.sources.inbox_fast`) refuses go into ``_lines`` for the line
classifier (:mod:`eval_pipeline.core.sources.inbox_sql`), a chunk at a time, so neither a
huge line nor a file larger than DuckDB's memory limit has to fit in memory.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import duckdb
import pandas as pd

from eval_pipeline.core.sources.inbox_sql import EXCERPT_CHARS, _Classifier
from eval_pipeline.core.sources.ingest import SourceUnavailable

CHUNK_BYTES = 32 * 1024 * 1024
_BOM_BYTES = "\ufeff".encode()
_NOT_BLANK = re.compile(rb"[^ \t\r]")


def load_gzip_lines(
    conn: duckdb.DuckDBPyConnection, path: Path, dated: bool, cap: int, stage: _Classifier
) -> None:
    """A gzip file is streamed; a truncated or corrupt one is rejected whole, never in part
    (the chunks classified before the error are dropped)."""
    try:
        with gzip.open(path, "rb") as fh:
            seen = stream_lines(conn, fh, path, dated, cap, stage.classify)
    except (OSError, EOFError, zlib.error) as exc:
        conn.execute("DELETE FROM _lines WHERE source_file = ?", [str(path)])
        conn.execute("DELETE FROM _classified WHERE source_file = ?", [str(path)])
        why = str(exc)[:200] or type(exc).__name__
        conn.execute(
            "INSERT INTO _lines VALUES (?, 0, ?, false, ?, NULL)",
            [str(path), f"unreadable gzip file: {why}", dated],
        )
        stage.flush(path, dated, mark_empty=False)
        return
    stage.flush(path, dated, mark_empty=not seen)


def bounded_lines(fh: IO[bytes], cap: int) -> Iterator[list[tuple[bytes, int, bool]]]:
    """Batches of (line bytes, full length, whether bytes left out are not blank) from a
    binary stream, about CHUNK_BYTES each.

    A line longer than ``cap`` comes with only its first ``cap + 1`` bytes: memory stays
    bounded by CHUNK_BYTES + cap however long a line is (a 1 GB line without a newline
    included); the flag says whether the rest holds more than JSON whitespace, so a long line
    that starts blank is still a line. A BOM at the start of the stream is dropped.
    """
    # the line in progress: its first bytes, its full length, whether its dropped bytes show
    head, head_len, dropped = b"", 0, False
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
                yield [(head, head_len, dropped)]
            return
        parts = block.split(b"\n")
        room = max(0, cap + 1 - len(head))
        dropped = dropped or _shows(parts[0], room)
        head, head_len = head + parts[0][:room], head_len + len(parts[0])
        if len(parts) == 1:
            continue
        batch = [(head, head_len, dropped)]
        batch.extend((p[: cap + 1], len(p), _shows(p, cap + 1)) for p in parts[1:-1])
        tail = parts[-1]
        head, head_len, dropped = tail[: cap + 1], len(tail), _shows(tail, cap + 1)
        del parts, block
        yield batch


def _shows(line: bytes, kept: int) -> bool:
    """Whether the bytes of ``line`` past the first ``kept`` are not all JSON whitespace."""
    return len(line) > kept and _NOT_BLANK.search(line, kept) is not None


def stream_lines(
    conn: duckdb.DuckDBPyConnection,
    fh: IO[bytes],
    path: Path,
    dated: bool,
    cap: int,
    classify: Callable[[], None],
) -> int:
    """Append a stream's lines to _lines a chunk at a time, flagging undecodable and oversize
    lines, and ``classify`` each chunk; the number of non-blank lines."""
    line_no, seen = 0, 0
    for batch in bounded_lines(fh, cap):
        numbers = range(line_no + 1, line_no + 1 + len(batch))
        line_no += len(batch)
        too_long = [n if n > cap else None for _, n, _ in batch]
        raws = [b if n <= cap else b"" for b, n, _ in batch]
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
        long_blank = {}  # a long line is blank only if its whole head and the rest are
        for i, (raw, n, shows) in enumerate(batch):
            if n > cap:  # only the head is kept, for the excerpt
                texts[i] = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
                long_blank[i] = not shows and raw.strip(b" \t\r") == b""
        frame = pd.DataFrame(
            {
                "line_no": numbers,
                "raw": pd.Series(texts, dtype=object).str.rstrip("\r"),
                "decode_error": bad,
                "too_long": pd.array(too_long, dtype="Int64"),
            }
        )
        # Blank lines are allowed in JSONL and carry nothing (JSON whitespace only).
        blank = (frame["raw"].str.strip(" \t\r") == "").tolist()
        for i, is_blank in long_blank.items():
            blank[i] = is_blank
        frame = frame.loc[[not b for b in blank]]
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
            seen += len(frame)
            classify()
    return seen


def load_parquet_lines(
    conn: duckdb.DuckDBPyConnection, path: Path, dated: bool, cap: int, stage: _Classifier
) -> None:
    """A Parquet file goes through the same checks: each row becomes a JSON object."""
    try:
        conn.execute(
            "INSERT INTO _lines SELECT ?, n, CASE WHEN strlen(j) > ? THEN left(j, ?) ELSE j END, "
            "false, ?, CASE WHEN strlen(j) > ? THEN strlen(j) END FROM ("
            "SELECT file_row_number + 1 AS n, to_json(t)::VARCHAR AS j "
            "FROM read_parquet(?, file_row_number = true) t)",
            [str(path), cap, EXCERPT_CHARS, dated, cap, str(path)],
        )
    except duckdb.OutOfMemoryException as exc:
        # Not bad data: DuckDB reads a row group's column whole, and this one does not fit the
        # memory limit. The day fails with what to change instead of rejecting the file's rows.
        limit = conn.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        raise SourceUnavailable(
            f"{path}: a row group of this Parquet file does not fit DuckDB's memory_limit "
            f"({limit}); write it with smaller row groups or raise $EVAL_DUCKDB_MEMORY_LIMIT "
            f"({str(exc).splitlines()[0]})"
        ) from None
    except duckdb.Error as exc:
        conn.execute(
            "INSERT INTO _lines VALUES (?, 0, ?, false, ?, NULL)",
            [str(path), f"unreadable parquet file: {exc}", dated],
        )
    stage.flush(path, dated)
