"""People's scores of judged traces: stored, sampled for labelling, exported and imported.

A label is one person's 1-5 score of one judged trace (``partition_date``, ``trace_id``),
with who gave it, when, and the judgment it was shown beside (its key and judge identity).
A label belongs to the trace, not to a judge: agreement for a judge identity pairs every
label with that identity's score of the same trace, so labels keep their value when the
judge changes. When several people labelled a trace, the latest label counts.

The labelling queue is stratified by the judge's score: equal numbers from each score the
judge gave (while a stratum lasts), so that the rare scores where a judge is most often
wrong are labelled too. The order is a hash of the trace, so a session resumes where the
last one stopped. Kappa is then measured on this balanced sample, not on production's
score mix; ``stratify=False`` gives a simple random sample instead (docs/judge-trust.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from eval_pipeline.core.judge.base import Judge

SOURCES = ("terminal", "import", "review")
MAX_IMPORT_LINE = 100_000


@dataclass(frozen=True)
class JudgeIdentity:
    """A judge as agreement is measured for it: the judge, its model and its rubric version."""

    name: str
    model: str | None
    rubric_version: str

    @property
    def key(self) -> str:
        return f"{self.name}|{self.model or ''}|{self.rubric_version}"

    @classmethod
    def of(cls, judge: Judge) -> JudgeIdentity:
        return cls(judge.name, judge.model, judge.rubric_version)

    @classmethod
    def parse(cls, key: str) -> JudgeIdentity:
        parts = key.split("|")
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise ValueError(f"a judge identity is 'name|model|rubric_version', not {key!r}")
        return cls(parts[0], parts[1] or None, parts[2])


def identity_sql(alias: str = "") -> str:
    """SQL for the identity key of a judge_scores row (``alias``: its table alias)."""
    a = f"{alias}." if alias else ""
    return f"{a}judge_name || '|' || coalesce({a}judge_model, '') || '|' || {a}rubric_version"


_IDENTITY_SQL = identity_sql()


@dataclass
class LabelItem:
    """A judged trace to label. Carries the judge's score only for the stratification; the
    labelling flow never shows it."""

    partition_date: dt.date
    trace_id: str
    segment: str
    judgment_key: str
    judge_identity: str
    query: str
    response: str
    _judge_score: int


def identities(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every judge identity that has ok scores, most recent first."""
    rows = conn.execute(
        f"SELECT {_IDENTITY_SQL} AS ident, max(partition_date) FROM judge_scores "
        "WHERE state = 'ok' AND criterion = 'quality' GROUP BY ident ORDER BY 2 DESC, 1"
    ).fetchall()
    return [r[0] for r in rows]


def _order_key(seed: str, day: dt.date, trace_id: str) -> str:
    return hashlib.sha256(f"{seed}|{day}|{trace_id}".encode()).hexdigest()


def queue(
    conn: duckdb.DuckDBPyConnection,
    identity: str,
    labeller: str,
    limit: int | None = None,
    seed: str = "labels",
    stratify: bool = True,
) -> list[LabelItem]:
    """Traces judged ok by ``identity`` that ``labeller`` has not labelled, stratified by the
    judge's score (round robin over scores 1-5, hash order within a score); with
    ``stratify=False``, in hash order only (a simple random sample of production's mix)."""
    rows = conn.execute(
        "SELECT s.partition_date, s.trace_id, s.segment, s.judgment_key, s.score, "
        "t.user_query, t.assistant_response, l.trace_id IS NOT NULL FROM judge_scores s "
        "JOIN raw_traces t USING (partition_date, trace_id) "
        "LEFT JOIN judge_labels l ON l.partition_date = s.partition_date "
        " AND l.trace_id = s.trace_id AND l.labeller = ? "
        f"WHERE s.state = 'ok' AND {identity_sql('s')} = ?",
        [labeller, identity],
    ).fetchall()
    # The order is built over every trace, labelled or not, and the labelled ones are
    # dropped afterwards: so a resumed session continues exactly where the last one stopped.
    strata: dict[int, list[tuple[LabelItem, bool]]] = {}
    for day, tid, seg, key, score, q, a, done in rows:
        item = LabelItem(day, tid, seg, key, identity, q, a, score)
        strata.setdefault(score if stratify else 0, []).append((item, done))
    for items in strata.values():
        items.sort(key=lambda pair: _order_key(seed, pair[0].partition_date, pair[0].trace_id))
    out: list[LabelItem] = []
    depth = 0
    while any(depth < len(v) for v in strata.values()):
        for score in sorted(strata):
            if depth < len(strata[score]) and not strata[score][depth][1]:
                out.append(strata[score][depth][0])
        depth += 1
    return out[:limit] if limit is not None else out


class LabelError(ValueError):
    pass


