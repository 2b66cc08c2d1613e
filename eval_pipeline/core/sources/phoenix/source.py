"""``PhoenixSource``: a day of Phoenix spans in as staged traces (the trace source protocol
of ``core.sources.inbox``).

No store connection is open during network I/O: DuckDB allows one writing process, so a slow
Phoenix would otherwise block every other writer. ``prefetch(day)`` reads and classifies
the day (HTTP, kept in memory) before the caller opens the store, then ``stage_day`` only
inserts. When Phoenix cannot be read the day fails with ``SourceUnavailable``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import httpx
import pandas as pd

from eval_pipeline.core import store
from eval_pipeline.core.sources.ingest import SourceUnavailable, StageReport
from eval_pipeline.core.sources.phoenix.client import (
    PhoenixClient,
    PhoenixUnavailable,
    fetch_part_spans,
    fetch_spans,
)
from eval_pipeline.core.sources.phoenix.config import SOURCE_NAME, PhoenixConfig
from eval_pipeline.core.sources.phoenix.spans import ClassifiedDay, classify_spans
from eval_pipeline.core.sources.trace_parts import PART_COLUMNS
from eval_pipeline.core.store import replace_rows


@dataclass
class FetchedDay:
    """A day read from Phoenix and classified, held in memory until it is staged."""

    day: dt.date
    pages: int
    spans_read: int
    classified: ClassifiedDay


@dataclass
class PhoenixSource:
    """Reads a day of spans from a Phoenix project (see the module docstring).

    ``prefetch(day)`` does all the network work (and the classification) with no store
    connection; ``stage_day`` then only writes to the connection it is given. DuckDB lets
    one process write a file at a time, so holding the store open while Phoenix pages come
    in would block every other writer for as long as Phoenix is slow.
    """

    cfg: PhoenixConfig
    name: str = SOURCE_NAME
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    _fetched: FetchedDay | None = field(default=None, init=False, repr=False)

    def prefetch(self, day: dt.date) -> FetchedDay:
        """Read and classify the day's spans; kept (one day only) for ``stage_day``.

        Raises SourceUnavailable when Phoenix cannot be read: nothing is kept, so nothing
        of a half-read day can be staged.
        """
        self._fetched = None
        try:
            with PhoenixClient(self.cfg, self.transport, self.sleep) as client:
                fetched = fetch_spans(client, day)
                # The parts are only worth a query when the day has traces to attach them to.
                parts = (
                    fetch_part_spans(client, day).spans
                    if self.cfg.part_kinds and fetched.spans
                    else []
                )
        except PhoenixUnavailable as exc:
            raise SourceUnavailable(f"{day}: {exc}") from exc
        classified = classify_spans(fetched.spans, self.cfg, parts)
        # Only the classified rows are kept: the raw span dicts are the bulk of the memory.
        self._fetched = FetchedDay(day, fetched.pages, len(fetched.spans), classified)
        return self._fetched

    def stage_day(self, conn: duckdb.DuckDBPyConnection, day: dt.date) -> StageReport:
        """Stage the prefetched day; a caller that did not prefetch gets the fetch here."""
        fetched = self._fetched
        if fetched is None or fetched.day != day:
            fetched = self.prefetch(day)
        self._fetched = None  # staged once: staging the day again reads Phoenix again
        classified = fetched.classified
        report = StageReport(source=self.name, files_read=fetched.pages)
        report.rows_seen = fetched.spans_read
        _stage(conn, self.name, classified)
        skipped = sum(classified.skips.values())
        _record_skips(conn, day, self.cfg.project, classified.skips)
        if not fetched.spans_read:
            report.notes.append(
                f"Phoenix project {self.cfg.project!r} exists; no spans started on {day} "
                f"(filters: {_describe_filters(self.cfg)})"
            )
        else:
            report.notes.append(
                f"{fetched.spans_read} spans read in {fetched.pages} pages: "
                f"{len(classified.traces)} traces, {len(classified.rejects)} rejected, "
                f"{skipped} skipped {dict(classified.skips)}"
            )
        return report


def _describe_filters(cfg: PhoenixConfig) -> str:
    parts = [f"kinds={','.join(cfg.span_kinds)}", f"root_only={cfg.root_only}"]
    parts.extend(f"{k}={v!r}" for k, v in cfg.attribute_filters)
    return " ".join(parts)


def _stage(conn: duckdb.DuckDBPyConnection, source: str, day: ClassifiedDay) -> None:
    if day.traces:
        frame = pd.DataFrame(
            {
                "trace_id": pd.Series([t.trace_id for t in day.traces], dtype=object),
                "ts": pd.Series([t.ts for t in day.traces], dtype="datetime64[us]"),
                "user_query": pd.Series([t.user_query for t in day.traces], dtype=object),
                "assistant_response": pd.Series(
                    [t.assistant_response for t in day.traces], dtype=object
                ),
                "segment": pd.Series([t.segment for t in day.traces], dtype=object),
                "model": pd.Series([t.model for t in day.traces], dtype=object),
                "prompt_version": pd.Series([t.prompt_version for t in day.traces], dtype=object),
                "user_id": pd.Series([t.user_id for t in day.traces], dtype=object),
                "metadata": pd.Series(
                    [json.dumps(t.metadata, default=str) for t in day.traces], dtype=object
                ),
                "source_ref": pd.Series([t.span_id for t in day.traces], dtype=object),
            }
        )
        parts = [t.parts.columns() for t in day.traces]
        for column in PART_COLUMNS:
            frame[column] = pd.Series([p[column] for p in parts], dtype=object)
        with store.registered(conn, "_phoenix_traces", frame):
            conn.execute(
                "INSERT INTO staged_traces SELECT trace_id, ts, user_query, assistant_response, "
                "segment, model, prompt_version, user_id, metadata::JSON, context::JSON, "
                "conversation::JSON, tool_calls::JSON, ?, source_ref "
                "FROM _phoenix_traces",
                [source],
            )
    if day.rejects:
        conn.executemany(
            "INSERT INTO staged_rejects VALUES (?, ?, NULL, ?, ?)",
            [[source, loc, reason, excerpt] for loc, reason, excerpt in day.rejects],
        )


def _record_skips(
    conn: duckdb.DuckDBPyConnection, day: dt.date, project: str, skips: Counter
) -> None:
    frame = pd.DataFrame(
        {
            "partition_date": pd.Series([day] * len(skips), dtype=object),
            "project": pd.Series([project] * len(skips), dtype=object),
            "reason": pd.Series(list(skips), dtype=object),
            "spans": pd.Series(list(skips.values()), dtype="int64"),
        }
    )
    replace_rows(conn, "phoenix_span_skips", "partition_date = ?", [day], frame=frame)


def skipped_spans(conn: duckdb.DuckDBPyConnection, day: dt.date) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT reason, spans FROM phoenix_span_skips WHERE partition_date = ? "
            "ORDER BY spans DESC, reason",
            [day],
        ).fetchall()
    )
