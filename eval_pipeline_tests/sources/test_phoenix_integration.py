"""The Phoenix trace source and annotation write-back against a real Arize Phoenix 20.26.1.

Spans are seeded over Phoenix's REST API (several days, multi-turn chats, error spans, tool
and chain spans, metadata); the daily assets raw_traces -> sampled_traces -> judge_scores ->
judge_annotations run through Dagster with EVAL_TRACE_SOURCE=phoenix; the test checks what
was ingested, how the messages were rebuilt, and what Phoenix holds as annotations afterwards.
Skipped (with the reason) only when the Phoenix virtualenv has not been built.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.sources.phoenix.annotations import annotate_day
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.source import skipped_spans
from eval_pipeline.defs.drift_loop import judge_scores, raw_traces, sampled_traces
from eval_pipeline.defs.phoenix import judge_annotations
from eval_pipeline.defs.resources import EvalStore, JudgeResource, TraceSourceResource
from eval_pipeline_tests.sources.phoenix_fixtures import (
    free_port,
    make_span,
    phoenix_server,  # noqa: F401  (session fixture)
    seed_spans,
    span_annotations,
)

pytestmark = pytest.mark.phoenix

DAY1, DAY2, EMPTY_DAY = "2026-03-01", "2026-03-02", "2026-03-03"
ASSETS = [raw_traces, sampled_traces, judge_scores, judge_annotations]
RESOURCES = {"store": EvalStore(), "trace_source": TraceSourceResource(), "judge": JudgeResource()}
REFUSAL = "I'm sorry, but I can't help with that."


def chat(*turns: tuple[str, str], answer: str | None = None, **extra) -> dict:
    attrs: dict = {}
    for i, (role, content) in enumerate(turns):
        attrs[f"llm.input_messages.{i}.message.role"] = role
        attrs[f"llm.input_messages.{i}.message.content"] = content
    attrs["input.value"] = json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})
    attrs["input.mime_type"] = "application/json"
    if answer is not None:
        attrs["llm.output_messages.0.message.role"] = "assistant"
        attrs["llm.output_messages.0.message.content"] = answer
        attrs["output.value"] = answer
        attrs["output.mime_type"] = "text/plain"
    attrs.update(extra)
    return attrs


def app_attrs(segment: str, user: str, version: str = "v7") -> dict:
    return {
        "llm.model_name": "shop-model-1",
        "metadata.segment": segment,
        "metadata.prompt_version": version,
        "user.id": user,
        "session.id": f"s-{user}",
    }


SYSTEM = ("system", "You are the shop's support assistant.")


def build_spans() -> tuple[list[dict], dict]:
    """The seeded world and what the test expects of it."""
    spans: list[dict] = []
    expect: dict = {"day1_traces": {}, "day2_traces": {}}

    def add(span, day_key=None, query=None, answer=None):
        spans.append(span)
        if day_key:
            expect[day_key][span["context"]["span_id"]] = (query, answer)
        return span

    good = "You can track it: go to Orders, then click Track. It ships within 2 days."
    add(
        make_span(
            f"{DAY1}T08:00:00",
            chat(SYSTEM, ("user", "Where is my order?"), answer=good, **app_attrs("billing", "u1")),
        ),
        "day1_traces",
        "Where is my order?",
        good,
    )
    # multi-turn: the last user turn is the query
    multi = make_span(
        f"{DAY1}T09:00:00",
        chat(
            SYSTEM,
            ("user", "I want a refund."),
            ("assistant", "Which order is it about?"),
            ("user", "Order 1234, the blue kettle."),
            answer="We have started the refund for order 1234; you will see it within 5 days.",
            **app_attrs("refunds", "u2"),
        ),
    )
    add(multi, "day1_traces", "Order 1234, the blue kettle.", None)
    expect["multi_turn_span"] = multi["context"]["span_id"]
    refusal = make_span(
        f"{DAY1}T10:00:00",
        chat(SYSTEM, ("user", "Can I change my delivery address?"), answer=REFUSAL,
             **app_attrs("shipping", "u3")),
    )  # fmt: skip
    add(refusal, "day1_traces", "Can I change my delivery address?", REFUSAL)
    expect["refusal_span"] = refusal["context"]["span_id"]
    # only input.value / output.value, as JSON (no llm.*_messages attributes)
    json_only = make_span(
        f"{DAY1}T11:00:00",
        {
            "input.value": json.dumps({"messages": [{"role": "user", "content": "Do you ship abroad?"}]}),
            "input.mime_type": "application/json",
            "output.value": json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": "Yes, to 30 countries."}}]}
            ),
            "output.mime_type": "application/json",
            **app_attrs("shipping", "u4", version="v8"),
        },
    )  # fmt: skip
    add(json_only, "day1_traces", "Do you ship abroad?", "Yes, to 30 countries.")
    # an error span: rejected with its status message
    add(
        make_span(
            f"{DAY1}T12:00:00",
            chat(SYSTEM, ("user", "Hello?"), **app_attrs("billing", "u5")),
            status="ERROR",
            status_message="upstream 429",
        )
    )
    # a span without output
    add(
        make_span(f"{DAY1}T12:30:00", chat(("user", "Anyone there?"), **app_attrs("billing", "u6")))
    )
    # an agent: a CHAIN root with an LLM child and a TOOL child (root-only: the chain is skipped)
    agent = make_span(f"{DAY1}T13:00:00", {"input.value": "find order 9", "output.value": "found"},
                      kind="CHAIN", name="agent")  # fmt: skip
    add(agent)
    tid, root_id = agent["context"]["trace_id"], agent["context"]["span_id"]
    add(make_span(f"{DAY1}T13:00:01", chat(("user", "find order 9"), answer="calling tool"),
                  trace_id=tid, parent_id=root_id))  # fmt: skip
    add(make_span(f"{DAY1}T13:00:02", {"input.value": "9", "output.value": "{}"}, kind="TOOL",
                  name="lookup_order", trace_id=tid, parent_id=root_id))  # fmt: skip
    # a root TOOL span, skipped
    add(make_span(f"{DAY1}T14:00:00", {"input.value": "x", "output.value": "y"}, kind="TOOL"))
    # too large (EVAL_PHOENIX_MAX_CHARS=5000 in the tests)
    add(make_span(f"{DAY1}T15:00:00", chat(("user", "essay please"), answer="word " * 2000)))
    # just outside DAY1 on both sides
    add(make_span("2026-02-28T23:59:59.999", chat(("user", "late?"), answer="Yes.")))
    add(
        make_span(f"{DAY2}T00:00:00", chat(("user", "early?"), answer="Yes, early.")),
        "day2_traces",
        "early?",
        "Yes, early.",
    )
    for i in range(3):
        q = f"Question {i} about returns?"
        add(
            make_span(
                f"{DAY2}T1{i}:00:00",
                chat(SYSTEM, ("user", q), answer=f"Returns take {i + 2} days. You can start one in Orders.",
                     **app_attrs("refunds", f"u{10 + i}")),
            ),
            "day2_traces",
            q,
            f"Returns take {i + 2} days. You can start one in Orders.",
        )  # fmt: skip
    return spans, expect


@pytest.fixture(scope="module")
def seeded(phoenix_server):  # noqa: F811
    project = f"shop-{secrets.token_hex(4)}"
    spans, expect = build_spans()
    seed_spans(phoenix_server, project, spans)
    expect["project"] = project
    return phoenix_server, expect


@pytest.fixture
def phoenix_env(monkeypatch, seeded):
    server, expect = seeded
    monkeypatch.setenv("EVAL_TRACE_SOURCE", "phoenix")
    monkeypatch.setenv("EVAL_PHOENIX_URL", server.base_url)
    monkeypatch.setenv("EVAL_PHOENIX_PROJECT", expect["project"])
    monkeypatch.setenv("EVAL_PHOENIX_PAGE_SIZE", "3")  # several pages per day
    monkeypatch.setenv("EVAL_PHOENIX_MAX_CHARS", "5000")
    monkeypatch.setenv("EVAL_PHOENIX_RETRIES", "1")
    monkeypatch.setenv("EVAL_PHOENIX_BACKOFF", "0.05")
    return server, expect


def run(instance, day: str, assets=ASSETS) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets, resources=RESOURCES, instance=instance, partition_key=day, raise_on_error=False
    )


def query(sql: str, params=None) -> list[tuple]:
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def materialization_meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [mat] = [m for m in result.asset_materializations_for_node(asset)]
    return {k: v.value for k, v in mat.metadata.items()}


def test_daily_assets_ingest_judge_and_annotate(phoenix_env):
    server, expect = phoenix_env
    instance = dg.DagsterInstance.ephemeral()
    result = run(instance, DAY1)
    assert result.success

    rows = query(
        "SELECT source_ref, trace_id, user_query, assistant_response, segment, model, "
        "prompt_version, user_id, source, metadata FROM raw_traces WHERE partition_date = ?",
        [DAY1],
    )
    got = {r[0]: r for r in rows}
    assert set(got) == set(expect["day1_traces"])
    for span_id, (q, a) in expect["day1_traces"].items():
        assert got[span_id][2] == q
        if a is not None:
            assert got[span_id][3] == a
        assert got[span_id][8] == "phoenix"
        assert len(got[span_id][1]) == 32  # one selected span per trace: the OTel trace id
    multi = got[expect["multi_turn_span"]]
    assert multi[4:8] == ("refunds", "shop-model-1", "v7", "u2")
    meta = json.loads(multi[9])
    assert meta["user_turns"] == 2 and meta["input_messages"] == 4
    assert meta["session_id"] == "s-u2"
    assert meta["metadata"] == {"segment": "refunds", "prompt_version": "v7"}

    rejects = dict(
        query(
            "SELECT regexp_replace(reason, ' \\(.*$', ''), count(*) FROM trace_rejects "
            "WHERE partition_date = ? GROUP BY 1",
            [DAY1],
        )
    )
    assert rejects == {"span status ERROR": 1, "no output": 1, "value too large": 1}
    [(reason,)] = query("SELECT reason FROM trace_rejects WHERE reason LIKE 'span status%'")
    assert reason == "span status ERROR (upstream 429)"
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        assert skipped_spans(conn, dt.date.fromisoformat(DAY1)) == {
            "span kind CHAIN": 1,
            "span kind TOOL": 1,
        }
    [(pages, seen, ingested, rejected)] = query(
        "SELECT files_read, rows_seen, rows_ingested, rows_rejected FROM trace_ingests "
        "WHERE partition_date = ?",
        [DAY1],
    )
    # 9 root spans on the day, 3 per page: the last page comes back empty or short
    assert (seen, ingested, rejected) == (9, 4, 3) and pages >= 3
    raw_meta = materialization_meta(result, "raw_traces")
    assert raw_meta["rows_ingested"] == 4

    # Annotations: one per judged span, with the judge's score, readable back from Phoenix.
    scores = dict(
        query(
            "SELECT t.source_ref, s.score FROM judge_scores s JOIN raw_traces t "
            "USING (partition_date, trace_id) WHERE s.partition_date = ?",
            [DAY1],
        )
    )
    assert len(scores) == 4
    assert scores[expect["refusal_span"]] == 1
    anns = span_annotations(server, expect["project"], list(scores))
    assert len(anns) == 4
    by_span = {a["span_id"]: a for a in anns}
    for span_id, score in scores.items():
        ann = by_span[span_id]
        assert ann["name"] == "eval_pipeline.quality"
        assert ann["annotator_kind"] == "LLM"
        assert ann["identifier"] == "heuristic|-|heuristic-v2"
        assert ann["result"]["score"] == float(score)
        assert ann["result"]["explanation"]
        assert ann["metadata"]["judge"] == "heuristic"
        assert ann["metadata"]["partition_date"] == DAY1
    assert by_span[expect["refusal_span"]]["result"]["label"] == "bad"
    assert by_span[expect["refusal_span"]]["result"]["explanation"] == "refuses to help"
    stored = dict(
        query(
            "SELECT span_id, annotation_id FROM phoenix_annotations WHERE status = 'sent' "
            "AND partition_date = ?",
            [DAY1],
        )
    )
    assert stored == {a["span_id"]: a["id"] for a in anns}
    ann_meta = materialization_meta(result, "judge_annotations")
    assert (ann_meta["annotations_sent"], ann_meta["annotations_failed"]) == (4, 0)
    [check] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "annotations_delivered"
    ]
    assert check.passed

    # A re-run updates in place: same annotation ids, no duplicates, attempts counted.
    again = run(instance, DAY1)
    assert again.success
    anns2 = span_annotations(server, expect["project"], list(scores))
    assert sorted((a["span_id"], a["id"]) for a in anns2) == sorted(
        (a["span_id"], a["id"]) for a in anns
    )
    assert query("SELECT DISTINCT attempts FROM phoenix_annotations") == [(2,)]
    assert query("SELECT count(*) FROM raw_traces WHERE partition_date = ?", [DAY1]) == [(4,)]


def test_day_boundaries_and_a_genuinely_empty_day(phoenix_env):
    server, expect = phoenix_env
    instance = dg.DagsterInstance.ephemeral()
    assert run(instance, DAY2).success
    refs = {
        r[0] for r in query("SELECT source_ref FROM raw_traces WHERE partition_date = ?", [DAY2])
    }
    assert refs == set(expect["day2_traces"])  # includes the span at exactly 00:00:00

    result = run(instance, EMPTY_DAY)
    assert result.success
    assert query(
        "SELECT rows_seen, rows_ingested, source FROM trace_ingests WHERE partition_date = ?",
        [EMPTY_DAY],
    ) == [(0, 0, "phoenix")]
    note = materialization_meta(result, "judge_annotations")["note"]
    assert "no judgments of Phoenix-sourced traces" in note


def test_unknown_project_fails_the_day_loudly(phoenix_env, monkeypatch):
    monkeypatch.setenv("EVAL_PHOENIX_PROJECT", "no-such-project")
    with store.connect(settings.duckdb_path()):
        pass  # the store exists (Phoenix is read before it is opened, so it might not)
    result = run(dg.DagsterInstance.ephemeral(), DAY1)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "project 'no-such-project' not found" in str(failure.event_specific_data.error)
    assert query("SELECT count(*) FROM trace_ingests") == [(0,)]


def test_undeliverable_annotations_are_recorded_then_retried(phoenix_env, monkeypatch):
    server, expect = phoenix_env
    instance = dg.DagsterInstance.ephemeral()
    assert run(instance, DAY2, ASSETS[:3]).success  # ingest and judge with Phoenix up
    # Phoenix goes away before the write-back: the run still succeeds, the check warns.
    monkeypatch.setenv("EVAL_PHOENIX_URL", f"http://127.0.0.1:{free_port()}")
    result = run(instance, DAY2, [judge_annotations])
    assert result.success
    meta = materialization_meta(result, "judge_annotations")
    assert (meta["annotations_sent"], meta["annotations_failed"]) == (0, 4)
    assert meta["phoenix_unreachable"] is True
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert query("SELECT status, count(*) FROM phoenix_annotations GROUP BY 1") == [("failed", 4)]

    # Back up: the next day's run retries them (the empty day has nothing of its own).
    monkeypatch.setenv("EVAL_PHOENIX_URL", server.base_url)
    result = run(instance, EMPTY_DAY)
    assert result.success
    meta = materialization_meta(result, "judge_annotations")
    assert (meta["retried_from_earlier_runs"], meta["annotations_sent"]) == (4, 4)
    assert query("SELECT status, attempts, count(*) FROM phoenix_annotations GROUP BY 1, 2") == [
        ("sent", 2, 4)
    ]
    anns = span_annotations(server, expect["project"], list(expect["day2_traces"]))
    assert len(anns) == 4


def test_a_range_of_phoenix_days_runs_as_one_run(phoenix_env):
    server, expect = phoenix_env
    result = dg.materialize(
        ASSETS,
        resources=RESOURCES,
        instance=dg.DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": DAY1,
            "dagster/asset_partition_range_end": EMPTY_DAY,
        },
        raise_on_error=False,
    )
    assert result.success
    assert query("SELECT partition_date::VARCHAR, rows_ingested FROM trace_ingests ORDER BY 1") == [
        (DAY1, 4),
        (DAY2, 4),
        (EMPTY_DAY, 0),
    ]
    # A ranged run records one materialization per day with that day's figures.
    sent = {
        m.partition: m.metadata["annotations_sent"].value
        for m in result.asset_materializations_for_node("judge_annotations")
        if "annotations_sent" in m.metadata
    }
    assert sent == {DAY1: 4, DAY2: 4, EMPTY_DAY: 0}
    assert query("SELECT status, count(*) FROM phoenix_annotations GROUP BY 1") == [("sent", 8)]
    span_ids_ = list(expect["day1_traces"]) + list(expect["day2_traces"])
    assert len(span_annotations(server, expect["project"], span_ids_)) == 8


def test_every_judged_criterion_becomes_its_own_annotation(phoenix_env):
    server, expect = phoenix_env
    assert run(dg.DagsterInstance.ephemeral(), DAY1).success
    span_id, trace_id = query(
        "SELECT t.source_ref, t.trace_id FROM judge_scores s JOIN raw_traces t "
        "USING (partition_date, trace_id) WHERE s.partition_date = ? ORDER BY 1 LIMIT 1",
        [DAY1],
    )[0]
    with store.connect(settings.duckdb_path()) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO judgments (judgment_key, judge_name, judge_model, "
            "rubric_version, state, score, reason, judged_at, criterion) "
            "VALUES ('g-1', 'heuristic', NULL, 'groundedness-v1', 'ok', 2, 'unsupported', "
            "now(), 'groundedness')"
        )
        conn.execute(
            "INSERT OR REPLACE INTO judge_scores (partition_date, trace_id, segment, "
            "judgment_key, state, score, judge_name, judge_model, rubric_version, cache_hit, "
            "criterion) VALUES (?, ?, 'all', 'g-1', 'ok', 2, 'heuristic', NULL, "
            "'groundedness-v1', false, 'groundedness')",
            [DAY1, trace_id],
        )
        res = annotate_day(conn, PhoenixConfig.from_env(), dt.date.fromisoformat(DAY1))
    assert (res.eligible, res.sent, res.failed) == (5, 5, 0)
    anns = span_annotations(server, expect["project"], [span_id])
    by_name = {a["name"]: a for a in anns}
    assert set(by_name) == {"eval_pipeline.quality", "eval_pipeline.groundedness"}
    grounded = by_name["eval_pipeline.groundedness"]
    assert grounded["result"]["score"] == 2.0 and grounded["result"]["label"] == "2"
    assert grounded["identifier"] == "heuristic|-|groundedness-v1"
    assert grounded["metadata"]["criterion"] == "groundedness"
