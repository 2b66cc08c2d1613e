"""Feedback records: validation (shared by the collector and file ingestion) and ingestion
of feedback files into the store, exactly once.

A record is one JSON object: ``trace_id`` and ``rating`` ("up"/"down") are required;
``comment``, ``user_id``, ``ts`` (or ``timestamp``; ISO 8601 or epoch milliseconds, the same
rule as traces: see ``core/timestamps.py``),
``feedback_id`` (a client-sent id) and ``received_at`` (added by the collector) are optional;
other fields are kept in ``extra``. The seed's simple format
``{"trace_id", "rating", "comment", "ts"}`` is a subset of this.

Identity: a ``feedback_id`` in the record names it; otherwise its identity is a hash of
(trace_id, rating, ts, user_id, comment). ``received_at`` is not part of it. The collector
always writes a ``feedback_id`` (the client's, or a fresh one it assigns), so two posts never
collapse into one; a client retry lands once only if the client sent its own id. Only lines
without an id (files dropped by hand) fall back to the content hash: there two lines with the
same trace, rating, ts, user and comment cannot be told apart from a repeat, and land once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from eval_pipeline.core import timestamps
from eval_pipeline.core.terminal import printable

MAX_LINE_BYTES = 16 * 1024
MAX_ID_CHARS = 200
MAX_COMMENT_CHARS = 4000
RATINGS = {"up": "up", "down": "down", "thumbs_up": "up", "thumbs_down": "down"}
KNOWN_FIELDS = {
    "trace_id",
    "rating",
    "comment",
    "user_id",
    "ts",
    "timestamp",
    "feedback_id",
    "received_at",
}
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json")
# Deeper JSON than a feedback record needs; also keeps json.dumps of ``extra`` far from
# Python's recursion limit.
MAX_DEPTH = 64
REJECT_EXAMPLES = 3  # examples kept per reject kind in summaries (metadata, logs)


class InvalidRecord(ValueError):
    """A feedback record that cannot be used; str() is "<kind>: <detail>", for a person."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True)
class FeedbackRecord:
    feedback_id: str
    trace_id: str
    rating: str
    comment: str | None = None
    user_id: str | None = None
    ts: dt.datetime | None = None
    received_at: dt.datetime | None = None
    client_feedback_id: str | None = None
    extra: dict = field(default_factory=dict)