def record(
    conn: duckdb.DuckDBPyConnection,
    item: LabelItem,
    labeller: str,
    human_score: int,
    source: str = "terminal",
    note: str | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Store one label (replacing this person's earlier label of the same trace)."""
    if not labeller.strip():
        raise LabelError("a label needs the labeller's name")
    if isinstance(human_score, bool) or not isinstance(human_score, int):
        raise LabelError(f"score must be an integer 1-5, not {human_score!r}")
    if not 1 <= human_score <= 5:
        raise LabelError(f"score {human_score} is outside 1-5")
    if source not in SOURCES:
        raise LabelError(f"unknown label source {source!r}")
    when = at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn.execute(
        "INSERT OR REPLACE INTO judge_labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            item.partition_date,
            item.trace_id,
            labeller,
            human_score,
            item.judgment_key,
            item.judge_identity,
            source,
            note,
            when,
        ],
    )


def record_for_trace(
    conn: duckdb.DuckDBPyConnection,
    trace_id: str,
    labeller: str,
    human_score: int,
    partition_date: dt.date | None = None,
    source: str = "review",
    note: str | None = None,
) -> None:
    """A label for a trace known by its id (the review flow: the reviewer's score of the
    trace under review). It refers to the trace's ok judgment on ``partition_date`` (default:
    the latest day the trace was judged ok); a trace no judge scored ok is rejected."""
    row = conn.execute(
        f"SELECT partition_date, segment, judgment_key, {_IDENTITY_SQL}, score FROM judge_scores"
        " WHERE trace_id = ? AND state = 'ok' AND criterion = 'quality'"
        " AND partition_date = coalesce(?, partition_date)"
        " ORDER BY partition_date DESC LIMIT 1",
        [trace_id, partition_date],
    ).fetchone()
    if row is None:
        raise LabelError(f"trace {trace_id[:60]!r} has no ok judgment to label")
    item = LabelItem(row[0], trace_id, row[1], row[2], row[3], "", "", row[4])
    record(conn, item, labeller, human_score, source=source, note=note)


def paired_scores(conn: duckdb.DuckDBPyConnection, identity: str) -> pd.DataFrame:
    """(partition_date, trace_id, judge_score, human_score, labeller) for every labelled trace
    the identity scored ok; the latest label per trace."""
    return conn.execute(
        "WITH latest AS ("
        " SELECT partition_date, trace_id, human_score, labeller, labelled_at,"
        "  row_number() OVER (PARTITION BY partition_date, trace_id"
        "   ORDER BY labelled_at DESC, labeller) AS rn FROM judge_labels)"
        " SELECT l.partition_date, l.trace_id, s.score AS judge_score, l.human_score,"
        "  l.labeller FROM latest l JOIN judge_scores s USING (partition_date, trace_id)"
        f" WHERE l.rn = 1 AND s.state = 'ok' AND {identity_sql('s')} = ?"
        " ORDER BY l.partition_date, l.trace_id",
        [identity],
    ).df()


# --- export / import --------------------------------------------------------------------

EXPORT_HELP = (
    'Each line is one trace: set "score" to an integer 1-5 (leave it null to skip the '
    "trace), then run `eval-pipeline judge label --import FILE`. The judge's score is not "
    "in the file."
)


def export_queue(items: list[LabelItem], path: Path) -> int:
    with open(path, "w", encoding="utf-8") as fh:
        for it in items:
            fh.write(
                json.dumps(
                    {
                        "partition_date": it.partition_date.isoformat(),
                        "trace_id": it.trace_id,
                        "judgment_key": it.judgment_key,
                        "judge_identity": it.judge_identity,
                        "query": it.query,
                        "response": it.response,
                        "score": None,
                        "note": None,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    return len(items)


@dataclass
class ImportResult:
    recorded: int
    skipped: int
    errors: list[str]


def _parse_line(conn: duckdb.DuckDBPyConnection, raw: str) -> tuple[LabelItem, int, str | None]:
    """One export line -> (item, score, note); raises LabelError with the reason."""
    if len(raw) > MAX_IMPORT_LINE:
        raise LabelError(f"line longer than {MAX_IMPORT_LINE} characters")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise LabelError(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise LabelError("not a JSON object")
    score = obj.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise LabelError(f"score must be an integer 1-5 or null, not {str(score)[:40]!r}")
    note = obj.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise LabelError("note must be a string of at most 2000 characters, or null")
    try:
        day = dt.date.fromisoformat(str(obj.get("partition_date")))
    except ValueError:
        raise LabelError("partition_date is not a YYYY-MM-DD date") from None
    tid, key = obj.get("trace_id"), obj.get("judgment_key")
    if not isinstance(tid, str) or not isinstance(key, str):
        raise LabelError("trace_id and judgment_key must be strings")
    for name, text in (("trace_id", tid), ("judgment_key", key), ("note", note or "")):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise LabelError(f"{name} is not valid Unicode (a lone surrogate)") from None
    row = conn.execute(
        f"SELECT segment, {_IDENTITY_SQL}, score FROM judge_scores "
        "WHERE partition_date = ? AND trace_id = ? AND judgment_key = ? AND state = 'ok'",
        [day, tid, key],
    ).fetchone()
    if row is None:
        raise LabelError(f"no ok judgment {key[:12]!r} of trace {tid[:60]!r} on {day}")
    return LabelItem(day, tid, row[0], key, row[1], "", "", row[2]), score, note


def import_labels(conn: duckdb.DuckDBPyConnection, path: Path, labeller: str) -> ImportResult:
    """Record the scored lines of an edited export, all or nothing: any bad line and
    nothing is recorded (the errors say which lines and why)."""
    parsed, errors, skipped = [], [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj_score = json.loads(raw).get("score") if len(raw) < MAX_IMPORT_LINE else 0
            except Exception:
                obj_score = 0  # let _parse_line give the reason
            if obj_score is None:
                skipped += 1
                continue
            try:
                parsed.append(_parse_line(conn, raw))
            except LabelError as exc:
                errors.append(f"line {line_no}: {exc}")
    if errors:
        return ImportResult(0, skipped, errors)
    conn.execute("BEGIN TRANSACTION")
    try:
        for item, score, note in parsed:
            record(conn, item, labeller, score, source="import", note=note)
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return ImportResult(len(parsed), skipped, [])
