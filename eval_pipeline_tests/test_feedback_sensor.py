"""The inbox sensor (new file, same file again, a file still being written, a renamed copy)
and the Dagster chain it drives: ingestion run -> candidates; review -> golden_set."""

from __future__ import annotations

import json
import os
import shutil

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import candidates, review, store
from eval_pipeline.defs.feedback import SHA_TAG, feedback_inbox_sensor
from eval_pipeline_tests.feedback_fixtures import add_traces, line, write_settled


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
    result, cursor2 = tick(instance, cursor)  # the same file on the next tick
    assert keys(result) == []
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
    shutil.copy2(a, inbox / "copy-of-a.jsonl")  # a copy under another name
    result, cursor = tick(instance, cursor)
    assert keys(result) == [] and "same content" in result.skip_reason.skip_message
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
    # (not only the cursor) says this content was ingested already.
    write_settled(inbox / "batch-1-again.jsonl", content)
    result, _ = tick(instance, None)
    assert keys(result) == []
    with store.connect(settings.duckdb_path()) as conn:
        assert conn.execute("SELECT count(*) FROM feedback").fetchall()[0][0] == 3


def test_review_decision_triggers_golden_set(instance):
    from eval_pipeline.definitions import defs
    from eval_pipeline.defs.feedback import review_decisions_sensor

    add_traces()
    with store.connect(settings.duckdb_path()) as conn:
        from eval_pipeline.core import feedback

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
