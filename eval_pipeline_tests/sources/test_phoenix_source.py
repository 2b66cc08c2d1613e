"""The Phoenix client and PhoenixSource against an in-process Phoenix: retries, paging,
filters, unknown projects, auth failures, and what a day stages (traces, rejects, skips)."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from eval_pipeline.core import store
from eval_pipeline.core.sources.ingest import SourceUnavailable, create_staging, ingest_day
from eval_pipeline.core.sources.phoenix.client import PhoenixClient, fetch_spans
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.source import PhoenixSource, skipped_spans
from eval_pipeline_tests.sources.phoenix_samples import Script, llm_span, load


def source_for(handler, **cfg) -> tuple[PhoenixSource, Script, list[float]]:
    script = Script(handler)
    sleeps: list[float] = []
    # The part spans' query (retrievers, tools) is tested on its own: off unless asked for.
    cfg.setdefault("part_kinds", ())
    config = PhoenixConfig(base_url="http://phx.test", project="p", **cfg)
    src = PhoenixSource(config, transport=httpx.MockTransport(script), sleep=sleeps.append)
    return src, script, sleeps


DAY = dt.date(2026, 3, 1)


def test_retries_5xx_then_reads_all_pages(tmp_path):
    spans = [
        llm_span(
            {"input.value": f"q{i}", "output.value": f"a{i}."},
            context={"trace_id": f"{i:032x}", "span_id": f"{i:016x}"},
        )
        for i in range(5)
    ]

    def handler(request, n):
        if n == 1:
            return httpx.Response(503, text="busy")
        if n == 2:
            return httpx.Response(429, headers={"Retry-After": "2"}, text="slow down")
        cursor = request.url.params.get("cursor")
        start = int(cursor) if cursor else 0
        page = spans[start : start + 2]
        nxt = str(start + 2) if start + 2 < len(spans) else None
        return httpx.Response(200, json={"data": page, "next_cursor": nxt})

    src, script, sleeps = source_for(handler, page_size=2, api_key="k-123")
    with store.connect(tmp_path / "db.duckdb") as conn:
        res = ingest_day(conn, src, DAY)
        assert res.rows_ingested == 5
        assert res.files_read == 3  # pages
        refs = conn.execute("SELECT source_ref FROM raw_traces ORDER BY 1").fetchall()
    assert [r[0] for r in refs] == [f"{i:016x}" for i in range(5)]
    assert sleeps == [0.5, 2.0]  # backoff, then Retry-After
    first = script.requests[2]
    assert first.headers["authorization"] == "Bearer k-123"
    assert first.url.params.get("start_time") == "2026-03-01T00:00:00+00:00"
    assert first.url.params.get("end_time") == "2026-03-02T00:00:00+00:00"
    assert first.url.params.get("parent_id") == "null"
    assert first.url.params.get("limit") == "2"
    assert first.url.path == "/v1/projects/p/spans"


def test_prefetch_does_the_http_and_stage_day_only_writes(tmp_path):
    span = llm_span({"input.value": "q", "output.value": "a."})

    def handler(request, n):
        if n == 2:
            return httpx.Response(500, text="boom")
        return httpx.Response(200, json={"data": [span], "next_cursor": None})

    src, script, _ = source_for(handler, retries=0)
    fetched = src.prefetch(DAY)  # no store open at all
    assert (fetched.pages, fetched.spans_read, len(fetched.classified.traces)) == (1, 1, 1)
    assert len(script.requests) == 1
    with store.connect(tmp_path / "db.duckdb") as conn:
        res = ingest_day(conn, src, DAY)
        assert len(script.requests) == 1  # staged from memory
        assert (res.rows_seen, res.rows_ingested, res.files_read) == (1, 1, 1)
        # Staged once: without a new prefetch the day is read again (here: Phoenix fails,
        # and the day already in the store stays as it was).
        with pytest.raises(SourceUnavailable, match="HTTP 500"):
            ingest_day(conn, src, DAY)
        assert len(script.requests) == 2
        assert conn.execute("SELECT count(*) FROM raw_traces").fetchone()[0] == 1
        # A prefetch of another day is not staged as this one.
        src.prefetch(DAY + dt.timedelta(days=1))
        ingest_day(conn, src, DAY)
        assert script.requests[-1].url.params["start_time"].startswith("2026-03-01")


def test_filters_and_kinds_are_sent_to_phoenix_when_not_root_only():
    def handler(request, n):
        return httpx.Response(200, json={"data": [], "next_cursor": None})

    src, script, _ = source_for(
        handler,
        root_only=False,
        span_kinds=("LLM", "AGENT"),
        attribute_filters=(("metadata.tier", "2"), ("metadata.n", 2)),
    )
    with PhoenixClient(src.cfg, src.transport) as client:
        fetch_spans(client, DAY)
    params = script.requests[0].url.params
    assert params.get_list("span_kind") == ["LLM", "AGENT"]
    assert params.get_list("attribute") == ['metadata.tier:"2"', "metadata.n:2"]
    assert "parent_id" not in params


def test_always_500_fails_the_day_and_writes_nothing(tmp_path):
    src, script, sleeps = source_for(lambda r, n: httpx.Response(500, text="boom"), retries=2)
    with store.connect(tmp_path / "db.duckdb") as conn:
        with pytest.raises(SourceUnavailable, match=r"after 3 attempts: HTTP 500: boom"):
            ingest_day(conn, src, DAY)
        assert conn.execute("SELECT count(*) FROM trace_ingests").fetchone()[0] == 0
    assert len(script.requests) == 3 and sleeps == [0.5, 1.0]


def test_long_retry_after_is_capped_and_the_key_never_reaches_the_error():
    def handler(request, n):
        key = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(503, headers={"Retry-After": "120"}, text=f"bad key {key} " * 40)

    src, script, sleeps = source_for(handler, retries=1, api_key="k-secret-123")
    with store.connect(":memory:") as conn, pytest.raises(SourceUnavailable) as info:
        create_staging(conn)
        src.stage_day(conn, DAY)
    assert len(script.requests) == 2 and sleeps == [30.0]
    message = str(info.value)
    assert "after 2 attempts: HTTP 503: bad key [redacted]" in message
    assert "k-secret" not in message


def test_timeouts_and_refused_connections_are_retried_then_fail():
    def handler(request, n):
        raise httpx.ReadTimeout("slow", request=request)

    src, script, _ = source_for(handler, retries=1)
    with store.connect(":memory:") as conn, pytest.raises(SourceUnavailable, match="timed out"):
        create_staging(conn)
        src.stage_day(conn, DAY)
    assert len(script.requests) == 2


def test_unknown_project_fails_but_an_existing_empty_project_is_an_empty_day(tmp_path):
    def unknown(request, n):
        return httpx.Response(404, text="Project with name p not found")

    src, script, _ = source_for(unknown)
    with store.connect(tmp_path / "db.duckdb") as conn:
        with pytest.raises(SourceUnavailable, match="project 'p' not found"):
            ingest_day(conn, src, DAY)
        assert [r.url.path for r in script.requests] == ["/v1/projects/p/spans", "/v1/projects/p"]

        def exists(request, n):
            if request.url.path.endswith("/spans"):
                return httpx.Response(404, text="Project with name p not found")
            return httpx.Response(200, json={"data": {"name": "p", "id": "UHJvamVjdDoy"}})

        src, _, _ = source_for(exists)
        res = ingest_day(conn, src, DAY)
        assert res.rows_ingested == 0
        assert "exists; no spans started on 2026-03-01" in res.notes[0]
        assert conn.execute("SELECT rows_seen FROM trace_ingests").fetchall() == [(0,)]


def test_auth_failure_names_the_variable_not_the_key():
    src, _, _ = source_for(lambda r, n: httpx.Response(401, text="nope"), api_key="sekret-9")
    with store.connect(":memory:") as conn, pytest.raises(SourceUnavailable) as info:
        create_staging(conn)
        src.stage_day(conn, DAY)
    assert "PHOENIX_API_KEY" in str(info.value) and "sekret-9" not in str(info.value)


def test_repeated_cursor_is_an_error_not_an_endless_loop():
    span = llm_span({"input.value": "q", "output.value": "a"})
    src, _, _ = source_for(
        lambda r, n: httpx.Response(200, json={"data": [span], "next_cursor": "X"})
    )
    with store.connect(":memory:") as conn, pytest.raises(SourceUnavailable, match="same cursor"):
        create_staging(conn)
        src.stage_day(conn, DAY)


def test_skips_and_rejects_are_recorded_per_day(tmp_path):
    chain, error = load("sample_span_chain_and_error.json")
    page = [chain, error, llm_span({"input.value": "q", "output.value": "a."}), llm_span({})]
    src, _, _ = source_for(
        lambda r, n: httpx.Response(200, json={"data": page, "next_cursor": None})
    )
    with store.connect(tmp_path / "db.duckdb") as conn:
        res = ingest_day(conn, src, DAY)
        assert (res.rows_seen, res.rows_ingested, res.rows_rejected) == (4, 1, 2)
        assert res.rejects_by_reason == {"span status ERROR": 1, "no user query": 1}
        assert skipped_spans(conn, DAY) == {"span kind CHAIN": 1}
        loc = conn.execute("SELECT location FROM trace_rejects ORDER BY reason").fetchall()
        assert loc[1][0] == "http://phx.test/v1/projects/p/spans?span_id=112a634ee4f953f9"
