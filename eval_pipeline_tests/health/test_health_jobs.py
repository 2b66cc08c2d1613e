"""Each watched job fails for a real reason, the health sensors see the failed run in a real
Dagster instance, and a real HTTP receiver on 127.0.0.1 gets one message when it breaks and
one when it recovers."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.defs import health as health_defs
from eval_pipeline.defs import regression as regression_defs
from eval_pipeline.defs.drift_loop import SamplingConfig
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline_tests.fake_openai import Fault, fake_openai  # noqa: F401
from eval_pipeline_tests.health.health_fixtures import (
    notification_rows,
    run_job,
    sense,
    stored,
    texts,
    today,
)
from eval_pipeline_tests.sources.phoenix_fixtures import free_port
from eval_pipeline_tests.webhook_server import WebhookReceiver

SECRET = "sk-health-test-secret-4242"
SMALL_SAMPLE = dg.RunConfig({"sampled_traces": SamplingConfig(sample_size=40, floor_per_segment=4)})


@pytest.fixture
def receiver(monkeypatch):
    with WebhookReceiver() as rx:
        monkeypatch.setenv("EVAL_ALERT_WEBHOOK_URL", rx.url)
        monkeypatch.setenv("EVAL_HEALTH_RETRY_WINDOW_MINUTES", "0")
        monkeypatch.setenv("EVAL_UI_BASE_URL", "http://127.0.0.1:3000")
        yield rx


@pytest.fixture
def recent_day(monkeypatch):
    """Yesterday's demo traffic in the test's inbox (a day inside the notify window)."""
    day = today() - dt.timedelta(days=1)
    monkeypatch.setattr(demo_traffic, "START", day)
    monkeypatch.setattr(demo_traffic, "DAYS", 1)
    monkeypatch.setattr(demo_traffic, "TRACES_PER_DAY", 200)
    demo_traffic.generate(settings.trace_inbox())
    return day


def test_unreachable_trace_source_pages_once_then_recovers(receiver, recent_day, monkeypatch):
    key = recent_day.isoformat()
    monkeypatch.setenv("EVAL_TRACE_SOURCE", "phoenix")
    monkeypatch.setenv("EVAL_PHOENIX_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("EVAL_PHOENIX_PROJECT", "shop")
    monkeypatch.setenv("EVAL_PHOENIX_RETRIES", "1")
    monkeypatch.setenv("EVAL_PHOENIX_TIMEOUT", "0.3")
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_job(instance, "daily_drift_job", partition_key=key, run_config=SMALL_SAMPLE)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        sense(instance, failed)
        sense(instance, failed)  # the daemon re-evaluating the same failure: nothing new
        [inc] = stored("open")
        assert (inc.job, inc.scope, inc.step, inc.failures) == (
            "daily_drift_job",
            key,
            "raw_traces",
            1,
        )
        assert inc.error.startswith("PhoenixUnavailable: Phoenix at http://127.0.0.1:")
        assert "did not answer" in inc.error
        assert inc.run_url == f"http://127.0.0.1:3000/runs/{failed.run_id}"
        [opened] = texts(receiver)
        assert (
            "Incident opened" in opened
            and f"daily_drift_job for {key} failed at step raw_traces" in opened
        )
        assert "PhoenixUnavailable" in opened and "(pipeline)" in opened
        assert f"<http://127.0.0.1:3000/runs/{failed.run_id}|Open in the UI>" in opened

        # A second failure of the same day extends the incident and sends nothing.
        again = run_job(instance, "daily_drift_job", partition_key=key, run_config=SMALL_SAMPLE)
        sense(instance, again)
        [inc] = stored("open")
        assert inc.failures == 2 and inc.run_id == again.run_id
        assert len(receiver.posts) == 1

        # The source is back (the inbox): the next successful run of the day resolves it.
        monkeypatch.setenv("EVAL_TRACE_SOURCE", "jsonl")
        ok = run_job(instance, "daily_drift_job", partition_key=key, run_config=SMALL_SAMPLE)
        assert ok.status == dg.DagsterRunStatus.SUCCESS
        sense(instance, ok)
        assert stored("open") == []
        [done] = stored("resolved")
        assert done.resolution == "recovered" and done.resolved_by_run == ok.run_id
        assert len(receiver.posts) == 2 and "Incident resolved" in texts(receiver)[1]
        assert [(r[1], r[3], r[4]) for r in notification_rows()] == [
            ("opened", "pipeline", "sent"),
            ("resolved", "pipeline", "sent"),
        ]


def test_judge_answering_500_is_reported_as_the_judge_failure_check(
    receiver,
    recent_day,
    monkeypatch,
    fake_openai,  # noqa: F811
):
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "fake-judge")
    monkeypatch.setenv("EVAL_JUDGE_API_KEY", SECRET)
    monkeypatch.setenv("EVAL_JUDGE_MAX_RETRIES", "0")
    fake_openai.add_random_fault(Fault.status(500), fraction=0.3, seed=1)
    key = recent_day.isoformat()
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_job(instance, "daily_drift_job", partition_key=key, run_config=SMALL_SAMPLE)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        [check] = [
            r.dagster_event.event_specific_data
            for r in instance.all_logs(
                failed.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
            if r.dagster_event.event_specific_data.check_name == "judge_failure_rate"
        ]
        rate = check.metadata["worst_failure_rate"].value
        assert 0.1 <= rate < 1  # seeded: the message shows it as a whole percent
        sense(instance, failed)
        [inc] = stored("open")
        assert inc.step == "judge_scores"
        assert inc.error == (
            f"the judge failed on {rate:.0%} of the day's sample (limit 5%): "
            f"no drift verdict for {key}"
        )
        assert SECRET not in inc.error
        [opened] = texts(receiver)
        assert f"no drift verdict for {key}" in opened

        fake_openai.reset()  # the endpoint is healthy again
        ok = run_job(instance, "daily_drift_job", partition_key=key, run_config=SMALL_SAMPLE)
        assert ok.status == dg.DagsterRunStatus.SUCCESS
        sense(instance, ok)
        assert [i.status for i in stored()] == ["resolved"]
        assert "Incident resolved" in texts(receiver)[-1] and len(receiver.posts) == 2


def test_regression_gate_tripping_pages_and_the_next_passing_gate_resolves(receiver):
    golden = settings.golden_path()
    golden.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl", golden)

    def gate(**config):
        run_config = dg.RunConfig({"golden_regression": regression_defs.RegressionConfig(**config)})
        return run_job(instance, "golden_regression_job", run_config=run_config)

    with dg.DagsterInstance.ephemeral() as instance:
        bad = gate(deploy_id="bad", target_args={"prompt_path": "regressed"})
        assert bad.status == dg.DagsterRunStatus.FAILURE
        sense(instance, bad)
        [inc] = stored("open")
        assert (inc.job, inc.scope, inc.step) == ("golden_regression_job", "", "golden_regression")
        assert re.fullmatch(
            r"the regression gate blocked the deploy: pass rate 75% below \d+% \(.+\)", inc.error
        ), inc.error
        assert inc.day == today()
        assert "regression gate blocked" in texts(receiver)[0]

        good = gate(deploy_id="good")
        assert good.status == dg.DagsterRunStatus.SUCCESS
        sense(instance, good)
        assert [i.status for i in stored()] == ["resolved"]
        assert len(receiver.posts) == 2


def test_feedback_ingestion_failure_is_scoped_to_its_file(receiver):
    gone = settings.feedback_inbox() / "gone.jsonl"
    config = {"ops": {"feedback": {"config": {"path": str(gone), "sha256": "abc123"}}}}
    tags = {health_defs.SCOPE_TAGS["feedback_ingestion_job"]: "abc123"}
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_job(instance, "feedback_ingestion_job", run_config=config, tags=tags)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        sense(instance, failed)
        [inc] = stored("open")
        assert (inc.job, inc.scope, inc.step) == ("feedback_ingestion_job", "abc123", "feedback")
        assert inc.error.startswith(f"feedback file {gone} is gone")
        # A successful ingestion of another file does not resolve this one.
        other = run_job(instance, "feedback_ingestion_job", tags={tags.popitem()[0]: "other"})
        assert other.status == dg.DagsterRunStatus.SUCCESS
        sense(instance, other)
        assert len(stored("open")) == 1 and len(receiver.posts) == 1


def test_a_retry_that_succeeds_within_the_window_pages_nobody(receiver, monkeypatch):
    monkeypatch.setenv("EVAL_HEALTH_RETRY_WINDOW_MINUTES", "20")
    monkeypatch.setenv("EVAL_REGRESSION_TARGET", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("EVAL_REGRESSION_MODEL", "m")
    golden = settings.golden_path()
    golden.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl", golden)
    outage = dg.RunConfig(
        {"golden_regression": regression_defs.RegressionConfig(retries=0, timeout=1.0)}
    )
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_job(instance, "golden_regression_job", run_config=outage)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        sense(instance, failed)
        [inc] = stored("open")
        assert not inc.paged and inc.error.startswith("outage: 32 of 32 cases got no answer")
        assert receiver.posts == []
        monkeypatch.delenv("EVAL_REGRESSION_TARGET")
        monkeypatch.delenv("EVAL_REGRESSION_MODEL")
        ok = run_job(instance, "golden_regression_job")
        sense(instance, ok)
        [inc] = stored("resolved")
        assert inc.resolution == "recovered before paging"
        assert receiver.posts == [] and notification_rows() == []


def test_a_failure_outlasting_the_retry_window_is_paged_by_the_freshness_tick(
    receiver, monkeypatch
):
    monkeypatch.setenv("EVAL_HEALTH_RETRY_WINDOW_MINUTES", "20")
    monkeypatch.setenv("EVAL_HEALTH_LOOKBACK_DAYS", "1")
    golden = settings.golden_path()
    golden.parent.mkdir(parents=True, exist_ok=True)
    golden.write_text('{"id": "x", "input": "q", "expected": 1, "grader": "nope"}\n')
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_job(instance, "golden_regression_job")
        sense(instance, failed)
        assert receiver.posts == []
        [inc] = stored("open")
        later = inc.opened_at + dt.timedelta(minutes=21)
        monkeypatch.setattr(health_defs, "utcnow", lambda: later)
        health_defs.pipeline_freshness_sensor(dg.build_sensor_context(instance=instance))
        opened = [t for t in texts(receiver) if "golden_regression_job failed" in t]
        assert len(opened) == 1 and "the golden set is invalid" in opened[0]
        # Paged once: the next tick sends nothing more about it.
        n = len(receiver.posts)
        health_defs.pipeline_freshness_sensor(dg.build_sensor_context(instance=instance))
        assert len(receiver.posts) == n


def test_the_sensor_holds_no_store_connection_while_the_receiver_answers(receiver):
    golden = settings.golden_path()
    golden.parent.mkdir(parents=True, exist_ok=True)
    golden.write_text('{"id": "x", "input": "q", "expected": 1, "grader": "nope"}\n')
    # DuckDB's write lock is per process: only another process can show that it is free.
    path = str(settings.duckdb_path())
    probe = [sys.executable, "-c", f"import duckdb; duckdb.connect({path!r}).close()"]
    probes = []
    receiver.on_post = lambda: probes.append(
        subprocess.run(probe, capture_output=True, timeout=60).returncode
    )
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_job(instance, "golden_regression_job")
        sense(instance, failed)
    assert probes == [0] and len(receiver.posts) == 1


def test_signed_webhook_and_pagerduty_carry_the_pipeline_kind(monkeypatch):
    monkeypatch.setenv("EVAL_HEALTH_RETRY_WINDOW_MINUTES", "0")
    golden = settings.golden_path()
    golden.parent.mkdir(parents=True, exist_ok=True)
    golden.write_text('{"id": "x", "input": "q", "expected": 1, "grader": "nope"}\n')
    with (
        WebhookReceiver(kind="signed", secret="whsec-health-test-1234") as hook,
        WebhookReceiver(kind="pagerduty") as pd,
        dg.DagsterInstance.ephemeral() as instance,
    ):
        monkeypatch.setenv("EVAL_NOTIFY_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("EVAL_NOTIFY_WEBHOOK_SECRET", "whsec-health-test-1234")
        monkeypatch.setenv("EVAL_PAGERDUTY_ROUTING_KEY", "pd-routing-key-health")
        monkeypatch.setenv("EVAL_PAGERDUTY_URL", pd.base + "/v2/enqueue")
        failed = run_job(instance, "golden_regression_job")
        sense(instance, failed)
        shutil.copy(settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl", golden)
        ok = run_job(instance, "golden_regression_job")
        sense(instance, ok)
    assert hook.rejected == [] and pd.rejected == []
    opened, resolved = (p["json"] for p in hook.posts)
    assert (opened["type"], opened["kind"], resolved["type"]) == (
        "incident.opened", "pipeline", "incident.resolved",
    )  # fmt: skip
    assert opened["details"]["job"] == "golden_regression_job"
    assert opened["details"]["cause"].startswith("the golden set is invalid")
    trigger, resolve = (p["json"] for p in pd.posts)
    assert trigger["event_action"] == "trigger" and trigger["payload"]["component"] == "pipeline"
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == trigger["dedup_key"]
