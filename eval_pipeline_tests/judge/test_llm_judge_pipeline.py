"""The drift loop through Dagster with EVAL_JUDGE=openai pointed at the fake OpenAI server:
faults end in the right state, the run completes, accounting lands in the UI metadata and
DuckDB, the cache makes re-runs free, and a new model or rubric re-judges."""

from __future__ import annotations

import datetime as dt
import json
import random

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.judge.rubric import RUBRICS_DIR
from eval_pipeline.defs.resources import JudgeResource
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.drift.drift_fixtures import DRIFT_ASSETS, DRIFT_RESOURCES
from eval_pipeline_tests.fake_openai import Fault, fake_openai  # noqa: F401

SECRET = "sk-pipeline-test-secret-42"
ASSETS = DRIFT_ASSETS
RESOURCES = DRIFT_RESOURCES


@pytest.fixture
def day(monkeypatch):
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 150)
    monkeypatch.setattr(demo_traffic, "DAYS", 1)
    demo_traffic.generate(settings.trace_inbox())
    return demo_traffic.START.isoformat()


@pytest.fixture
def openai_env(monkeypatch, fake_openai):  # noqa: F811
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "fake-judge")
    monkeypatch.setenv("EVAL_JUDGE_API_KEY", SECRET)
    monkeypatch.setenv("EVAL_JUDGE_CONCURRENCY", "8")
    monkeypatch.setenv("EVAL_JUDGE_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("EVAL_JUDGE_MAX_RETRIES", "6")
    monkeypatch.setenv("EVAL_JUDGE_BACKOFF_BASE", "0.02")
    monkeypatch.setenv("EVAL_JUDGE_PRICE_PROMPT_PER_1K", "0.001")
    monkeypatch.setenv("EVAL_JUDGE_PRICE_COMPLETION_PER_1K", "0.002")
    return fake_openai


def run(instance, day, assets=ASSETS, resources=RESOURCES, run_config=None):
    result = dg.materialize(
        assets, resources=resources, instance=instance, partition_key=day, run_config=run_config
    )
    assert result.success
    return result


# One failed judgment can stand for several sampled traces (identical question and answer),
# so a test that injects a failure on purpose must not trip the 5% gate by chance.
LENIENT_GATE = {"ops": {"judge_scores": {"config": {"max_failure_rate": 1.0}}}}


def judged_meta(result) -> dict:
    meta = result.asset_materializations_for_node("judge_scores")[0].metadata
    return {k: v.value for k, v in meta.items()}


def query(sql: str, params=()) -> list[tuple]:
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        return conn.execute(sql, list(params)).fetchall()


def sampled_answers(day: str) -> list[str]:
    """The day's sampled answers, rarest first (so a fault on one stays under 5%)."""
    return [
        r[0]
        for r in query(
            "SELECT t.assistant_response FROM sampled_traces s "
            "JOIN raw_traces t USING (partition_date, trace_id) WHERE s.partition_date = ? "
            "GROUP BY 1 ORDER BY count(*), 1",
            [dt.date.fromisoformat(day)],
        )
    ]


def test_faults_end_in_the_right_state_and_the_run_completes(day, openai_env):
    server = openai_env
    instance = dg.DagsterInstance.ephemeral()
    run(instance, day, ASSETS[:2])
    answers = sampled_answers(day)
    garbled, hanging = answers[0], answers[1]

    rng = random.Random(1)

    def responder(body):
        user = body["messages"][1]["content"]
        if f"\n{garbled}\n<<<END ASSISTANT ANSWER " in user:
            return Fault.content("I would give it a solid four")
        if f"\n{hanging}\n<<<END ASSISTANT ANSWER " in user:
            return Fault.hang(30)
        # Every other judgment may meet a 429 (20% of its calls) but ends ok.
        if rng.random() < 0.2:
            return Fault.status(429, retry_after=0.01)
        return '{"score": 4, "reason": "fine"}'

    server.responder = responder
    result = run(instance, day, ASSETS[2:])
    meta = judged_meta(result)
    n_garbled, n_hanging = (
        query(
            "SELECT count(*) FROM judge_scores j JOIN raw_traces t USING (partition_date, trace_id)"
            " WHERE t.assistant_response = ?",
            [text],
        )[0][0]
        for text in (garbled, hanging)
    )
    assert meta["judge"] == "openai" and meta["judge_model"] == "fake-judge"
    assert meta["rubric_version"].startswith("quality-v1#")
    assert meta["unparseable"] == n_garbled and meta["error"] == n_hanging
    assert meta["ok"] == meta["dagster/row_count"] - n_garbled - n_hanging
    assert meta["failures_by_kind"] == {
        "error/timeout": n_hanging,
        "unparseable/invalid_output": n_garbled,
    }
    assert meta["http_attempts"] > meta["judge_calls"]  # 429 retries and repairs were counted
    assert meta["cost_estimate"] > 0
    assert meta["judge_response_format"] == "json_schema"
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["judge_failure_rate"].passed
    assert result.asset_materializations_for_node("drift_incidents")

    states = dict(query("SELECT state, reason FROM judgments WHERE state <> 'ok'"))
    assert states["unparseable"].startswith("invalid_output: no JSON object in the answer")
    assert states["error"].startswith("timeout: ReadTimeout")
    raw = query("SELECT raw_output FROM judgments WHERE state = 'unparseable'")[0][0]
    assert raw.count("I would give it a solid four") == 2  # the answer and the repair

    [acct] = query(
        "SELECT n, cache_hits, judge_calls, ok, unparseable, error, failures_by_kind,"
        " prompt_tokens, cost_estimate, judge_model FROM judge_accounting"
    )
    assert acct[0] == meta["dagster/row_count"] and acct[1] == 0
    assert acct[2] == meta["judge_calls"] and acct[3:6] == (meta["ok"], n_garbled, n_hanging)
    assert json.loads(acct[6]) == meta["failures_by_kind"]
    assert acct[7] == meta["prompt_tokens"] > 0
    assert acct[8] == pytest.approx(meta["cost_estimate"]) and acct[9] == "fake-judge"

    # The next run retries only the error (it hangs again: 1 + 6 retries), never the
    # final unparseable judgment, and makes no other calls.
    before = server.calls
    again = judged_meta(run(instance, day, ASSETS[2:3]))
    assert again["judge_calls"] == 1 and server.calls - before == 7
    assert again["cache_hits"] == again["dagster/row_count"] - n_hanging

    # The endpoint recovers: the error becomes ok; after that a re-run makes zero calls.
    server.responder = lambda body: '{"score": 3, "reason": "recovered"}'
    server.reset()
    healed = judged_meta(run(instance, day, ASSETS[2:3]))
    assert healed["error"] == 0 and healed["judge_calls"] == 1 and server.calls == 1
    assert judged_meta(run(instance, day, ASSETS[2:3]))["judge_calls"] == 0
    assert server.calls == 1


def test_the_api_key_is_never_stored_or_shown(day, openai_env):
    instance = dg.DagsterInstance.ephemeral()
    openai_env.script(Fault.status(401, body={"error": {"message": f"bad key {SECRET}"}}))
    run(instance, day, run_config=LENIENT_GATE)
    assert openai_env.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        for table in tables:
            text = conn.execute(f"SELECT * FROM {table}").fetchdf().to_csv()
            assert SECRET not in text, table
    assert query("SELECT count(*) FROM judgments WHERE reason LIKE '%[redacted]%'")[0][0] == 1
    records = []
    for asset in ("raw_traces", "sampled_traces", "judge_scores", "drift_report"):
        key = dg.AssetKey(asset)
        records += instance.fetch_materializations(key, limit=100).records
        records += instance.fetch_observations(key, limit=100).records
    assert records
    for record in records:
        assert SECRET not in repr(record.event_log_entry)
    config_shown = repr(JudgeResource(kind="openai").model_dump())
    assert SECRET not in config_shown


def test_rerun_is_free_and_a_new_model_or_rubric_rejudges(day, openai_env, tmp_path):
    server = openai_env
    instance = dg.DagsterInstance.ephemeral()
    first = judged_meta(run(instance, day))
    unique = first["judge_calls"]
    assert unique > 0 and server.calls == unique

    server.reset()
    assert judged_meta(run(instance, day))["judge_calls"] == 0
    assert server.calls == 0

    # A different model through the resource's config (not the environment): all re-judged.
    other_model = {**RESOURCES, "judge": JudgeResource(kind="openai", model="judge-v2")}
    meta = judged_meta(run(instance, day, resources=other_model))
    assert (meta["judge_calls"], meta["cache_hits"], server.calls) == (unique, 0, unique)
    assert {r.json["model"] for r in server.requests} == {"judge-v2"}

    # An edited rubric (same declared version): all re-judged again.
    edited = tmp_path / "quality-edited.txt"
    text = (RUBRICS_DIR / "quality-v1.txt").read_text(encoding="utf-8")
    edited.write_text(text.replace("strict, fair", "fair"), encoding="utf-8")
    server.reset()
    new_rubric = {**RESOURCES, "judge": JudgeResource(rubric=str(edited))}
    meta = judged_meta(run(instance, day, resources=new_rubric))
    assert (meta["judge_calls"], server.calls) == (unique, unique)
    assert meta["rubric_version"] != first["rubric_version"]
    assert "You are a fair evaluator" in server.requests[0].json["messages"][0]["content"]
