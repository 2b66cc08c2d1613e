"""Hostile or unlucky input to feedback ingestion, promotion and review: one bad line never
blocks a file, errors are not hidden, summaries stay bounded, the audit trail holds."""

from __future__ import annotations

import json
import os
import stat

import dagster as dg
import duckdb
import pandas as pd
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store, terminal
from eval_pipeline.core.feedback import candidates, golden, records, review_files, review_session
from eval_pipeline.core.feedback import ingest as feedback
from eval_pipeline_tests.feedback.feedback_fixtures import add_traces, line, write_settled

# Lines the standard json module cannot turn into a record without help.
LONE_SURROGATE = b'{"trace_id": "t-sur", "rating": "down", "comment": "bad \\ud800 half"}'
HUGE_INT = b'{"trace_id": "t-int", "rating": "down", "n": ' + b"7" * 5000 + b"}"
DEEP = b'{"trace_id": "t-deep", "rating": "down", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def test_one_bad_line_never_blocks_a_hand_dropped_file():
    good = [line("t-a", comment="fine"), line("t-b", rating="up")]
    data = b"\n".join([good[0].encode(), LONE_SURROGATE, HUGE_INT, DEEP, good[1].encode()]) + b"\n"
    with store.connect(settings.duckdb_path()) as conn:
        res = feedback.ingest_bytes(conn, data, "hostile.jsonl")
        stored = {r[0] for r in conn.execute("SELECT trace_id FROM feedback").fetchall()}
        reasons = dict(
            conn.execute("SELECT line_no, reason FROM feedback_rejects ORDER BY line_no").fetchall()
        )
    assert (res.ingested, res.rejected) == (2, 3)
    assert stored == {"t-a", "t-b"}
    assert sorted(reasons) == [2, 3, 4]
    assert "surrogate" in reasons[2]
    assert "digits" in reasons[3]
    assert "nested" in reasons[4]


class _Boom(Exception):
    pass


def test_replace_rows_reports_the_real_error_not_the_cleanup_one():
    frame = pd.DataFrame({"case_id": ["a"], "no_such_column": [1]})
    with store.connect(settings.duckdb_path()) as conn:
        conn.execute("CREATE TEMP TABLE t (case_id VARCHAR)")
        with pytest.raises(duckdb.Error) as info:
            store.replace_rows(conn, "t", "case_id = ?", ["a"], frame)
    # The binder error about the missing column, not "transaction is aborted" from cleanup.
    assert "no_such_column" in str(info.value)


def test_epoch_seconds_follow_the_trace_rule():
    with pytest.raises(records.InvalidRecord, match="epoch seconds"):
        records.validate_record({"trace_id": "t", "rating": "up", "ts": 1})
    with pytest.raises(records.InvalidRecord, match="epoch seconds"):
        records.validate_record({"trace_id": "t", "rating": "up", "ts": 1792663200})
    rec = records.validate_record({"trace_id": "t", "rating": "up", "ts": 1792663200000})
    assert rec.ts.year == 2026


class _CountingConn:
    """Forwards to a DuckDB connection and counts the parameter rows sent one by one."""

    def __init__(self, conn):
        self._conn = conn
        self.rows_one_by_one = 0

    def executemany(self, sql, rows):
        rows = list(rows)
        self.rows_one_by_one += len(rows)
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_rejects_are_inserted_in_bulk_and_summarised_by_kind():
    bad = [json.dumps({"trace_id": "t", "rating": "meh", "ts": i}) for i in range(5000)]
    bad += [json.dumps({"trace_id": f"t{i}", "rating": "up", "comment": i}) for i in range(5000)]
    data = ("\n".join([line("t-ok"), *bad]) + "\n").encode()
    with store.connect(settings.duckdb_path()) as conn:
        counting = _CountingConn(conn)
        res = feedback.ingest_bytes(counting, data, "many-bad.jsonl")
        stored = conn.execute("SELECT count(*) FROM feedback_rejects").fetchone()[0]
    assert res.ingested == 1 and res.rejected == stored == 10_000
    assert counting.rows_one_by_one == 0  # no row-by-row insert
    summary = feedback.summarise_rejects(res.rejects)
    assert set(summary) == {"unknown rating", "invalid field"}
    assert summary["invalid field"]["count"] == 5000
    assert len(summary["invalid field"]["examples"]) <= feedback.REJECT_EXAMPLES


