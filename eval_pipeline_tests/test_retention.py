"""Raw-trace retention: old days lose their raw rows (kept in a Parquet archive if asked),
everything derived is kept, and a run that needs a dropped day says so."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import pytest

from eval_pipeline.core import retention, store
from eval_pipeline.core.drift.history import load_judged_traces
from eval_pipeline.core.drift.sampling import SamplingConfig, sample_day
from eval_pipeline.core.judge.base import HeuristicJudge
from eval_pipeline.core.judge.cache import plan_day
from eval_pipeline.core.retention import RawDayDropped, RetentionConfig, apply_retention
from eval_pipeline.core.signals.compute import record_day
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import ingest_day
from eval_pipeline.defs import retention as defs_retention
from eval_pipeline.defs.resources import EvalStore

DAYS = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(5)]


def write_day(inbox, day: dt.date, n: int = 30) -> None:
    lines = [
        json.dumps(
            {
                "trace_id": f"{day}-{i}",
                "timestamp": f"{day}T{i % 24:02d}:00:00Z",
                "user_query": f"q{i}",
                "assistant_response": f"a{i}",
                "segment": ["billing", "shipping"][i % 2],
            }
        )
        for i in range(n)
    ]
    lines.append("not json")  # one reject a day
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{day}.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def loaded(tmp_path):
    inbox = tmp_path / "inbox"
    with store.connect(tmp_path / "r.duckdb") as db:
        for day in DAYS:
            write_day(inbox, day)
            ingest_day(db, InboxSource(inbox, settle_seconds=0), day)
            sample_day(db, day, SamplingConfig(sample_size=10, floor_per_segment=2))
        yield db, inbox


def per_day(db, table: str) -> dict:
    return dict(
        db.execute(f"SELECT partition_date, count(*) FROM {table} GROUP BY 1 ORDER BY 1").fetchall()
    )


def test_old_days_lose_their_raw_rows_and_keep_everything_derived(loaded):
    db, _ = loaded
    res = apply_retention(db, DAYS[-1], RetentionConfig(keep_days=3))
    assert res.cutoff == DAYS[2] and res.days == DAYS[:2]
    assert (res.rows_dropped, res.rejects_dropped) == (60, 2)
    assert list(per_day(db, "raw_traces")) == DAYS[2:]
    assert list(per_day(db, "trace_rejects")) == DAYS[2:]
    assert list(per_day(db, "sampled_traces")) == DAYS  # the samples stay
    assert list(per_day(db, "trace_ingests")) == DAYS  # and the day's counts
    assert [
        r[0] for r in db.execute("SELECT partition_date FROM raw_trace_retention").fetchall()
    ] == DAYS[:2]
    # Running it again drops nothing more.
    assert apply_retention(db, DAYS[-1], RetentionConfig(keep_days=3)).days == []


def test_keep_days_zero_keeps_everything(loaded):
    db, _ = loaded
    res = apply_retention(db, DAYS[-1] + dt.timedelta(days=400), RetentionConfig(keep_days=0))
    assert res.cutoff is None and res.days == []
    assert list(per_day(db, "raw_traces")) == DAYS


def test_sampling_a_dropped_day_is_a_clear_error_and_keeps_the_old_sample(loaded):
    db, _ = loaded
    before = db.execute(
        "SELECT * FROM sampled_traces WHERE partition_date = ? ORDER BY 2", [DAYS[0]]
    ).fetchall()
    apply_retention(db, DAYS[-1], RetentionConfig(keep_days=2))
    with pytest.raises(
        RawDayDropped, match=r"sampling needs the raw traces of 2026-10-01.*dropped"
    ):
        sample_day(db, DAYS[0])
    after = db.execute(
        "SELECT * FROM sampled_traces WHERE partition_date = ? ORDER BY 2", [DAYS[0]]
    ).fetchall()
    assert after == before and len(before) == 10


def test_reingesting_a_dropped_day_without_its_files_is_an_error_with_them_it_is_back(loaded):
    db, inbox = loaded
    apply_retention(db, DAYS[-1], RetentionConfig(keep_days=2))
    moved = inbox.parent / "elsewhere"
    moved.mkdir()
    shutil.move(inbox / f"{DAYS[0]}.jsonl", moved / f"{DAYS[0]}.jsonl")
    with pytest.raises(RawDayDropped, match="no archive was kept"):
        ingest_day(db, InboxSource(inbox, settle_seconds=0), DAYS[0])
    assert per_day(db, "trace_ingests")[DAYS[0]] == 1  # the day's record was not replaced
    assert (
        db.execute(
            "SELECT rows_ingested FROM trace_ingests WHERE partition_date = ?", [DAYS[0]]
        ).fetchone()[0]
        == 30
    )
    shutil.move(moved / f"{DAYS[0]}.jsonl", inbox / f"{DAYS[0]}.jsonl")
    res = ingest_day(db, InboxSource(inbox, settle_seconds=0), DAYS[0])
    assert res.rows_ingested == 30
    assert retention.dropped(db, DAYS[0]) is None
    assert (
        sample_day(db, DAYS[0], SamplingConfig(sample_size=10, floor_per_segment=2)).sampled == 10
    )


def test_an_archive_keeps_the_rows_and_restores_them_exactly(loaded, tmp_path):
    db, _ = loaded
    raw = db.execute(
        "SELECT * FROM raw_traces WHERE partition_date = ? ORDER BY trace_id", [DAYS[0]]
    ).fetchall()
    rej = db.execute("SELECT * FROM trace_rejects WHERE partition_date = ?", [DAYS[0]]).fetchall()
    res = apply_retention(db, DAYS[-1], RetentionConfig(keep_days=4, archive_dir=tmp_path / "arch"))
    assert res.days == [DAYS[0]]
    folder = tmp_path / "arch" / str(DAYS[0])
    assert sorted(p.name for p in folder.iterdir()) == [
        "raw_traces.parquet",
        "trace_rejects.parquet",
    ]
    with pytest.raises(RawDayDropped, match="restore it from the archive at .*arch"):
        sample_day(db, DAYS[0])
    assert retention.restore_day(db, DAYS[0]) == 30
    assert (
        db.execute(
            "SELECT * FROM raw_traces WHERE partition_date = ? ORDER BY trace_id", [DAYS[0]]
        ).fetchall()
        == raw
    )
    assert (
        db.execute("SELECT * FROM trace_rejects WHERE partition_date = ?", [DAYS[0]]).fetchall()
        == rej
    )
    assert (
        sample_day(db, DAYS[0], SamplingConfig(sample_size=10, floor_per_segment=2)).sampled == 10
    )


def test_configuration_follows_the_precedence_rule(tmp_path):
    env = {"EVAL_RAW_RETENTION_DAYS": "7", "EVAL_RAW_ARCHIVE_DIR": str(tmp_path)}
    assert RetentionConfig.resolve(env=env) == RetentionConfig(7, tmp_path)
    assert RetentionConfig.resolve(keep_days=90, env=env).keep_days == 90
    assert RetentionConfig.resolve(env={}) == RetentionConfig(30, None)
    with pytest.raises(ValueError, match="EVAL_RAW_RETENTION_DAYS"):
        RetentionConfig.resolve(env={"EVAL_RAW_RETENTION_DAYS": "a month"})
    with pytest.raises(ValueError, match="negative"):
        RetentionConfig(keep_days=-1)


def test_the_dagster_asset_applies_the_retention_and_reports_it(loaded, tmp_path):
    db, _ = loaded
    db.close()  # the asset opens the store itself
    result = dg.materialize(
        [defs_retention.raw_trace_retention],
        resources={"store": EvalStore(path=str(tmp_path / "r.duckdb"))},
        run_config=dg.RunConfig(
            {
                "raw_trace_retention": defs_retention.RetentionConfig(
                    keep_days=2, today=str(DAYS[-1])
                )
            }
        ),
    )
    assert result.success
    [mat] = result.asset_materializations_for_node("raw_trace_retention")
    assert mat.metadata["days_dropped"].value == 3
    assert mat.metadata["traces_dropped"].value == 90
    with store.connect(tmp_path / "r.duckdb", read_only=True) as conn:
        assert list(per_day(conn, "raw_traces")) == DAYS[3:]


# --- history over days whose raw rows were dropped ----------------------------------------


def judge_sample(db) -> None:
    """A score for every sampled trace (score 4 on v1 traffic), as judge_scores holds."""
    db.execute(
        "INSERT INTO judge_scores SELECT partition_date, trace_id, segment, 'k-' || trace_id, "
        "'ok', 4, 'heuristic', NULL, 'heuristic-v2', false, 'quality' FROM sampled_traces"
    )


def test_drift_causes_keep_the_dimensions_of_dropped_days(loaded, caplog):
    db, _ = loaded
    db.execute("UPDATE raw_traces SET prompt_version = 'v1', model = 'm1'")
    judge_sample(db)
    before = load_judged_traces(db).sort_values(["day", "segment", "score"])
    assert len(before) == 50 and set(before.prompt_version) == {"v1"}
    apply_retention(db, DAYS[-1], RetentionConfig(keep_days=3))
    after = load_judged_traces(db).sort_values(["day", "segment", "score"])
    # Every judged trace of the dropped days still has its prompt version and model.
    assert after.reset_index(drop=True).equals(before.reset_index(drop=True))
    assert "no model" not in caplog.text


def test_judged_traces_without_kept_dimensions_are_named_not_silently_lost(loaded, caplog):
    db, _ = loaded
    judge_sample(db)
    apply_retention(db, DAYS[-1], RetentionConfig(keep_days=3))
    # A day dropped before the dimensions were kept: the causes leave it out and say so.
    db.execute("DELETE FROM retained_trace_dimensions WHERE partition_date = ?", [DAYS[0]])
    with caplog.at_level("WARNING"):
        frame = load_judged_traces(db)
    assert len(frame) == 40 and DAYS[0] not in set(frame.day)
    assert "10 judged traces on 1 day(s) (2026-10-01)" in caplog.text
    assert "restore_day" in caplog.text


def test_judging_or_signals_over_a_dropped_day_raise_instead_of_blanking_it(loaded):
    db, _ = loaded
    record_day(db, DAYS[0])
    kept = db.execute(
        "SELECT count(*) FROM trace_signals WHERE partition_date = ?", [DAYS[0]]
    ).fetchone()[0]
    assert kept > 0
    apply_retention(db, DAYS[-1], RetentionConfig(keep_days=3))
    with pytest.raises(RawDayDropped, match="judging needs the raw traces of 2026-10-01"):
        plan_day(db, HeuristicJudge(), DAYS[0])
    with pytest.raises(RawDayDropped, match="the signals needs the raw traces of 2026-10-01"):
        record_day(db, DAYS[0])
    assert (
        db.execute(
            "SELECT count(*) FROM trace_signals WHERE partition_date = ?", [DAYS[0]]
        ).fetchone()[0]
        == kept
    )
    assert len(plan_day(db, HeuristicJudge(), DAYS[3]).rows) == 10  # kept days still judge
