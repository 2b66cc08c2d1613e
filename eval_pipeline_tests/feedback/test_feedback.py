"""Feedback ingestion (every kind of bad line, exactly once), candidates, promotion."""

from __future__ import annotations

import json

import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.feedback import candidates, golden, records, review, review_files
from eval_pipeline.core.feedback import ingest as feedback
from eval_pipeline.core.regression import cases
from eval_pipeline_tests.feedback.feedback_fixtures import add_traces, line


def _mixed_file() -> bytes:
    good = [
        line("t-billing-1", comment="refused to help", ts="2026-10-22T10:00:00Z", user_id="u1"),
        line("t-billing-2", comment="cut off", ts=1792663200000),  # epoch ms
        line("t-ship-1", "up", ts="2026-10-22T11:00:00+02:00"),
        line("t-billing-1", "thumbs_down", feedback_id="client-42", comment="again"),
        # the seed's simple format
        json.dumps(
            {
                "trace_id": "t-unknown",
                "rating": "down",
                "comment": "wrong",
                "ts": "2026-10-23T09:00:00Z",
            }
        ),
    ]
    bad = [
        b'{"trace_id": "t-billing-1", "rating": "do',  # not JSON (cut off)
        json.dumps({"rating": "down", "comment": "no trace"}).encode(),  # missing field
        json.dumps({"trace_id": "t-ship-1", "rating": "meh"}).encode(),  # unknown rating
        json.dumps(
            {"trace_id": "t-ship-1", "rating": "down", "comment": "x" * 20_000}
        ).encode(),  # oversized
        b'{"trace_id": "t-\xff\xfe", "rating": "down"}',  # undecodable
        b"[1, 2, 3]",  # not an object
        json.dumps({"trace_id": "t-ship-1", "rating": "down", "ts": "yesterday"}).encode(),
    ]
    lines = (
        [g.encode() for g in good[:2]]
        + bad[:4]
        + [good[2].encode(), b""]
        + bad[4:]
        + [g.encode() for g in good[2:]]
    )
    # good[2] appears twice on purpose: a repeat inside one file lands once.
    return b"\n".join(lines) + b"\n"


def test_mixed_file_good_lines_land_once_bad_lines_listed():
    data = _mixed_file()
    with store.connect(settings.duckdb_path()) as conn:
        first = feedback.ingest_bytes(conn, data, "mixed.jsonl")
        assert first.ingested == 5
        assert first.duplicates == 1  # the repeated line
        reasons = {r.line_no: r.reason for r in first.rejects}
        kinds = sorted(r.split(":")[0] for r in reasons.values())
        assert kinds == sorted(
            [
                "not JSON",
                "missing field",
                "unknown rating",
                "oversized",
                "undecodable",
                "not an object",
                "invalid field",
            ]
        )
        assert reasons[3].startswith("not JSON")
        assert reasons[4] == "missing field: trace_id"
        assert "'meh'" in reasons[5]
        assert reasons[6].startswith("oversized: 20")
        assert reasons[9].startswith("undecodable")  # line 8 is blank, not an error
        stored = conn.execute(
            "SELECT line_no, reason FROM feedback_rejects WHERE file_name = 'mixed.jsonl' "
            "ORDER BY line_no"
        ).fetchall()
        assert dict(stored) == reasons

        # The same file again, and the same records in another file: nothing new.
        again = feedback.ingest_bytes(conn, data, "mixed.jsonl")
        copy = feedback.ingest_bytes(conn, data + b"\n", "copy-of-mixed.jsonl")
        assert (again.ingested, again.already_seen) == (0, True)
        assert copy.ingested == 0 and copy.duplicates == 6 and not copy.already_seen
        assert conn.execute("SELECT count(*) FROM feedback").fetchall()[0][0] == 5
        rows = conn.execute(
            "SELECT trace_id, rating, ts, user_id FROM feedback ORDER BY trace_id, ts"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM feedback_rejects").fetchall()[0][0] == 2 * len(
            reasons
        )  # each file's rejects, once per file
        assert (
            conn.execute(
                "SELECT times_seen FROM feedback_files WHERE file_name = 'mixed.jsonl'"
            ).fetchall()[0][0]
            == 2
        )
    ts = {(r[0], r[1]): r[2] for r in rows}
    assert str(ts[("t-ship-1", "up")]) == "2026-10-22 09:00:00"  # converted to UTC
    assert str(ts[("t-billing-2", "down")]) == "2026-10-22 10:00:00"  # epoch ms


