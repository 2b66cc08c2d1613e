"""Feedback records: validation, identity and the one-line JSON form, shared by the
collector and file ingestion.

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

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

from eval_pipeline.core import timestamps

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
# Deeper JSON than a feedback record needs; also keeps json.dumps of ``extra`` far from
# Python's recursion limit.
MAX_DEPTH = 64


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
