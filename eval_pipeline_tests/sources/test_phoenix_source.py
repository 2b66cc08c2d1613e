"""Phoenix trace source without a Phoenix server: message rebuilding from real sample spans
(captured from Phoenix 20.26.1), span classification, configuration, the HTTP client's
retries and paging (in-process transport), and the annotation writer's failure handling."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import httpx
import pytest

from eval_pipeline.core import store
from eval_pipeline.core.sources import phoenix
from eval_pipeline.core.sources.inbox import SourceUnavailable, create_staging, ingest_day
from eval_pipeline.core.sources.phoenix import (
    PhoenixClient,
    PhoenixConfig,
    PhoenixSource,
    classify_span,
    classify_spans,
    rebuild_conversation,
)

SAMPLES = Path(__file__).parent.parent / "fixtures" / "phoenix"


def load(name: str):
    return json.loads((SAMPLES / name).read_text())


def llm_span(attrs: dict, **over) -> dict:
    span = {
        "id": "U3Bhbjox",
        "name": "ChatCompletion",
        "context": {"trace_id": "a" * 32, "span_id": "b" * 16},
        "span_kind": "LLM",
        "parent_id": None,
        "start_time": "2026-03-01T10:00:00+00:00",
        "end_time": "2026-03-01T10:00:01.5+00:00",
        "status_code": "OK",
        "status_message": "",
        "attributes": attrs,
        "events": [],
    }
    span.update(over)
    return span


CFG = PhoenixConfig(project="p")


# --- rebuilding messages from the sample spans -------------------------------------------


def test_sample_child_llm_span_rebuilt_but_skipped_when_roots_only():
    child, root = load("sample_spans.json")
    conv = rebuild_conversation(child["attributes"])
    assert [m.role for m in conv.messages] == ["system", "user"]
    assert conv.messages[1].text == "What is 0 + 0?"
    assert conv.answer.text == "I think it is 1."
    assert conv.input_from == "llm.input_messages"
    assert classify_span(child, CFG).kind == "skip"
    assert classify_span(child, CFG).reason == "not a root span"
    outcome = classify_span(child, PhoenixConfig(project="p", root_only=False))
    assert outcome.kind == "trace"
    assert outcome.row.user_query == "What is 0 + 0?"


def test_sample_root_llm_span_becomes_a_trace_with_attributes():
    _, root = load("sample_spans.json")
    outcome = classify_span(root, CFG)
    assert outcome.kind == "trace", outcome.reason
    row = outcome.row
    assert row.trace_id == "2c17e0ad977863c39fadb67223fae868"
    assert row.span_id == "054a48f5345fc4d5"
    assert row.user_query == "What is 5 + 5?"
    assert row.assistant_response == "5 + 5 = 10."
    assert row.model == "gpt-4o-mini"
    assert row.user_id == "user-1"
    assert row.segment is None  # no metadata.segment on this span
    assert row.ts == dt.datetime(2026, 11, 28, 5, 59, 25, 884892)
    assert row.metadata["metadata"] == {"case_id": 5, "tier": "test"}
    assert row.metadata["session_id"] == "session-2"
    assert row.metadata["prompt_tokens"] == 25
    assert row.metadata["latency_ms"] == pytest.approx(750.0)
    seg = classify_span(root, PhoenixConfig(project="p", segment_attrs=("metadata.tier",)))
    assert seg.row.segment == "test"


def test_sample_chain_root_is_skipped_and_error_span_rejected():
    chain, error = load("sample_span_chain_and_error.json")
    assert classify_span(chain, CFG).kind == "skip"
    assert classify_span(chain, CFG).reason == "span kind CHAIN"
    outcome = classify_span(error, CFG)
    assert outcome.kind == "reject"
    assert outcome.reason == "span status ERROR (rate limited (fake))"


def test_sample_page_all_root_llm_spans_are_traces():
    page = load("spans_page1_response.json")["data"]
    day = classify_spans(page, CFG)
    assert len(day.traces) == len(page) == 7
    assert not day.rejects and not day.skips
    for span, row in zip(page, day.traces, strict=True):
        assert row.span_id == span["context"]["span_id"]
        assert row.user_query == span["attributes"]["llm.input_messages.1.message.content"]
        assert row.assistant_response == span["attributes"]["output.value"]


# --- message shapes ---------------------------------------------------------------------


def test_multi_turn_keeps_the_last_user_turn():
    attrs = {
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are a shop assistant.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Where is my order?",
        "llm.input_messages.2.message.role": "assistant",
        "llm.input_messages.2.message.content": "Which order number?",
        "llm.input_messages.3.message.role": "user",
        "llm.input_messages.3.message.content": "It is 1234.",
        # index 10 sorts after 3 numerically, not as text
        "llm.input_messages.10.message.role": "user",
        "llm.input_messages.10.message.content": "Hello? Order 1234.",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Order 1234 ships tomorrow.",
    }
    row = classify_span(llm_span(attrs), CFG).row
    assert row.user_query == "Hello? Order 1234."
    assert row.assistant_response == "Order 1234 ships tomorrow."
    assert row.metadata["user_turns"] == 3
    assert row.metadata["input_messages"] == 5


def test_input_value_json_messages_and_chat_completion_output():
    attrs = {
        "input.value": json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "text", "text": "second"}]},
                ]
            }
        ),
        "input.mime_type": "application/json",
        "output.value": json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": "the answer"}}]}
        ),
        "output.mime_type": "application/json",
    }
    row = classify_span(llm_span(attrs), CFG).row
    assert (row.user_query, row.assistant_response) == ("second", "the answer")
    assert row.metadata["input_from"] == "input.value"
    assert row.metadata["output_from"] == "output.value"


def test_plain_text_values_and_json_dict_shapes():
    row = classify_span(llm_span({"input.value": "hi", "output.value": "hello."}), CFG).row
    assert (row.user_query, row.assistant_response) == ("hi", "hello.")
    attrs = {"input.value": '{"question": "q?"}', "output.value": '{"answer": "a."}'}
    row = classify_span(llm_span(attrs), CFG).row
    assert (row.user_query, row.assistant_response) == ("q?", "a.")
    # text that merely starts like JSON stays text
    row = classify_span(llm_span({"input.value": "[draft] hi", "output.value": "{x"}), CFG).row
    assert (row.user_query, row.assistant_response) == ("[draft] hi", "{x")


def test_multimodal_contents_keep_the_text_parts():
    attrs = {
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "What is in this photo?",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
        "llm.input_messages.0.message.contents.1.message_content.image.image.url": "data:...",
        "output.value": "A cat.",
    }
    row = classify_span(llm_span(attrs), CFG).row
    assert row.user_query == "What is in this photo?"


def test_nested_attributes_parse_like_flattened_ones():
    flat = load("sample_spans.json")[1]
    nested = copy.deepcopy(flat)
    nested["attributes"] = {
        "llm": {
            "input_messages": [
                {"message": {"role": "system", "content": "You are a calculator."}},
                {"message": {"role": "user", "content": "What is 5 + 5?"}},
            ],
            "output_messages": [{"message": {"role": "assistant", "content": "5 + 5 = 10."}}],
            "model_name": "gpt-4o-mini",
        },
        "user": {"id": "user-1"},
    }
    a, b = classify_span(flat, CFG).row, classify_span(nested, CFG).row
    assert (a.user_query, a.assistant_response, a.model, a.user_id) == (
        b.user_query,
        b.assistant_response,
        b.model,
        b.user_id,
    )


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"input.value": "hi"}, "no output (span has neither output messages nor output.value)"),
        ({"output.value": "x"}, "no user query (no input)"),
        (
            {
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "sys",
                "output.value": "x",
            },
            "no user query (no user message in the input)",
        ),
        (
            {
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.contents.0.message_content.type": "image",
                "output.value": "a cat",
            },
            "non-text content (user turn has image)",
        ),
        (
            {
                "input.value": "book a flight",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "book",
            },
            "non-text content (output has tool_call)",
        ),
        (
            {"input.value": "hi", "output.value": "x" * 101},
            "value too large (answer 101 chars > 100)",
        ),
        (
            {"input.value": "   ", "output.value": "x"},
            "no user query (the last user turn is empty)",
        ),
    ],
)
def test_unusable_spans_are_rejected_with_a_reason(attrs, reason):
    outcome = classify_span(llm_span(attrs), PhoenixConfig(project="p", max_chars=100))
    assert (outcome.kind, outcome.reason) == ("reject", reason)


def test_empty_answer_is_kept_for_the_judge():
    row = classify_span(llm_span({"input.value": "hi", "output.value": ""}), CFG).row
    assert row.assistant_response == ""


def test_several_selected_spans_of_one_trace_get_distinct_ids():
    a = llm_span({"input.value": "q1", "output.value": "a1"})
    b = llm_span(
        {"input.value": "q2", "output.value": "a2"},
        context={"trace_id": "a" * 32, "span_id": "c" * 16},
        parent_id="d" * 16,
    )
    lone = llm_span(
        {"input.value": "q3", "output.value": "a3"},
        context={"trace_id": "e" * 32, "span_id": "f" * 16},
    )
    day = classify_spans([a, b, lone, a], PhoenixConfig(project="p", root_only=False))
    assert [t.trace_id for t in day.traces] == [
        "a" * 32 + ":" + "b" * 16,
        "a" * 32 + ":" + "c" * 16,
        "e" * 32,
    ]
    assert [r[1] for r in day.rejects] == ["duplicate span id"]


def test_a_parser_crash_costs_one_span_not_the_day():
    bad = llm_span({"input.value": "q", "output.value": "a"}, start_time=None)
    weird = llm_span({"input.value": "q", "output.value": "a"}, attributes=["not", "a", "dict"])
    day = classify_spans([bad, weird, llm_span({"input.value": "q", "output.value": "a."})], CFG)
    assert len(day.traces) == 1
    assert [r[1].split(" (")[0] for r in day.rejects] == ["bad start_time", "malformed span"]


# --- configuration -----------------------------------------------------------------------


def test_config_from_env_and_overrides():
    env = {
        "PHOENIX_BASE_URL": "http://phx:6006/",
        "EVAL_PHOENIX_PROJECT": "shop",
        "PHOENIX_API_KEY": "sekret",
        "EVAL_PHOENIX_SPAN_KINDS": "llm, agent",
        "EVAL_PHOENIX_ROOT_ONLY": "false",
        "EVAL_PHOENIX_FILTERS": '{"metadata.tier": "prod", "llm.model_name": "m"}',
        "EVAL_PHOENIX_SEGMENT_ATTR": "metadata.segment,metadata.tier",
    }
    cfg = PhoenixConfig.from_env(env)
    assert cfg.base_url == "http://phx:6006"
    assert cfg.project == "shop"
    assert cfg.span_kinds == ("LLM", "AGENT")
    assert cfg.root_only is False
    assert cfg.attribute_filters == (("llm.model_name", "m"), ("metadata.tier", "prod"))
    assert cfg.segment_attrs == ("metadata.segment", "metadata.tier")
    assert "sekret" not in repr(cfg)
    env["EVAL_PHOENIX_URL"] = "http://other:1"
    over = PhoenixConfig.from_env(env, project="p2", root_only=True, span_kinds=None)
    assert (over.base_url, over.project, over.root_only) == ("http://other:1", "p2", True)
    assert over.span_kinds == ("LLM", "AGENT")
    assert PhoenixConfig.from_env({}).base_url == phoenix.DEFAULT_URL
    with pytest.raises(ValueError, match="unknown span kinds"):
        PhoenixConfig.from_env({"EVAL_PHOENIX_SPAN_KINDS": "LLM,SPOON"})
    with pytest.raises(ValueError, match="EVAL_PHOENIX_ROOT_ONLY"):
        PhoenixConfig.from_env({"EVAL_PHOENIX_ROOT_ONLY": "maybe"})
    assert PhoenixConfig(base_url="http://u:pw@h:1/x").safe_url() == "http://h:1/x"


# --- HTTP: retries, paging, unknown project ------------------------------------------------


class Script:
    """An in-process Phoenix: answers requests from a list of (matcher, response) rules."""

    def __init__(self, handler):
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request, len(self.requests))


def source_for(handler, **cfg) -> tuple[PhoenixSource, Script, list[float]]:
    script = Script(handler)
    sleeps: list[float] = []
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
        phoenix.fetch_spans(client, DAY)
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
        assert phoenix.skipped_spans(conn, DAY) == {"span kind CHAIN": 1}
        loc = conn.execute("SELECT location FROM trace_rejects ORDER BY reason").fetchall()
        assert loc[1][0] == "http://phx.test/v1/projects/p/spans?span_id=112a634ee4f953f9"


# --- annotation write-back: failures recorded, never raised ------------------------------


def seed_judged_day(conn, day, spans: list[str], source: str = "phoenix") -> None:
    for i, span_id in enumerate(spans):
        key = f"key-{day}-{i}"
        conn.execute(
            "INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, "
            "assistant_response, source, source_ref) VALUES (?, ?, ?, 'q', 'a', ?, ?)",
            [day, f"t{i}", dt.datetime.combine(day, dt.time(1)), source, span_id],
        )
        state, score = ("ok", 1 + i % 5) if i % 4 != 3 else ("error", None)
        conn.execute(
            "INSERT OR REPLACE INTO judgments (judgment_key, judge_name, judge_model, "
            "rubric_version, state, score, reason, judged_at) "
            "VALUES (?, 'heuristic', NULL, 'heuristic-v2', ?, ?, ?, now())",
            [key, state, score, f"reason {i}"],
        )
        conn.execute(
            "INSERT INTO judge_scores (partition_date, trace_id, segment, judgment_key, state, "
            "score, judge_name, judge_model, rubric_version, cache_hit) "
            "VALUES (?, ?, 'all', ?, ?, ?, 'heuristic', NULL, 'heuristic-v2', false)",
            [day, f"t{i}", key, state, score],
        )


def annotation_server(missing: set[str], status: int | None = None):
    posted: list[list[dict]] = []

    def handler(request, n):
        if status is not None:
            return httpx.Response(status, text="down")
        data = json.loads(request.content)["data"]
        posted.append(data)
        gone = sorted({d["span_id"] for d in data} & missing)
        if gone:
            return httpx.Response(404, text=f"Spans with IDs {', '.join(gone)} do not exist.")
        if any(d["result"]["score"] == 2.0 for d in data) and len(data) > 1:
            return httpx.Response(422, json={"detail": "batch has a bad item"})
        if any(d["result"]["score"] == 2.0 for d in data):
            return httpx.Response(422, json={"detail": "score 2 is cursed"})
        return httpx.Response(200, json={"data": [{"id": "A:" + d["span_id"]} for d in data]})

    return handler, posted


def test_annotations_partial_failures_are_recorded_and_retried(tmp_path):
    spans = [f"{i:016x}" for i in range(6)]
    handler, posted = annotation_server(missing={spans[4]})
    cfg = PhoenixConfig(base_url="http://phx.test", annotation_batch=4)
    with store.connect(tmp_path / "db.duckdb") as conn:
        seed_judged_day(conn, DAY, spans)
        res = phoenix.annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        # span 1 has score 2 (rejected with 422), span 4 is unknown to Phoenix
        assert (res.eligible, res.sent, res.failed) == (6, 4, 2)
        assert res.errors == {"span not found in Phoenix": 1, "rejected by Phoenix (HTTP 422)": 1}
        rows = conn.execute(
            "SELECT span_id, status, annotation_id, http_status, attempts, label, score "
            "FROM phoenix_annotations ORDER BY span_id"
        ).fetchall()
        assert [r[1] for r in rows] == ["sent", "failed", "sent", "sent", "failed", "sent"]
        assert rows[0][2] == "A:" + spans[0]
        assert (rows[3][5], rows[3][6]) == ("judge_error", None)  # i=3 is an error judgment
        assert (rows[0][5], rows[0][6]) == ("bad", 1.0)
        assert (rows[1][3], rows[4][3]) == (422, 404)
        payload = posted[0][0]
        assert payload["annotator_kind"] == "LLM"
        assert payload["name"] == "eval_pipeline.quality"
        assert payload["identifier"] == "heuristic|-|heuristic-v2"
        assert payload["result"]["explanation"] == "reason 0"

        # The next run (another day) retries the earlier failures; they fail again here.
        next_day = DAY + dt.timedelta(days=1)
        seed_judged_day(conn, next_day, ["9" * 16])
        conn.execute("UPDATE raw_traces SET trace_id = 'n0' WHERE partition_date = ?", [next_day])
        conn.execute("UPDATE judge_scores SET trace_id = 'n0' WHERE partition_date = ?", [next_day])
        handler2, _ = annotation_server(missing=set())
        res2 = phoenix.annotate_day(
            conn, cfg, next_day, transport=httpx.MockTransport(Script(handler2))
        )
        assert (res2.eligible, res2.retried_earlier) == (1, 2)
        assert (res2.sent, res2.failed) == (2, 1)  # the 404 span now exists; score 2 still bad
        attempts = dict(
            conn.execute("SELECT span_id, attempts FROM phoenix_annotations").fetchall()
        )
        assert attempts[spans[4]] == 2 and attempts[spans[0]] == 1
        assert res2.still_failing_total == 1


def test_unreachable_phoenix_records_everything_and_does_not_raise(tmp_path):
    handler, _ = annotation_server(missing=set(), status=503)
    cfg = PhoenixConfig(base_url="http://phx.test", retries=1, backoff_s=0)
    with store.connect(tmp_path / "db.duckdb") as conn:
        seed_judged_day(conn, DAY, [f"{i:016x}" for i in range(3)])
        res = phoenix.annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert res.unreachable and (res.sent, res.failed) == (0, 3)
        assert res.errors == {"Phoenix unreachable": 3}
        errors = conn.execute("SELECT DISTINCT error FROM phoenix_annotations").fetchall()
        assert len(errors) == 1 and "did not answer" in errors[0][0]


def test_no_phoenix_traces_means_nothing_to_post(tmp_path):
    def handler(request, n):
        raise AssertionError("must not call Phoenix")

    with store.connect(tmp_path / "db.duckdb") as conn:
        seed_judged_day(conn, DAY, ["x.jsonl:1"], source="jsonl")
        assert phoenix.phoenix_judgments(conn, DAY) == 0
        res = phoenix.annotate_day(
            conn, PhoenixConfig(), DAY, transport=httpx.MockTransport(Script(handler))
        )
        assert (res.eligible, res.sent, res.failed) == (0, 0, 0)


def test_failed_span_dropped_from_a_resampled_day_is_still_retried(tmp_path):
    spans = ["a" * 16, "b" * 16, "c" * 16]  # b has score 2: the fake server always rejects it
    cfg = PhoenixConfig(base_url="http://phx.test")
    with store.connect(tmp_path / "db.duckdb") as conn:
        seed_judged_day(conn, DAY, spans)
        handler, _ = annotation_server(missing={spans[2]})
        res = phoenix.annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert (res.sent, res.failed, res.retried_earlier) == (1, 2, 0)
        conn.execute("DELETE FROM judge_scores WHERE trace_id = 't2'")  # c re-sampled away
        handler, posted = annotation_server(missing=set())
        res = phoenix.annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert (res.eligible, res.retried_earlier, res.sent, res.failed) == (2, 1, 2, 1)
        assert sorted(d["span_id"] for d in posted[0]) == spans
        status = dict(conn.execute("SELECT span_id, status FROM phoenix_annotations").fetchall())
        assert status == {spans[0]: "sent", spans[1]: "failed", spans[2]: "sent"}