def test_identity_client_id_and_content():
    a = records.validate_record({"trace_id": "t", "rating": "down", "comment": "x"})
    b = records.validate_record(
        {"trace_id": "t", "rating": "DOWN", "comment": "x", "received_at": "2026-01-01T00:00:00Z"}
    )
    c = records.validate_record({"trace_id": "t", "rating": "down", "comment": "y"})
    d = records.validate_record({"trace_id": "t", "rating": "up", "feedback_id": "k"})
    e = records.validate_record({"trace_id": "other", "rating": "down", "feedback_id": "k"})
    assert a.feedback_id == b.feedback_id  # received_at is not part of identity
    assert a.feedback_id != c.feedback_id
    assert d.feedback_id == e.feedback_id  # a client id names the record
    rt = records.validate_record(json.loads(records.record_to_json(b)))
    assert rt.feedback_id == b.feedback_id and rt.received_at == b.received_at


def test_hand_dropped_lines_without_id_are_one_record_when_indistinguishable():
    # The documented identity rule for files dropped by hand (no feedback_id): identical
    # lines are a repeat; a line differing in ts or user_id is another record.
    data = "\n".join(
        [
            line("t-1"),
            line("t-1"),  # indistinguishable from the line above: lands once
            line("t-1", user_id="u2"),
            line("t-1", ts="2026-10-22T10:00:00Z"),
        ]
    ).encode()
    with store.connect(settings.duckdb_path()) as conn:
        res = feedback.ingest_bytes(conn, data, "by-hand.jsonl")
    assert (res.ingested, res.duplicates) == (3, 1)


def test_candidates_join_traces_flag_unknown_and_keep_status():
    add_traces()
    with store.connect(settings.duckdb_path()) as conn:
        feedback.ingest_bytes(conn, _mixed_file(), "mixed.jsonl")
        res = candidates.build_candidates(conn)
        assert res.created == 3  # billing-1, billing-2, unknown; ship-1 was a thumbs-up
        assert res.trace_unknown == 1
        pend = {c.trace_id: c for c in candidates.pending(conn)}
        assert pend["t-billing-1"].reports == 2
        assert pend["t-billing-1"].comments == ["refused to help", "again"]
        assert pend["t-billing-1"].segment == "billing"
        assert pend["t-billing-1"].assistant_response.startswith("I'm sorry")
        assert not pend["t-unknown"].trace_found and pend["t-unknown"].user_query is None
        review.record(conn, review.Decision(pend["t-billing-2"].candidate_id, "reject", "ann"))
        # A second run changes no status and creates nothing; the late trace is filled in.
        add_later = {"t-unknown": ("Is this right?", "No idea.", "product")}
    add_traces(add_later)
    with store.connect(settings.duckdb_path()) as conn:
        again = candidates.build_candidates(conn)
        assert (again.created, again.filled_in, again.trace_unknown) == (0, 1, 0)
        assert candidates.counts(conn)["rejected"] == 1
        assert candidates.get(conn, candidates.candidate_id("t-unknown")).user_query == (
            "Is this right?"
        )


def _approve(conn, trace_id: str, expected: str, grader: str = "judge", **kw) -> None:
    review.record(
        conn,
        review.Decision(
            candidates.candidate_id(trace_id),
            "approve",
            "ann",
            expected=expected,
            grader={"type": grader},
            **kw,
        ),
    )


