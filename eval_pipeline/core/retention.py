"""Retention for raw traces: the store keeps the last ``keep_days`` days of raw rows.

A day older than that loses its ``raw_traces`` and ``trace_rejects`` rows (the bulk of the
store: every trace's full text); optionally they are first written to a Parquet archive
outside the store (``<archive_dir>/<day>/raw_traces.parquet`` and ``trace_rejects.parquet``).
What was derived from the day stays: the sample, judgments and scores, drift reports,
incidents, feedback and the golden set, and the day's ``trace_ingests`` counts; the model,
prompt version and metadata of the sampled and judged traces are copied to
``retained_trace_dimensions`` first, for the causes of drift incidents. A row in
``raw_trace_retention`` records each dropped day.

A drift report does not need raw days (its baseline is the kept judge scores and its causes
the kept dimensions). A run that does (re-sampling, judging, computing the signals or
re-ingesting a dropped day with nothing left in the inbox) raises
:class:`RawDayDropped`, which says when the day was dropped and how to get it back
(:func:`restore_day` from the archive, or put the day's files back in the inbox).

Settings (the one precedence rule, :func:`eval_pipeline.settings.resolve`): ``keep_days``
(``$EVAL_RAW_RETENTION_DAYS``, default 30; 0 keeps everything) and ``archive_dir``
(``$EVAL_RAW_ARCHIVE_DIR``, default none: dropped rows are gone).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from eval_pipeline import settings

DEFAULT_KEEP_DAYS = 30
RAW_TABLES = ("raw_traces", "trace_rejects")


class RawDayDropped(RuntimeError):
    """A run needs a day's raw traces, and the retention has dropped them."""


@dataclass(frozen=True)
class RetentionConfig:
    keep_days: int = DEFAULT_KEEP_DAYS
    archive_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.keep_days < 0:
            raise ValueError("keep_days cannot be negative (0 keeps every day)")

    @classmethod
    def resolve(
        cls, keep_days: int | None = None, archive_dir: str | Path | None = None, env=None
    ) -> RetentionConfig:
        env = os.environ if env is None else env
        days = settings.resolve(keep_days, env, "EVAL_RAW_RETENTION_DAYS", DEFAULT_KEEP_DAYS, int)
        folder = settings.resolve(
            None if archive_dir is None else str(archive_dir), env, "EVAL_RAW_ARCHIVE_DIR", ""
        )
        return cls(days, Path(folder) if folder else None)


@dataclass
class RetentionResult:
    cutoff: dt.date | None  # days before this were dropped; None: retention is off
    days: list[dt.date] = field(default_factory=list)
    rows_dropped: int = 0
    rejects_dropped: int = 0
    archives: list[str] = field(default_factory=list)


def cutoff_day(today: dt.date, keep_days: int) -> dt.date | None:
    """The first day kept: today and the keep_days - 1 days before it are kept."""
    if keep_days == 0:
        return None
    return today - dt.timedelta(days=keep_days - 1)


def apply_retention(
    conn: duckdb.DuckDBPyConnection, today: dt.date, config: RetentionConfig
) -> RetentionResult:
    """Drop (after archiving, if configured) the raw rows of every day before the cutoff."""
    cutoff = cutoff_day(today, config.keep_days)
    result = RetentionResult(cutoff)
    if cutoff is None:
        return result
    days = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT partition_date FROM raw_traces WHERE partition_date < ? "
            "UNION SELECT DISTINCT partition_date FROM trace_rejects WHERE partition_date < ? "
            "ORDER BY 1",
            [cutoff, cutoff],
        ).fetchall()
    ]
    for day in days:
        archive = _archive_day(conn, day, config.archive_dir) if config.archive_dir else None
        conn.execute("BEGIN TRANSACTION")
        try:
            # The judged traces' dimensions outlive the raw rows: drift causes need them.
            conn.execute(
                "INSERT OR REPLACE INTO retained_trace_dimensions "
                "SELECT partition_date, trace_id, model, prompt_version, metadata "
                "FROM raw_traces WHERE partition_date = ? AND trace_id IN ("
                "SELECT trace_id FROM sampled_traces WHERE partition_date = ? "
                "UNION SELECT trace_id FROM judge_scores WHERE partition_date = ?)",
                [day, day, day],
            )
            counts = []
            for table in RAW_TABLES:
                n = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE partition_date = ?", [day]
                ).fetchone()[0]
                conn.execute(f"DELETE FROM {table} WHERE partition_date = ?", [day])
                counts.append(int(n))
            conn.execute(
                "INSERT OR REPLACE INTO raw_trace_retention VALUES (?, ?, ?, ?, now()::TIMESTAMP)",
                [day, counts[0], counts[1], None if archive is None else str(archive)],
            )
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        result.days.append(day)
        result.rows_dropped += counts[0]
        result.rejects_dropped += counts[1]
        if archive is not None:
            result.archives.append(str(archive))
    if days:
        conn.execute("CHECKPOINT")  # hand the freed blocks back for reuse now
    return result


