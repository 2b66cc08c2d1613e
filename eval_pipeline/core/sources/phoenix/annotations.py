"""Judge scores back to Phoenix as span annotations.

Every judgment of a Phoenix-sourced trace becomes a span annotation
(``POST /v1/span_annotations?sync=true``), one per judged criterion: the quality score is
named ``eval_pipeline.quality`` (``EVAL_PHOENIX_ANNOTATION_NAME``), any other criterion
``<prefix>.<criterion>`` with the configured name's prefix (``eval_pipeline.groundedness``).
Each has an ``identifier`` made of judge name, model and rubric version. Phoenix upserts on
(span, name, identifier), so re-running a day updates the annotations in place, and a new
judge or rubric adds a new annotation next to the old one instead of overwriting it. The
delivery state of each annotation is kept in ``phoenix_annotations``; failures are retried
on the next run and never raise.

No store connection is open while posting (DuckDB allows one writing process): a run is
``plan_annotations`` (short read) -> ``send_annotations`` (HTTP, no connection) ->
``record_annotations`` (short write).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import httpx
import pandas as pd

from eval_pipeline.core.sources.phoenix.client import (
    PhoenixClient,
    PhoenixUnavailable,
    body_excerpt,
)
from eval_pipeline.core.sources.phoenix.config import SOURCE_NAME, PhoenixConfig


def annotation_identifier(judge_name: str, judge_model: str | None, rubric_version: str) -> str:
    """One annotation per judge setup: re-runs of the same judge upsert in place."""
    return f"{judge_name}|{judge_model or '-'}|{rubric_version}"


def annotation_name(quality_name: str, criterion: str) -> str:
    """The annotation name of a criterion: the configured name for quality; for the others
    the configured name with its last dotted part replaced by the criterion."""
    if criterion == "quality":
        return quality_name
    prefix = quality_name.rsplit(".", 1)[0] if "." in quality_name else quality_name
    return f"{prefix}.{criterion}"


# The same mapping in SQL (``?`` = the configured quality name, twice), for the store's rows.
_NAME_SQL = (
    "CASE WHEN coalesce(j.criterion, 'quality') = 'quality' THEN ? "
    "ELSE (CASE WHEN contains(?, '.') THEN regexp_replace(?, '\\.[^.]*$', '') ELSE ? END) "
    "|| '.' || j.criterion END"
)


def _name_params(quality_name: str) -> list[str]:
    return [quality_name] * 4


def score_label(state: str, score: int | None, criterion: str = "quality") -> str:
    """A categorical label for Phoenix's UI; 'bad' matches the drift report's bad share.

    Other criteria have their own scales and thresholds (in rubric files this module does
    not read), so their label is the score itself."""
    if state != "ok" or score is None:
        return "unparseable" if state == "unparseable" else "judge_error"
    if criterion != "quality":
        return str(int(score))
    if score >= 4:
        return "good"
    if score == 3:
        return "mixed"
    return "bad"


EXPLANATION_CHARS = 4000

_PENDING_SQL = """
SELECT s.partition_date, s.trace_id, t.source_ref AS span_id, s.judgment_key,
       j.state, j.score, j.reason, j.judge_name, j.judge_model, j.rubric_version, s.criterion
FROM judge_scores s
JOIN raw_traces t USING (partition_date, trace_id)
JOIN judgments j USING (judgment_key)
WHERE s.partition_date = ? AND t.source = ? AND t.source_ref IS NOT NULL
ORDER BY s.trace_id, s.criterion
"""

# Failed rows of this pipeline's annotation names only (a renamed annotation is not retried).
_RETRY_SQL = f"""
SELECT a.partition_date, a.trace_id, a.span_id, a.judgment_key,
       j.state, j.score, j.reason, j.judge_name, j.judge_model, j.rubric_version,
       coalesce(j.criterion, 'quality') AS criterion