def test_promotion_appends_with_provenance_and_refuses_duplicates():
    add_traces()
    gp = settings.golden_path()
    gp.parent.mkdir(parents=True)
    hand = (
        '{"id": "hand-1", "input": "  where is my ORDER #555555? ", "expected": "x",'
        ' "grader": "contains"}\n'
    )
    gp.write_text(hand)
    with store.connect(settings.duckdb_path()) as conn:
        feedback.ingest_bytes(
            conn,
            (line("t-billing-1", comment="useless") + "\n" + line("t-ship-1") + "\n").encode(),
            "f.jsonl",
        )
        candidates.build_candidates(conn)
        _approve(conn, "t-billing-1", "Explain the temporary authorisation and offer a refund")
        _approve(conn, "t-ship-1", "warehouse", "contains")
        res = golden.promote(conn, gp)
        assert res.added == [golden.case_id_for(candidates.candidate_id("t-billing-1"))]
        assert len(res.refused) == 1 and "hand-1" in res.refused[0][1]
        text = gp.read_text()
        assert text.startswith(hand)  # the existing bytes are untouched
        loaded = cases.load_cases(gp)
        assert [c.id for c in loaded] == ["hand-1", res.added[0]]
        prov = loaded[1].provenance
        assert prov["source_trace_id"] == "t-billing-1"
        assert prov["feedback_comments"] == ["useless"]
        assert prov["reviewer"] == "ann" and prov["reviewed_at"].endswith("Z")
        assert res.version == cases.golden_version(gp)
        row = conn.execute("SELECT case_id, golden_version, case_json FROM golden_cases").fetchall()
        assert row == [(res.added[0], res.version, text.splitlines()[1])]
        st = dict(conn.execute("SELECT trace_id, status FROM eval_candidates").fetchall())
        assert st == {"t-billing-1": "promoted", "t-ship-1": "refused"}
        # Promotion again: nothing changes.
        assert golden.promote(conn, gp).added == []
        assert gp.read_text() == text


def test_promotion_refuses_to_touch_a_broken_golden_file():
    gp = settings.golden_path()
    gp.parent.mkdir(parents=True)
    gp.write_text("{not json\n")
    with store.connect(settings.duckdb_path()) as conn, pytest.raises(cases.GoldenFileError):
        golden.promote(conn, gp)
    assert gp.read_text() == "{not json\n"


def test_import_is_all_or_nothing(tmp_path):
    add_traces()
    with store.connect(settings.duckdb_path()) as conn:
        feedback.ingest_bytes(
            conn, (line("t-billing-1") + "\n" + line("t-billing-2") + "\n").encode(), "f.jsonl"
        )
        candidates.build_candidates(conn)
        out = tmp_path / "pending.jsonl"
        assert review_files.export_pending(conn, out) == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    rows[0].update(decision="approve", expected="Offer a refund", grader="judge")
    rows[1].update(decision="approve", expected="(", grader={"type": "regex"})  # bad regex
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def connect():
        return store.connect(settings.duckdb_path())

    res = review_files.import_decisions(connect, out, "bob")
    assert len(res.errors) == 1 and ":2: " in res.errors[0] and "regex" in res.errors[0]
    with connect() as conn:
        assert candidates.counts(conn)["pending"] == 2  # nothing recorded
    rows[1].update(decision="reject", note="fine answer")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = review_files.import_decisions(connect, out, "bob")
    assert res.errors == [] and len(res.review_ids) == 2
    with connect() as conn:
        c = candidates.counts(conn)
        assert (c["approved"], c["rejected"], c["pending"]) == (1, 1, 0)
        trail = conn.execute(
            "SELECT reviewer, via, note FROM candidate_reviews ORDER BY decision"
        ).fetchall()
        assert trail == [("bob", "import", None), ("bob", "import", "fine answer")]
    res = review_files.import_decisions(connect, out, "bob")  # already decided: refused, listed
    assert len(res.errors) == 2 and all("already" in e for e in res.errors)
