"""The DuckDB store: the one module that owns the schema.

DDL lives in numbered files next to this module (``schema/NNN_name.sql``) and is applied in
order, once, recorded in ``schema_migrations``. Nobody else writes DDL.

Every connection gets a memory ceiling (``memory_limit``, default ``DEFAULT_MEMORY_LIMIT``,
``$EVAL_DUCKDB_MEMORY_LIMIT``) and a folder to spill to past it (``temp_directory``,
``$EVAL_DUCKDB_TEMP_DIR``; default DuckDB's own ``<store>.tmp`` next to the file), so a day's
ingest needs the same memory whatever the day's size: DuckDB spills sorts, joins and temp
tables to disk instead of growing.

DuckDB allows one writing process at a time. Connections here are short-lived (open, do the
work, close); opening retries for a while when another process holds the lock, so a reader
(the CLI, a notebook) that briefly holds the file does not fail a run.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd

from eval_pipeline import settings

SCHEMA_PACKAGE = "eval_pipeline.core.schema"
LOCK_WAIT_SECONDS = 120.0
# DuckDB's own default is 80% of the machine's memory, shared by every engineer's process on
# a small box; 1 GB keeps a day of any size well under 2 GiB of process memory.
DEFAULT_MEMORY_LIMIT = "1GB"


def memory_settings(
    memory_limit: str | None = None, temp_directory: str | Path | None = None
) -> tuple[str, str | None]:
    """(memory_limit, temp_directory or None for DuckDB's default), after the one precedence
    rule: the explicit value, then $EVAL_DUCKDB_MEMORY_LIMIT / $EVAL_DUCKDB_TEMP_DIR."""
    limit = settings.resolve(
        memory_limit, os.environ, "EVAL_DUCKDB_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT
    )
    temp = settings.resolve(
        None if temp_directory is None else str(temp_directory),
        os.environ,
        "EVAL_DUCKDB_TEMP_DIR",
        "",
    )
    return limit, (temp or None)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every schema file, in version order."""
    found = []
    for entry in resources.files(SCHEMA_PACKAGE).iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        found.append((version, name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two schema files share a version number: {versions}")
    return found


def migrate(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every schema file not yet applied; returns the names applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name]
            )
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


@contextlib.contextmanager
def connect(
    path: str | Path,
    *,
    read_only: bool = False,
    lock_wait: float = LOCK_WAIT_SECONDS,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store, migrated, in UTC and under its memory ceiling, and always close it."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_wait
    delay = 0.05
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 2.0)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        limit, temp = memory_settings(memory_limit, temp_directory)
        conn.execute("SET memory_limit = ?", [limit])
        if temp:
            conn.execute("SET temp_directory = ?", [temp])
        if not read_only:
            migrate(conn)
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def registered(conn: duckdb.DuckDBPyConnection, name: str, frame) -> Iterator[None]:
    """``frame`` visible to SQL as ``name`` inside the block, unregistered after it.

    When the block fails inside a transaction, DuckDB refuses the unregister too ("transaction
    is aborted"); that second error must never replace the real one.
    """
    conn.register(name, frame)
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            conn.unregister(name)
        raise
    conn.unregister(name)


def replace_rows(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    where: str,
    params: list,
    frame: pd.DataFrame | None = None,
    select_sql: str | None = None,
    select_params: list | None = None,
) -> int:
    """Idempotent write: delete the rows matching ``where``, insert the new ones, one transaction.

    The new rows come from a DataFrame (columns named like the table's) or from a SELECT.
    Returns the number of rows inserted.
    """
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM {table} WHERE {where}", params)
        if frame is not None:
            cols = ", ".join(frame.columns)
            with registered(conn, "_replace_rows_frame", frame):
                conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _replace_rows_frame")
        elif select_sql is not None:
            conn.execute(f"INSERT INTO {table} {select_sql}", select_params or [])
        inserted = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return int(inserted)
