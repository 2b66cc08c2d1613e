"""Ingestion of feedback files into the store, exactly once.

Every line of a file is validated (``records.validate_record``); good records land in
``feedback`` once per identity (a re-ingested file, a copy or a retry stores none twice),
bad lines in ``feedback_rejects`` with a reason, and the file in ``feedback_files`` by
content hash. Which files to ingest, and where they go afterwards, is ``inbox.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from eval_pipeline.core.feedback.records import (
    MAX_LINE_BYTES,
    FeedbackRecord,
    InvalidRecord,
    loads_line,
    validate_record,
)
from eval_pipeline.core.terminal import printable

REJECT_EXAMPLES = 3  # examples kept per reject kind in summaries (metadata, logs)


@dataclass
class Reject:
    line_no: int
    reason: str
    excerpt: str


@dataclass
class ParsedFile:
    sha256: str
    records: list[tuple[int, FeedbackRecord]]
    rejects: list[Reject]
    lines: int
    blank: int


def _excerpt(raw: bytes) -> str:
    # Shown later in terminals and the UI: control characters rendered visibly.
    return printable(raw[:200].decode("utf-8", errors="replace"))


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_file(data: bytes, max_line_bytes: int = MAX_LINE_BYTES) -> ParsedFile:
    """Validate every line; good records and bad lines (with 1-based line numbers)."""
    records: list[tuple[int, FeedbackRecord]] = []
    rejects: list[Reject] = []
    lines = blank = 0
    sha = file_sha256(data)
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM from an editor is not a bad line
        data = data[3:]
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            blank += 1
            continue
        lines += 1
        if len(raw) > max_line_bytes:
            rejects.append(
                Reject(
                    line_no, f"oversized: {len(raw)} bytes (limit {max_line_bytes})", _excerpt(raw)
                )
            )
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejects.append(
                Reject(
                    line_no,
                    f"undecodable: not UTF-8 ({exc.reason} at byte {exc.start})",
                    _excerpt(raw),
                )
            )
            continue
        try:
            records.append((line_no, validate_record(loads_line(text))))
        except InvalidRecord as exc:
            rejects.append(Reject(line_no, str(exc), _excerpt(raw)))
    # data.split yields one empty tail after a final newline; it is not a blank line.
    if data.endswith(b"\n") or not data:
        blank -= 1
    return ParsedFile(sha, records, rejects, lines, max(blank, 0))


@dataclass
class IngestResult:
    file_name: str
    sha256: str
    lines: int
    ingested: int
    duplicates: int
    rejected: int
    rejects: list[Reject]
    already_seen: bool

    @property
    def rejects_by_reason(self) -> dict[str, int]:
        # Group by the reason's kind (the text before the first colon) for a short summary.
        return dict(Counter(reject_kind(r.reason) for r in self.rejects))


def reject_kind(reason: str) -> str:
    """The kind of a reason ("not JSON", "invalid field", ...): the text before the first
    colon. Kinds are a small fixed set; the detail after the colon may carry values."""
    return reason.split(":", 1)[0][:40]


def summarise_rejects(rejects: list[Reject], examples: int = REJECT_EXAMPLES) -> dict[str, dict]:
    """{kind: {"count": n, "examples": [{"line", "reason"}, ...]}}: as many keys as there are
    kinds, at most ``examples`` examples each, however many lines were rejected."""
    out: dict[str, dict] = {}
    for r in rejects:
        entry = out.setdefault(reject_kind(r.reason), {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < examples:
            entry["examples"].append({"line": r.line_no, "reason": r.reason[:200]})
    return out


def ingest_bytes(
    conn: duckdb.DuckDBPyConnection, data: bytes, file_name: str, now: dt.datetime | None = None
) -> IngestResult:
    """Ingest one feedback file's content in one transaction; safe to repeat."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    parsed = parse_file(data)
    sha = parsed.sha256
    # Within the file, keep the first occurrence of each identity.
    unique: dict[str, tuple[int, FeedbackRecord]] = {}
    for line_no, rec in parsed.records:
        unique.setdefault(rec.feedback_id, (line_no, rec))
    frame = pd.DataFrame(
        [
            {
                "feedback_id": rec.feedback_id,
                "client_feedback_id": rec.client_feedback_id,
                "trace_id": rec.trace_id,
                "rating": rec.rating,
                "comment": rec.comment,
                "user_id": rec.user_id,
                "ts": rec.ts,
                "received_at": rec.received_at,
                "extra": json.dumps(rec.extra) if rec.extra else None,
                "file_sha256": sha,
                "line_no": line_no,
                "ingested_at": now,
            }
            for line_no, rec in unique.values()
        ],
        columns=[
            "feedback_id",
            "client_feedback_id",
            "trace_id",
            "rating",
            "comment",
            "user_id",
            "ts",
            "received_at",
            "extra",
            "file_sha256",
            "line_no",
            "ingested_at",
        ],
    ).astype(
        {"ts": "datetime64[us]", "received_at": "datetime64[us]", "ingested_at": "datetime64[us]"}
    )
    conn.execute("BEGIN TRANSACTION")
    try:
        seen = conn.execute(
            "SELECT times_seen FROM feedback_files WHERE file_sha256 = ?", [sha]
        ).fetchall()
        seen = seen[0] if seen else None
        before = conn.execute("SELECT count(*) FROM feedback").fetchall()[0][0]
        if len(frame):
            _insert_frame(
                conn,
                frame,
                "INSERT INTO feedback SELECT f.* FROM {name} f "
                "WHERE f.feedback_id NOT IN (SELECT feedback_id FROM feedback)",
            )
        ingested = conn.execute("SELECT count(*) FROM feedback").fetchall()[0][0] - before
        conn.execute("DELETE FROM feedback_rejects WHERE file_sha256 = ?", [sha])
        if parsed.rejects:
            # One bulk insert: row by row, 10^5 rejects took close to a minute inside the
            # write transaction, while other writers waited for the store.
            rejects = pd.DataFrame(
                {
                    "file_sha256": sha,
                    "file_name": file_name,
                    "line_no": [r.line_no for r in parsed.rejects],
                    "reason": [r.reason for r in parsed.rejects],
                    "excerpt": [r.excerpt for r in parsed.rejects],
                    "recorded_at": now,
                }
            ).astype({"recorded_at": "datetime64[us]"})
            _insert_frame(conn, rejects, "INSERT INTO feedback_rejects SELECT * FROM {name}")
        duplicates = len(parsed.records) - ingested
        if seen is None:
            conn.execute(
                "INSERT INTO feedback_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                [sha, file_name, parsed.lines, ingested, duplicates, len(parsed.rejects), now, now],
            )
        else:
            # The file's own first-ingestion figures stay; only note that it came again.
            conn.execute(
                "UPDATE feedback_files SET last_seen_at = ?, times_seen = times_seen + 1 "
                "WHERE file_sha256 = ?",
                [now, sha],
            )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return IngestResult(
        file_name=file_name,
        sha256=sha,
        lines=parsed.lines,
        ingested=int(ingested),
        duplicates=int(duplicates),
        rejected=len(parsed.rejects),
        rejects=parsed.rejects,
        already_seen=seen is not None,
    )


def _insert_frame(conn: duckdb.DuckDBPyConnection, frame: pd.DataFrame, sql: str) -> None:
    name = "_feedback_frame"
    conn.register(name, frame)
    try:
        conn.execute(sql.format(name=name))
    except Exception:
        # In a failed transaction unregister fails too; its error must not hide this one.
        with contextlib.suppress(duckdb.Error):
            conn.unregister(name)
        raise
    conn.unregister(name)


def ingest_file(conn: duckdb.DuckDBPyConnection, path: Path) -> IngestResult:
    return ingest_bytes(conn, Path(path).read_bytes(), Path(path).name)