def test_feedback_asset_metadata_and_logs_stay_bounded():
    from eval_pipeline.definitions import defs

    inbox = settings.feedback_inbox()
    for f in range(40):
        rows = [json.dumps({"trace_id": f"t{f}", "rating": f"meh-{i}"}) for i in range(200)]
        write_settled(inbox / f"bad-{f:02d}.jsonl", "\n".join(rows) + "\n")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([defs().resolve_assets_def("feedback")], instance=instance)
    assert result.success
    (mat,) = result.asset_materializations_for_node("feedback")
    size = len(json.dumps({k: str(v.value) for k, v in mat.metadata.items()}))
    assert mat.metadata["lines_rejected"].value == 8000
    assert size < 8_000, f"metadata grew with the data: {size} characters"
    logs = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.user_message and "rejected" in (e.message or "")
    ]
    assert max(len(m) for m in logs) < 2_000


def test_golden_file_keeps_its_mode_and_the_folder_is_fsynced(monkeypatch):
    path = settings.golden_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"id": "a"}\n')
    os.chmod(path, 0o644)
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    golden.append_atomically(path, ['{"id": "b"}'])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text().splitlines() == ['{"id": "a"}', '{"id": "b"}']
    assert True in synced, "the folder was not fsynced after the rename"


def _seed_candidates() -> None:
    add_traces()
    data = ("\n".join([line("t-billing-1", comment="no help"), line("t-ship-1")]) + "\n").encode()
    with store.connect(settings.duckdb_path()) as conn:
        feedback.ingest_bytes(conn, data, "seed.jsonl")
        candidates.build_candidates(conn)


def test_an_imported_line_cannot_claim_another_reviewer(tmp_path):
    _seed_candidates()
    cid = candidates.candidate_id("t-ship-1")
    path = tmp_path / "decisions.jsonl"
    path.write_text(
        json.dumps({"candidate_id": cid, "decision": "reject", "reviewer": "the-boss"}) + "\n"
    )

    def connect():
        return store.connect(settings.duckdb_path())

    res = review_files.import_decisions(connect, path, "mallory")
    assert not res.errors
    with store.connect(settings.duckdb_path()) as conn:
        reviewer, note = conn.execute(
            "SELECT reviewer, note FROM candidate_reviews WHERE candidate_id = ?", [cid]
        ).fetchone()
    assert reviewer == "mallory"
    assert "the-boss" in (note or "")  # the file's claim is kept, labelled as a claim


def test_review_keeps_the_decision_when_the_store_stays_locked(tmp_path):
    _seed_candidates()
    real = settings.duckdb_path()
    calls = {"n": 0}

    def connect():
        calls["n"] += 1
        if calls["n"] in (2, 3):  # the two connections after the queue is read
            raise duckdb.IOException(
                'IO Error: Could not set lock on file "x.duckdb": Conflicting lock is held'
            )
        return store.connect(real)

    # Reject with a note; the store is locked twice (retry, retry); then quit at the next.
    answers = iter(["r", "wrong answer", "", "", "q"])
    said: list[str] = []
    res = review_session.run_session(
        connect, "alice", ask=lambda _p: next(answers), say=said.append
    )
    text = "\n".join(said)
    assert text.count("store is busy") == 2
    assert res.rejected == 1
    with store.connect(real) as conn:
        assert conn.execute("SELECT note FROM candidate_reviews").fetchall() == [("wrong answer",)]


def test_review_quitting_while_locked_saves_the_decision_for_import(tmp_path):
    _seed_candidates()
    real = settings.duckdb_path()
    calls = {"n": 0}

    def connect():
        calls["n"] += 1
        if calls["n"] == 2:
            raise duckdb.IOException(
                'IO Error: Could not set lock on file "x.duckdb": Conflicting lock is held'
            )
        return store.connect(real)

    answers = iter(["r", "duplicate of another", "q"])
    said: list[str] = []
    review_session.run_session(
        connect, "alice", ask=lambda _p: next(answers), say=said.append, unrecorded_dir=tmp_path
    )
    (saved,) = tmp_path.glob("review-unrecorded-*.jsonl")
    assert str(saved) in "\n".join(said)
    res = review_files.import_decisions(lambda: store.connect(real), saved, "alice")
    assert not res.errors and [d.decision for d in res.decisions] == ["reject"]
    assert res.decisions[0].note == "duplicate of another"


def test_review_renders_control_characters_visibly():
    hostile = "ok\x1b]8;;http://evil.example\x07click\x1b]8;;\x07 \x1b[2J\u202egnp.exe\x9b31m"
    c = candidates.Candidate(
        candidate_id="c-1",
        trace_id="t\x1b[1m",
        trace_found=True,
        user_query=hostile,
        assistant_response=hostile,
        segment="seg\x1b",
        model=None,
        prompt_version=None,
        reports=1,
        comments=[hostile],
        status="pending",
    )
    out = review_session.show(c, 1, 1)
    for bad in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert bad not in out
    assert "\\x1b" in out or "␛" in out
    assert terminal.printable("a\tb\nc") == "a\tb\nc"
