"""Judge scores written back to Phoenix (in-process Phoenix): failures recorded per span,
retried on later runs, never raised."""

from __future__ import annotations

import datetime as dt
import json

import httpx

from eval_pipeline.core import store
from eval_pipeline.core.sources.phoenix.annotations import (
    annotate_day,
    annotation_name,
    phoenix_judgments,
)
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline_tests.sources.phoenix_samples import Script

DAY = dt.date(2026, 3, 1)


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
        res = annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
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
        res2 = annotate_day(conn, cfg, next_day, transport=httpx.MockTransport(Script(handler2)))
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
        res = annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert res.unreachable and (res.sent, res.failed) == (0, 3)
        assert res.errors == {"Phoenix unreachable": 3}
        errors = conn.execute("SELECT DISTINCT error FROM phoenix_annotations").fetchall()
        assert len(errors) == 1 and "did not answer" in errors[0][0]


def test_no_phoenix_traces_means_nothing_to_post(tmp_path):
    def handler(request, n):
        raise AssertionError("must not call Phoenix")

    with store.connect(tmp_path / "db.duckdb") as conn:
        seed_judged_day(conn, DAY, ["x.jsonl:1"], source="jsonl")
        assert phoenix_judgments(conn, DAY) == 0
        res = annotate_day(
            conn, PhoenixConfig(), DAY, transport=httpx.MockTransport(Script(handler))
        )
        assert (res.eligible, res.sent, res.failed) == (0, 0, 0)


def test_failed_span_dropped_from_a_resampled_day_is_still_retried(tmp_path):
    spans = ["a" * 16, "b" * 16, "c" * 16]  # b has score 2: the fake server always rejects it
    cfg = PhoenixConfig(base_url="http://phx.test")
    with store.connect(tmp_path / "db.duckdb") as conn:
        seed_judged_day(conn, DAY, spans)
        handler, _ = annotation_server(missing={spans[2]})
        res = annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert (res.sent, res.failed, res.retried_earlier) == (1, 2, 0)
        conn.execute("DELETE FROM judge_scores WHERE trace_id = 't2'")  # c re-sampled away
        handler, posted = annotation_server(missing=set())
        res = annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert (res.eligible, res.retried_earlier, res.sent, res.failed) == (2, 1, 2, 1)
        assert sorted(d["span_id"] for d in posted[0]) == spans
        status = dict(conn.execute("SELECT span_id, status FROM phoenix_annotations").fetchall())
        assert status == {spans[0]: "sent", spans[1]: "failed", spans[2]: "sent"}


def add_criterion(conn, day, criterion: str, scores: dict[str, int]) -> None:
    """A second criterion's judgments for the seeded traces (trace id -> score)."""
    for trace_id, score in scores.items():
        key = f"{criterion}-{day}-{trace_id}"
        conn.execute(
            "INSERT INTO judgments (judgment_key, judge_name, judge_model, rubric_version, "
            "state, score, reason, judged_at, criterion) "
            "VALUES (?, 'heuristic', NULL, ?, 'ok', ?, 'why', now(), ?)",
            [key, f"{criterion}-v1", score, criterion],
        )
        conn.execute(
            "INSERT INTO judge_scores (partition_date, trace_id, segment, judgment_key, state, "
            "score, judge_name, judge_model, rubric_version, cache_hit, criterion) "
            "VALUES (?, ?, 'all', ?, 'ok', ?, 'heuristic', NULL, ?, false, ?)",
            [day, trace_id, key, score, f"{criterion}-v1", criterion],
        )


def test_one_annotation_per_criterion_with_delivery_and_retries_per_name(tmp_path):
    spans = ["a" * 16, "c" * 16]  # quality scores 1 and 2 (2: the fake server rejects it)
    cfg = PhoenixConfig(base_url="http://phx.test", annotation_name="myapp.quality")
    with store.connect(tmp_path / "db.duckdb") as conn:
        seed_judged_day(conn, DAY, spans)
        add_criterion(conn, DAY, "groundedness", {"t0": 5, "t1": 4})
        handler, posted = annotation_server(missing=set())
        res = annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert res.names == ["myapp.groundedness", "myapp.quality"]
        assert res.name == "myapp.quality"
        # only the quality annotation of span c (score 2) is rejected, not its groundedness
        assert (res.eligible, res.sent, res.failed) == (4, 3, 1)
        rows = conn.execute(
            "SELECT span_id, name, identifier, status, label FROM phoenix_annotations "
            "ORDER BY span_id, name"
        ).fetchall()
        assert rows == [
            (spans[0], "myapp.groundedness", "heuristic|-|groundedness-v1", "sent", "5"),
            (spans[0], "myapp.quality", "heuristic|-|heuristic-v2", "sent", "bad"),
            (spans[1], "myapp.groundedness", "heuristic|-|groundedness-v1", "sent", "4"),
            (spans[1], "myapp.quality", "heuristic|-|heuristic-v2", "failed", "bad"),
        ]
        grounded = [d for batch in posted for d in batch if d["name"] == "myapp.groundedness"]
        assert {d["metadata"]["criterion"] for d in grounded} == {"groundedness"}
        assert res.still_failing_total == 1

        # The next run retries only the failed (span, name): the quality annotation of c.
        conn.execute("DELETE FROM judge_scores")
        handler, posted = annotation_server(missing=set())
        conn.execute("UPDATE judgments SET score = 3 WHERE judgment_key = ?", [f"key-{DAY}-1"])
        res = annotate_day(conn, cfg, DAY, transport=httpx.MockTransport(Script(handler)))
        assert (res.eligible, res.retried_earlier, res.sent, res.failed) == (0, 1, 1, 0)
        assert [(d["span_id"], d["name"]) for d in posted[0]] == [(spans[1], "myapp.quality")]
        attempts = conn.execute(
            "SELECT name, attempts FROM phoenix_annotations WHERE span_id = ? ORDER BY name",
            [spans[1]],
        ).fetchall()
        assert attempts == [("myapp.groundedness", 1), ("myapp.quality", 2)]
        assert res.still_failing_total == 0


def test_annotation_names_derive_from_the_configured_prefix():
    assert annotation_name("eval_pipeline.quality", "quality") == "eval_pipeline.quality"
    assert annotation_name("eval_pipeline.quality", "safety") == "eval_pipeline.safety"
    assert annotation_name("a.b.score", "safety") == "a.b.safety"
    assert annotation_name("myscore", "safety") == "myscore.safety"