FROM phoenix_annotations a JOIN judgments j USING (judgment_key)
WHERE a.status = 'failed' AND a.name = {_NAME_SQL} AND a.attempts < ?
ORDER BY a.partition_date, a.trace_id, a.name
LIMIT ?
"""

_FAILED_SQL = f"""
SELECT count(*) FROM phoenix_annotations a JOIN judgments j USING (judgment_key)
WHERE a.status = 'failed' AND a.name = {_NAME_SQL}
"""


@dataclass
class AnnotationResult:
    day: dt.date
    name: str  # the quality annotation's name
    eligible: int = 0  # the day's judgments of Phoenix-sourced traces
    retried_earlier: int = 0  # failed annotations of earlier runs tried again
    sent: int = 0
    failed: int = 0
    still_failing_total: int = 0  # failed rows in the store after this run (all days)
    unreachable: bool = False
    errors: Counter = field(default_factory=Counter)
    identifiers: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the day's annotation names


@dataclass
class _Item:
    partition_date: dt.date
    trace_id: str
    span_id: str
    judgment_key: str
    state: str
    score: int | None
    label: str
    identifier: str
    name: str
    payload: dict
    status: str = "failed"
    annotation_id: str | None = None
    http_status: int | None = None
    error: str | None = "not attempted"
    category: str = "not attempted"  # the error, grouped for reports


def _items(rows: list[tuple], quality_name: str) -> list[_Item]:
    items = []
    for day, trace_id, span_id, key, state, score, reason, jname, jmodel, rubric, crit in rows:
        score = None if score is None or (isinstance(score, float) and math.isnan(score)) else score
        identifier = annotation_identifier(jname, jmodel, rubric)
        label = score_label(state, score, crit)
        name = annotation_name(quality_name, crit)
        payload = {
            "span_id": span_id,
            "name": name,
            "annotator_kind": "LLM",
            "result": {
                "label": label,
                "score": float(score) if score is not None else None,
                "explanation": (reason or "")[:EXPLANATION_CHARS] or None,
            },
            "metadata": {
                "source": "eval_pipeline",
                "judge": jname,
                "judge_model": jmodel,
                "rubric_version": rubric,
                "judgment_state": state,
                "judgment_key": key,
                "partition_date": str(day),
                "trace_id": trace_id,
            },
            "identifier": identifier,
        }
        if crit != "quality":
            payload["metadata"]["criterion"] = crit
        items.append(
            _Item(day, trace_id, span_id, key, state, score, label, identifier, name, payload)
        )
    return items


_MISSING_SPANS = re.compile(r"[0-9a-fA-F]{16}")


def _post_batch(client: PhoenixClient, batch: list[_Item]) -> None:
    """Post one batch; sets each item's status. Raises PhoenixUnavailable to stop the run."""
    pending = list(batch)
    while pending:
        resp = client.post_span_annotations([i.payload for i in pending])
        if resp.status_code == 200:
            try:
                ids = [d.get("id") for d in resp.json().get("data", [])]
            except (ValueError, AttributeError):
                ids = []
            for n, item in enumerate(pending):
                item.status, item.http_status, item.error = "sent", 200, None
                # sync answers one id per annotation, in request order
                item.annotation_id = ids[n] if len(ids) == len(pending) else None
            return
        if resp.status_code in (401, 403):
            raise PhoenixUnavailable(
                f"Phoenix refused the annotations (HTTP {resp.status_code}): set "
                "PHOENIX_API_KEY to a key that may write annotations"
            )
        body = body_excerpt(resp, 300, client.secrets)
        if resp.status_code == 404:
            # "Spans with IDs a, b do not exist.": mark those, send the rest again.
            missing = set(_MISSING_SPANS.findall(body))
            bad = [i for i in pending if i.span_id in missing]
            if bad:
                for item in bad:
                    item.status, item.http_status = "failed", 404
                    item.error = item.category = "span not found in Phoenix"
                pending = [i for i in pending if i.span_id not in missing]
                continue
        if len(pending) > 1:
            # Some item is unacceptable and the answer does not say which: one at a time.
            for item in pending:
                _post_batch(client, [item])
            return
        item = pending[0]
        item.status, item.http_status = "failed", resp.status_code
        item.error = f"HTTP {resp.status_code}: {body}"
        item.category = f"rejected by Phoenix (HTTP {resp.status_code})"
        return