def _parse_time(value: object, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRecord(
            "invalid field", f"{name} must be an ISO 8601 string or epoch milliseconds"
        )
    if isinstance(value, int | float):
        try:
            return timestamps.epoch_ms_to_utc(value)
        except ValueError as exc:
            raise InvalidRecord("invalid field", f"{name} {str(exc)[:120]}") from exc
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidRecord(
                "invalid field", f"{name} {value[:40]!r} is not an ISO 8601 time"
            ) from exc
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed
    raise InvalidRecord("invalid field", f"{name} must be an ISO 8601 string or epoch milliseconds")


def _optional_text(obj: dict, name: str, limit: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRecord("invalid field", f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidRecord("invalid field", f"{name} is longer than {limit} characters")
    return value


def record_identity(
    trace_id: str,
    rating: str,
    ts: dt.datetime | None,
    user_id: str | None,
    comment: str | None,
    client_feedback_id: str | None,
) -> str:
    if client_feedback_id:
        basis = ["id", client_feedback_id]
    else:
        basis = [
            "content",
            trace_id,
            rating,
            ts.isoformat() if ts else None,
            user_id,
            comment or "",
        ]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:32]


def _check_values(obj: object) -> None:
    """Every key and string is valid Unicode (no lone surrogate from a ``\\ud800`` escape:
    it cannot be stored or written back as UTF-8) and nesting stays within MAX_DEPTH.
    Iterative, so a deep value cannot exhaust the stack here."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = value[exc.start]
                raise InvalidRecord(
                    "invalid text", f"lone surrogate \\u{ord(bad):04x} (not valid Unicode)"
                ) from None
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidRecord("too deep", f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(k, str):
                    stack.append((k, depth))
                stack.append((v, depth + 1))


def validate_record(obj: object) -> FeedbackRecord:
    """Check one decoded JSON value; raise InvalidRecord saying what is wrong."""
    if not isinstance(obj, dict):
        raise InvalidRecord("not an object", f"expected a JSON object, got {type(obj).__name__}")
    _check_values(obj)
    missing = [f for f in ("trace_id", "rating") if f not in obj or obj[f] in (None, "")]
    if missing:
        raise InvalidRecord("missing field", ", ".join(missing))
    trace_id = obj["trace_id"]
    if not isinstance(trace_id, str):
        raise InvalidRecord(
            "invalid field", f"trace_id must be a string, got {type(trace_id).__name__}"
        )
    trace_id = trace_id.strip()
    if not trace_id or len(trace_id) > MAX_ID_CHARS:
        raise InvalidRecord("invalid field", f"trace_id must be 1-{MAX_ID_CHARS} characters")
    rating_raw = obj["rating"]
    rating = RATINGS.get(rating_raw.strip().lower()) if isinstance(rating_raw, str) else None
    if rating is None:
        raise InvalidRecord("unknown rating", f"{str(rating_raw)[:40]!r} (expected 'up' or 'down')")
    comment = _optional_text(obj, "comment", MAX_COMMENT_CHARS)
    user_id = _optional_text(obj, "user_id", MAX_ID_CHARS)
    client_id = _optional_text(obj, "feedback_id", MAX_ID_CHARS)
    if "ts" in obj and "timestamp" in obj and obj["ts"] != obj["timestamp"]:
        raise InvalidRecord("invalid field", "ts and timestamp disagree; send one of them")
    ts = _parse_time(obj.get("ts", obj.get("timestamp")), "ts")
    received_at = _parse_time(obj.get("received_at"), "received_at")
    extra = {k: v for k, v in obj.items() if k not in KNOWN_FIELDS}
    return FeedbackRecord(
        feedback_id=record_identity(trace_id, rating, ts, user_id, comment, client_id),
        trace_id=trace_id,
        rating=rating,
        comment=comment,
        user_id=user_id,
        ts=ts,
        received_at=received_at,
        client_feedback_id=client_id,
        extra=extra,
    )


def record_to_json(record: FeedbackRecord) -> str:
    """The one-line form the collector writes; it validates back to the same identity."""
    out: dict = {"trace_id": record.trace_id, "rating": record.rating}
    if record.client_feedback_id:
        out["feedback_id"] = record.client_feedback_id
    if record.comment is not None:
        out["comment"] = record.comment
    if record.user_id is not None:
        out["user_id"] = record.user_id
    if record.ts is not None:
        out["ts"] = record.ts.isoformat() + "Z"
    if record.received_at is not None:
        out["received_at"] = record.received_at.isoformat() + "Z"
    out.update(record.extra)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


# --- files ---------------------------------------------------------------------------


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


def loads_line(text: str) -> object:
    """json.loads, with every failure as InvalidRecord (the standard parser also raises
    ValueError for an integer over 4,300 digits and RecursionError for deep nesting)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRecord("not JSON", f"{exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InvalidRecord("not JSON", "nested too deeply to parse") from None
    except ValueError as exc:  # int_max_str_digits: "Exceeds the limit (4300 digits) ..."
        raise InvalidRecord("not JSON", str(exc)[:160]) from None


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


# --- the inbox -----------------------------------------------------------------------

INCOMING_DIR = ".incoming"  # where the collector writes; files are renamed out when complete
PROCESSED_DIR = "processed"  # where ingestion moves files it has ingested
DUPLICATES_DIR = "duplicates"  # where the sensor moves re-drops of content already ingested


def is_candidate_name(name: str) -> bool:
    """A name a complete feedback file can have: visible, with a JSON-lines suffix.

    Writers use a dot-prefixed name or a .tmp/.part suffix (or the .incoming folder) while
    writing and rename when done, so such names are never picked up.
    """
    return not name.startswith((".", "_", "~")) and name.endswith(FILE_SUFFIXES)


def archive(path: Path, inbox: Path, sha256: str, folder: str = PROCESSED_DIR) -> Path:
    """Move a file out of the inbox (into processed/ or duplicates/), never overwriting."""
    dest_dir = inbox / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    if dest.exists():
        dest = dest_dir / f"{path.stem}.{sha256[:12]}{path.suffix}"
    if dest.exists():  # the same content was archived under this name already
        path.unlink()
        return dest
    path.replace(dest)
    return dest


# What "complete" means for a file in the inbox (the sensor's rule, see ARCHITECTURE.md, "Feedback to eval"):
# a visible name (is_candidate_name), a regular file directly in the inbox, not empty, and
# either unchanged (size and mtime) since the previous look or not modified for
# SETTLE_SECONDS. Renamed-in files (the collector's) are complete at once; a file being
# copied in by hand is picked up once it has stopped growing.
SETTLE_SECONDS = 5.0


@dataclass
class InboxScan:
    # (name, sha256) of every complete file now in the inbox, by name. Whether its content
    # still needs a run is the caller's question (the sensor asks the run history).
    complete: list[tuple[str, str]]
    waiting: list[str]  # not complete yet
    state: dict[str, list]  # name -> [size, mtime_ns, sha256 | None]: the next cursor


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_inbox(
    inbox: Path, previous: dict[str, list], now: float, settle_seconds: float = SETTLE_SECONDS
) -> InboxScan:
    """Look at the inbox once: which files are complete, with their content hash.

    ``previous`` is the last scan's state; a file unchanged since then is not hashed again.
    Only files present now are kept in the new state, so it stays as small as the inbox
    (ingestion moves files out to processed/, the sensor moves re-drops to duplicates/).
    """
    scan = InboxScan([], [], {})
    if not inbox.is_dir():
        return scan
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        if not is_candidate_name(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # moved away while we looked
            continue
        fingerprint = [st.st_size, st.st_mtime_ns]
        prev = previous.get(entry.name)
        if prev and prev[:2] == fingerprint and prev[2]:
            scan.state[entry.name] = prev
            scan.complete.append((entry.name, prev[2]))
            continue
        settled = (prev is not None and prev[:2] == fingerprint) or (
            now - st.st_mtime >= settle_seconds
        )
        if st.st_size == 0 or not settled:
            scan.state[entry.name] = [*fingerprint, None]
            scan.waiting.append(entry.name)
            continue
        path = Path(entry.path)
        try:
            sha = _sha256_path(path)
            after = path.stat()
        except FileNotFoundError:
            continue
        if [after.st_size, after.st_mtime_ns] != fingerprint:  # written to while hashing
            scan.state[entry.name] = [after.st_size, after.st_mtime_ns, None]
            scan.waiting.append(entry.name)
            continue
        scan.state[entry.name] = [*fingerprint, sha]
        scan.complete.append((entry.name, sha))
    return scan


def complete_files(inbox: Path, now: float, settle_seconds: float = SETTLE_SECONDS) -> list[Path]:
    """Files in the inbox that are complete by the settle rule alone (for catch-up runs)."""
    scan = scan_inbox(inbox, {}, now, settle_seconds)
    return [inbox / name for name, _ in scan.complete]
