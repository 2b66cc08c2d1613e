"""The inbox sensor (new file, same file again, a file still being written, a renamed copy)
and the Dagster chain it drives: ingestion run -> candidates; review -> golden_set."""

from __future__ import annotations

import json
import os
import shutil

import dagster as dg
import duckdb
import pytest
from dagster._core.test_utils import create_run_for_test

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.feedback import candidates, review
from eval_pipeline.core.feedback import ingest as fb
from eval_pipeline.defs.feedback import (
    ATTEMPT_TAG,
    MAX_ATTEMPTS,
    SHA_TAG,
    feedback_inbox_sensor,
)
from eval_pipeline_tests.feedback.feedback_fixtures import add_traces, line, write_settled


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def tick(instance, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = feedback_inbox_sensor(ctx)
    return result, result.cursor


def keys(result) -> list[str]:
    return [r.run_key for r in result.run_requests or []]


def skip_message(result) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def launch(instance, result, status=dg.DagsterRunStatus.NOT_STARTED) -> list:
    """What the daemon does with the tick's run requests: one run each, tagged like the
    request (it is not executed; tests set its status)."""
    return [
        create_run_for_test(
            instance,
            job_name="feedback_ingestion_job",
            run_config=req.run_config,
            status=status,
            tags={**req.tags, "dagster/run_key": req.run_key},
        )
        for req in result.run_requests or []
    ]


def execute(instance, req) -> dg.ExecuteInProcessResult:
    from eval_pipeline.definitions import defs

    job = defs().resolve_job_def("feedback_ingestion_job")
    return job.execute_in_process(
        run_config=req.run_config,
        instance=instance,
        tags={**req.tags, "dagster/run_key": req.run_key},
        raise_on_error=False,
    )


def test_empty_or_missing_inbox_skips(instance):
    result, cursor = tick(instance)
    assert keys(result) == [] and "no new feedback files" in result.skip_reason.skip_message
    settings.feedback_inbox().mkdir(parents=True)
    result, _ = tick(instance, cursor)
    assert keys(result) == []


def test_new_file_then_same_file_again(instance):
    inbox = settings.feedback_inbox()
    f = write_settled(inbox / "a.jsonl", line("t1") + "\n")
    result, cursor = tick(instance)
    assert len(keys(result)) == 1 and keys(result)[0].startswith("feedback-")
    req = result.run_requests[0]
    assert req.run_config["ops"]["feedback"]["config"]["path"] == str(f)
    assert req.tags[SHA_TAG] in keys(result)[0]
    assert len(cursor) < 300  # one small entry per file in the inbox
    launch(instance, result)  # the daemon queues the run
    result, cursor2 = tick(instance, cursor)  # the same file on the next tick
    assert keys(result) == [] and "run in progress: a.jsonl" in skip_message(result)
    assert cursor2 == cursor
    # Files the sensor must never pick up: hidden/temporary names, the writers' folders.
    write_settled(inbox / ".b.jsonl", line("t2") + "\n")
    write_settled(inbox / "c.jsonl.tmp", line("t2") + "\n")
    write_settled(inbox / ".incoming" / "d.jsonl", line("t2") + "\n")
    write_settled(inbox / "processed" / "e.jsonl", line("t2") + "\n")
    result, _ = tick(instance, cursor)
    assert keys(result) == []


def test_file_still_being_written(instance):
    inbox = settings.feedback_inbox()
    inbox.mkdir(parents=True)
    path = inbox / "slow.jsonl"
    path.write_text(line("t1") + "\n")  # modified just now: not settled yet
    result, cursor = tick(instance)
    assert keys(result) == [] and "still being written" in result.skip_reason.skip_message
    with path.open("a") as fh:  # it grows between ticks: still not complete
        fh.write(line("t2") + "\n")
    result, cursor = tick(instance, cursor)
    assert keys(result) == []
    # Unchanged since the previous tick: complete now (mtime is still recent).
    result, cursor = tick(instance, cursor)
    assert len(keys(result)) == 1
    assert json.loads(cursor)["files"]["slow.jsonl"][2] is not None


def test_renamed_copy_does_not_run_again(instance):
    inbox = settings.feedback_inbox()
    content = line("t1") + "\n" + line("t2", "up") + "\n"
    a = write_settled(inbox / "a.jsonl", content)
    result, cursor = tick(instance)
    assert len(keys(result)) == 1
    launch(instance, result, dg.DagsterRunStatus.STARTED)
    shutil.copy2(a, inbox / "copy-of-a.jsonl")  # a copy under another name
    result, cursor = tick(instance, cursor)
    assert keys(result) == [] and "same content" in skip_message(result)
    os.rename(a, inbox / "renamed.jsonl")  # the original renamed
    result, cursor = tick(instance, cursor)
    assert keys(result) == []
    # Different content under an old name is a new file.
    write_settled(inbox / "a.jsonl", content + line("t3") + "\n")
    result, _ = tick(instance, cursor)
    assert len(keys(result)) == 1


def test_sensor_run_ingests_archives_and_a_redrop_never_runs_again(instance):
    from eval_pipeline.definitions import defs

    add_traces()
    inbox = settings.feedback_inbox()
    content = (
        "\n".join(
            [
                line("t-billing-1", comment="no help"),
                line("t-ship-1", "up"),
                "garbage",
                line("t-nowhere", comment="?"),
            ]
        )
        + "\n"
    )
    write_settled(inbox / "batch-1.jsonl", content)
    result, cursor = tick(instance)
    (req,) = result.run_requests
    job = defs().resolve_job_def("feedback_ingestion_job")
    run = job.execute_in_process(run_config=req.run_config, instance=instance, tags=req.tags)
    assert run.success
    mats = {
        e.asset_key.path[-1]: e.step_materialization_data.materialization.metadata
        for e in run.get_asset_materialization_events()
    }
    assert mats["feedback"]["records_ingested"].value == 3
    assert mats["feedback"]["lines_rejected"].value == 1
    assert mats["eval_candidates"]["pending"].value == 2
    assert mats["eval_candidates"]["pending_without_trace"].value == 1
    assert not (inbox / "batch-1.jsonl").exists()
    assert (inbox / "processed" / "batch-1.jsonl").read_text() == content
    # The same bytes dropped again under a new name, with a fresh cursor: the run history
    # (not only the cursor) says this content was ingested already. The copy is moved out
    # of the inbox, so it does not sit there (and in the cursor) for ever.
    write_settled(inbox / "batch-1-again.jsonl", content)
    result, cursor = tick(instance, None)
    assert keys(result) == []
    assert "moved to duplicates/: batch-1-again.jsonl" in skip_message(result)
    assert not (inbox / "batch-1-again.jsonl").exists()
    assert (inbox / "duplicates" / "batch-1-again.jsonl").read_text() == content
    assert json.loads(cursor) == {"files": {}}
    with store.connect(settings.duckdb_path()) as conn:
        assert conn.execute("SELECT count(*) FROM feedback").fetchall()[0][0] == 3


def test_failed_run_is_retried_under_a_new_key_until_attempts_run_out(instance):
    inbox = settings.feedback_inbox()
    write_settled(inbox / "a.jsonl", line("t1") + "\n")
    result, cursor = tick(instance)
    (req,) = result.run_requests
    sha = req.tags[SHA_TAG]
    assert req.run_key == f"feedback-{sha}-1" and req.tags[ATTEMPT_TAG] == "1"
    (run,) = launch(instance, result, dg.DagsterRunStatus.STARTED)
    # Still running: not requested again.
    result, cursor = tick(instance, cursor)
    assert keys(result) == [] and "run in progress: a.jsonl" in skip_message(result)
    instance.report_run_failed(run)  # e.g. a DuckDB lock timeout
    for attempt in range(2, MAX_ATTEMPTS + 1):
        result, cursor = tick(instance, cursor)
        (req,) = result.run_requests  # a new key: the daemon would never rerun a used one
        assert req.run_key == f"feedback-{sha}-{attempt}"
        assert req.tags[ATTEMPT_TAG] == str(attempt)
        (run,) = launch(instance, result, dg.DagsterRunStatus.STARTED)
        if attempt < MAX_ATTEMPTS:
            instance.report_run_failed(run)
        else:
            instance.report_run_canceled(run)  # a cancelled run counts as an attempt too
    result, cursor = tick(instance, cursor)
    assert keys(result) == []
    assert f"gave up after {MAX_ATTEMPTS} failed runs: a.jsonl" in skip_message(result)
    assert "already ingested" not in skip_message(result)
    assert (inbox / "a.jsonl").exists()  # kept for a person to look at


def test_transient_failure_is_retried_for_real_and_the_records_land(instance, monkeypatch):
    inbox = settings.feedback_inbox()
    content = line("t1", comment="wrong") + "\n" + line("t2") + "\n"
    write_settled(inbox / "batch.jsonl", content)
    result, cursor = tick(instance)
    (req,) = result.run_requests
    real = fb.ingest_bytes

    def locked(*args, **kwargs):
        raise duckdb.IOException("Could not set lock on file (simulated transient failure)")

    monkeypatch.setattr(fb, "ingest_bytes", locked)
    assert not execute(instance, req).success
    monkeypatch.setattr(fb, "ingest_bytes", real)
    assert (inbox / "batch.jsonl").exists()
    result, cursor = tick(instance, cursor)
    (req2,) = result.run_requests
    assert req2.run_key != req.run_key and req2.tags[SHA_TAG] == req.tags[SHA_TAG]
    assert execute(instance, req2).success
    with store.connect(settings.duckdb_path()) as conn:
        assert conn.execute("SELECT count(*) FROM feedback").fetchall()[0][0] == 2
    assert not (inbox / "batch.jsonl").exists()
    result, cursor = tick(instance, cursor)
    assert keys(result) == [] and json.loads(cursor) == {"files": {}}


def test_review_decision_triggers_golden_set(instance):
    from eval_pipeline.definitions import defs
    from eval_pipeline.defs.feedback import review_decisions_sensor

    add_traces()
    with store.connect(settings.duckdb_path()) as conn:
        from eval_pipeline.core.feedback import ingest as feedback

        feedback.ingest_bytes(conn, (line("t-billing-1") + "\n").encode(), "f.jsonl")
        candidates.build_candidates(conn)
        review.record(
            conn,
            review.Decision(
                candidates.candidate_id("t-billing-1"),
                "approve",
                "ann",
                expected="Explain the duplicate authorisation",
                grader={"type": "judge"},
            ),
        )

    def golden_tick():
        return review_decisions_sensor(dg.build_sensor_context(instance=instance))

    assert "no review decisions" in golden_tick().skip_reason.skip_message
    # What `eval-pipeline review` does after recording decisions.
    instance.report_runless_asset_event(dg.AssetMaterialization("review_decisions"))
    (req,) = golden_tick().run_requests
    d = defs()
    result = dg.materialize([d.resolve_assets_def("golden_set")], instance=instance)
    assert result.success
    assert "Explain the duplicate authorisation" in settings.golden_path().read_text()
    assert "up to date" in golden_tick().skip_reason.skip_message
    # A later decision asks again, under a new run key.
    instance.report_runless_asset_event(dg.AssetMaterialization("review_decisions"))
    (req2,) = golden_tick().run_requests
    assert req2.run_key != req.run_key


def test_sensor_cursor_stays_small_over_many_files(instance):
    inbox = settings.feedback_inbox()
    cursor = None
    for i in range(30):
        write_settled(inbox / f"f{i:02}.jsonl", line(f"t{i}") + "\n")
        result, cursor = tick(instance, cursor)
        assert len(keys(result)) == 1
        # What the ingestion run does after ingesting: move the file out of the inbox.
        (inbox / "processed").mkdir(exist_ok=True)
        os.replace(inbox / f"f{i:02}.jsonl", inbox / "processed" / f"f{i:02}.jsonl")
    result, cursor = tick(instance, cursor)
    assert json.loads(cursor) == {"files": {}}