def _record(conn: duckdb.DuckDBPyConnection, items: list[_Item]) -> None:
    if not items:
        return
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    frame = pd.DataFrame(
        {
            "span_id": pd.Series([i.span_id for i in items], dtype=object),
            "name": pd.Series([i.name for i in items], dtype=object),
            "identifier": pd.Series([i.identifier for i in items], dtype=object),
            "partition_date": pd.Series([i.partition_date for i in items], dtype=object),
            "trace_id": pd.Series([i.trace_id for i in items], dtype=object),
            "judgment_key": pd.Series([i.judgment_key for i in items], dtype=object),
            "state": pd.Series([i.state for i in items], dtype=object),
            "score": pd.array([i.score for i in items], dtype="Float64"),
            "label": pd.Series([i.label for i in items], dtype=object),
            "status": pd.Series([i.status for i in items], dtype=object),
            "annotation_id": pd.Series([i.annotation_id for i in items], dtype=object),
            "http_status": pd.array([i.http_status for i in items], dtype="Int64"),
            "error": pd.Series([i.error for i in items], dtype=object),
        }
    )
    conn.register("_annotation_updates", frame)
    conn.execute("BEGIN TRANSACTION")
    try:
        # Keep the attempt count and first attempt of rows that already exist.
        conn.execute(
            """
            CREATE OR REPLACE TEMP TABLE _annotation_rows AS
            SELECT u.span_id, u.name, u.identifier, u.partition_date::DATE AS partition_date,
                   u.trace_id, u.judgment_key, u.state, u.score::DOUBLE AS score, u.label,
                   u.status, u.annotation_id, u.http_status::INTEGER AS http_status, u.error,
                   coalesce(a.attempts, 0) + 1 AS attempts,
                   coalesce(a.first_attempt_at, ?) AS first_attempt_at,
                   ?::TIMESTAMP AS last_attempt_at,
                   CASE WHEN u.status = 'sent' THEN ?::TIMESTAMP ELSE a.sent_at END AS sent_at
            FROM _annotation_updates u
            LEFT JOIN phoenix_annotations a USING (span_id, name, identifier)
            """,
            [now, now, now],
        )
        conn.execute(
            "DELETE FROM phoenix_annotations a USING _annotation_rows r WHERE "
            "a.span_id = r.span_id AND a.name = r.name AND a.identifier = r.identifier"
        )
        conn.execute(
            "INSERT INTO phoenix_annotations (span_id, name, identifier, partition_date, "
            "trace_id, judgment_key, state, score, label, status, annotation_id, http_status, "
            "error, attempts, first_attempt_at, last_attempt_at, sent_at) "
            "SELECT span_id, name, identifier, partition_date, trace_id, judgment_key, state, "
            "score, label, status, annotation_id, http_status, error, attempts, "
            "first_attempt_at, last_attempt_at, sent_at FROM _annotation_rows"
        )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.unregister("_annotation_updates")
        conn.execute("DROP TABLE IF EXISTS _annotation_rows")


def phoenix_judgments(conn: duckdb.DuckDBPyConnection, day: dt.date) -> int:
    """How many of the day's judgments (all criteria) belong to Phoenix-sourced traces."""
    return int(
        conn.execute(
            "SELECT count(*) FROM judge_scores s JOIN raw_traces t "
            "USING (partition_date, trace_id) WHERE s.partition_date = ? AND t.source = ?",
            [day, SOURCE_NAME],
        ).fetchone()[0]
    )


def pending_retries(conn: duckdb.DuckDBPyConnection, cfg: PhoenixConfig | None = None) -> int:
    """Failed annotations that the next run will try again (None: default settings)."""
    name = cfg.annotation_name if cfg else PhoenixConfig.annotation_name
    max_attempts = cfg.annotation_max_attempts if cfg else PhoenixConfig.annotation_max_attempts
    return int(
        conn.execute(
            _FAILED_SQL + " AND a.attempts < ?", [*_name_params(name), max_attempts]
        ).fetchone()[0]
    )


@dataclass
class AnnotationPlan:
    """What one run sends for a day, read from the store by ``plan_annotations``."""

    day: dt.date
    name: str
    today: list[_Item]  # the day's judgments of Phoenix-sourced traces
    earlier: list[_Item]  # failed annotations of earlier runs, tried again

    @property
    def items(self) -> list[_Item]:
        return self.earlier + self.today