def _archive_day(conn: duckdb.DuckDBPyConnection, day: dt.date, root: Path) -> Path:
    """Write the day's raw rows to Parquet; a file appears complete or not at all."""
    folder = root / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for table in RAW_TABLES:
        final = folder / f"{table}.parquet"
        partial = folder / f".{table}.parquet.partial"
        conn.execute(
            f"COPY (SELECT * FROM {table} WHERE partition_date = ?) TO '{_quote(partial)}' "
            "(FORMAT parquet, COMPRESSION zstd)",
            [day],
        )
        partial.replace(final)
    return folder


def _quote(path: Path) -> str:
    """A path inside a SQL string literal (COPY TO takes no parameter for its target)."""
    return str(path).replace("'", "''")


def dropped(conn: duckdb.DuckDBPyConnection, day: dt.date) -> tuple | None:
    """(dropped_at, rows_dropped, archive_path) if the retention dropped this day."""
    return conn.execute(
        "SELECT dropped_at, rows_dropped, archive_path FROM raw_trace_retention "
        "WHERE partition_date = ?",
        [day],
    ).fetchone()


def dropped_error(day: dt.date, record: tuple, what: str) -> RawDayDropped:
    dropped_at, rows, archive = record
    how = (
        f"restore it from the archive at {archive} (eval_pipeline.core.retention.restore_day)"
        if archive
        else "no archive was kept (set EVAL_RAW_ARCHIVE_DIR to keep one); put the day's "
        "files back in the trace inbox and re-ingest it"
    )
    return RawDayDropped(
        f"{what} needs the raw traces of {day}, which the retention dropped on "
        f"{dropped_at:%Y-%m-%d %H:%M} UTC ({rows} traces; the day's sample, judgments and "
        f"reports are kept). To re-run it, {how}."
    )


def require_raw_day(conn: duckdb.DuckDBPyConnection, day: dt.date, what: str) -> None:
    """Raise RawDayDropped if the day's raw traces were dropped and not brought back."""
    record = dropped(conn, day)
    if record is None:
        return
    if conn.execute(
        "SELECT count(*) > 0 FROM raw_traces WHERE partition_date = ?", [day]
    ).fetchone()[0]:
        return  # re-ingested since
    raise dropped_error(day, record, what)


def restore_day(conn: duckdb.DuckDBPyConnection, day: dt.date) -> int:
    """Load a dropped day back from its Parquet archive; returns the traces restored."""
    record = dropped(conn, day)
    if record is None:
        raise ValueError(f"{day} was not dropped by the retention")
    archive = record[2]
    if not archive:
        raise dropped_error(day, record, "restoring")
    folder = Path(archive)
    missing = [t for t in RAW_TABLES if not (folder / f"{t}.parquet").is_file()]
    if missing:
        raise RawDayDropped(f"the archive of {day} at {folder} has no {', '.join(missing)}")
    conn.execute("BEGIN TRANSACTION")
    try:
        for table in RAW_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE partition_date = ?", [day])
            conn.execute(
                f"INSERT INTO {table} SELECT * FROM read_parquet(?)",
                [str(folder / f"{table}.parquet")],
            )
        n = conn.execute(
            "SELECT count(*) FROM raw_traces WHERE partition_date = ?", [day]
        ).fetchone()[0]
        conn.execute("DELETE FROM raw_trace_retention WHERE partition_date = ?", [day])
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return int(n)