@dataclass
class SendOutcome:
    """How the posting went as a whole; each item's own delivery state is on the item."""

    unreachable: bool = False
    attempted: bool = False


def plan_annotations(
    conn: duckdb.DuckDBPyConnection, cfg: PhoenixConfig, day: dt.date, *, retry_limit: int = 5000
) -> AnnotationPlan:
    """Phase 1 (store, read only): the day's judgments of Phoenix traces plus the earlier
    failed annotations to retry (up to ``retry_limit``, at most ``annotation_max_attempts``
    tries each)."""
    today = _items(conn.execute(_PENDING_SQL, [day, SOURCE_NAME]).fetchall(), cfg.annotation_name)
    # Failed annotations of any earlier run, including this day's spans that are no longer
    # in its sample; the day's current judgments are posted anyway and take precedence.
    current = {(i.span_id, i.name, i.identifier) for i in today}
    params = [*_name_params(cfg.annotation_name), cfg.annotation_max_attempts, retry_limit]
    earlier = [
        i
        for i in _items(conn.execute(_RETRY_SQL, params).fetchall(), cfg.annotation_name)
        if (i.span_id, i.name, i.identifier) not in current
    ]
    return AnnotationPlan(day, cfg.annotation_name, today, earlier)


def send_annotations(
    cfg: PhoenixConfig,
    plan: AnnotationPlan,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendOutcome:
    """Phase 2 (network, no store): post the plan's annotations in batches, setting each
    item's delivery state. Never raises: every failure ends up on the items."""
    items = plan.items
    outcome = SendOutcome(attempted=bool(items))
    if not items:
        return outcome
    try:
        with PhoenixClient(cfg, transport, sleep) as client:
            for start in range(0, len(items), max(1, cfg.annotation_batch)):
                _post_batch(client, items[start : start + cfg.annotation_batch])
    except PhoenixUnavailable as exc:
        outcome.unreachable = True
        for item in items:
            if item.status != "sent" and item.category == "not attempted":
                item.error, item.category = str(exc), "Phoenix unreachable"
    except Exception as exc:  # the write-back must never fail the judging
        for item in items:
            if item.status != "sent" and item.category == "not attempted":
                item.error, item.category = f"unexpected error: {exc!r}", "unexpected error"
    return outcome


def record_annotations(
    conn: duckdb.DuckDBPyConnection, plan: AnnotationPlan, outcome: SendOutcome
) -> AnnotationResult:
    """Phase 3 (store, one transaction): each item's delivery state into
    ``phoenix_annotations``, and the run's figures."""
    result = AnnotationResult(day=plan.day, name=plan.name)
    result.eligible = len(plan.today)
    result.retried_earlier = len(plan.earlier)
    result.identifiers = sorted({i.identifier for i in plan.today})
    result.names = sorted({i.name for i in plan.today})
    result.unreachable = outcome.unreachable
    items = plan.items
    if outcome.attempted:
        _record(conn, items)
    for item in items:
        if item.status == "sent":
            result.sent += 1
        else:
            result.failed += 1
            result.errors[item.category] += 1
    result.still_failing_total = int(
        conn.execute(_FAILED_SQL, _name_params(plan.name)).fetchone()[0]
    )
    return result


def annotate_day(
    conn: duckdb.DuckDBPyConnection,
    cfg: PhoenixConfig,
    day: dt.date,
    *,
    retry_limit: int = 5000,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> AnnotationResult:
    """Plan, send and record on one connection; never raises for HTTP.

    A convenience for callers that hold the store anyway (tests). The ``judge_annotations``
    asset runs the three phases itself so that no connection is open while posting.

    Every run posts all of the day's annotations again (Phoenix updates them in place, so
    this is idempotent and repairs annotations deleted in Phoenix) plus, first, the
    other annotations whose last attempt failed. Every outcome is recorded in
    ``phoenix_annotations``.
    """
    plan = plan_annotations(conn, cfg, day, retry_limit=retry_limit)
    outcome = send_annotations(cfg, plan, transport=transport, sleep=sleep)
    return record_annotations(conn, plan, outcome)
