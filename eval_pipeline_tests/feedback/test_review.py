"""The review flow driven as a person would, in a pseudo-terminal: from pending candidates
to cases in golden.jsonl (through the Dagster automation that follows review decisions)."""

from __future__ import annotations

import os
import sys

import dagster as dg
import pexpect

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.feedback import candidates
from eval_pipeline.core.feedback import ingest as feedback
from eval_pipeline.core.regression import cases
from eval_pipeline_tests.feedback.feedback_fixtures import add_traces, line

DECIDE = r"Decision - \[a\]pprove, \[r\]eject, \[s\]kip, \[q\]uit: "


def spawn(*args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "eval_pipeline", "review", *args],
        env={**os.environ, "COLUMNS": "100"},
        encoding="utf-8",
        timeout=60,
    )
    child.logfile_read = sys.stdout  # shown by pytest when the test fails
    return child


def _seed() -> None:
    add_traces()
    lines = [
        line("t-billing-1", comment="it refused to help", user_id="u1"),
        line("t-billing-1", comment="useless", user_id="u2"),
        line("t-billing-2", comment="cut off"),
        line("t-lost", comment="wrong price"),
    ]
    with store.connect(settings.duckdb_path()) as conn:
        feedback.ingest_bytes(conn, ("\n".join(lines) + "\n").encode(), "seed.jsonl")
        candidates.build_candidates(conn)


def test_review_in_a_terminal_to_golden_set():
    _seed()
    # Session 1: approve the first, skip the second, quit at the third.
    child = spawn("--reviewer", "alice")
    child.expect("3 pending candidate")
    child.expect("Candidate 1 of 3")
    child.expect("Why was I charged twice")  # the query
    child.expect("can't help with billing")  # the bad answer
    child.expect('"it refused to help"')  # the user's comments
    child.expect(DECIDE)
    child.sendline("x")
    child.expect("please type a, r, s or q")
    child.expect(DECIDE)
    child.sendline("a")
    child.expect(r"Grader \[judge/exact/contains/regex/json/numeric\] \(Enter = judge\): ")
    child.sendline("")
    child.expect("Reference answer or notes for the judge: ")
    child.sendline("Explain the temporary authorisation hold and offer to refund it")
    child.expect("Tags, comma-separated")
    child.sendline("refund, double-charge")
    child.expect("approved: will become golden case fb-")
    child.expect("Candidate 2 of 3")
    child.expect(DECIDE)
    child.sendline("s")
    child.expect("skipped")
    child.expect("Candidate 3 of 3")
    child.expect("The trace is not in the store")
    child.expect(DECIDE)
    child.sendline("q")
    child.expect("Decisions made so far are saved")
    child.expect("Approved 1, rejected 0, skipped 1; 2 candidate\\(s\\) still pending")
    child.expect("Dagster notified")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    # Session 2 resumes with what is still pending.
    child = spawn("--reviewer", "bob")
    child.expect("2 pending candidate")
    child.expect("Candidate 1 of 2")
    child.expect("How do I update the credit card")
    child.expect(DECIDE)
    child.sendline("r")
    child.expect(r"Why reject\? ")
    child.sendline("the answer was fine, the user misread it")
    child.expect("rejected")
    child.expect("Candidate 2 of 2")
    child.expect(DECIDE)
    child.sendline("a")
    child.expect("Input \\(the trace is unknown; type the user's question\\): ")
    child.sendline("How much is the Pro plan?")
    child.expect("Grader")
    child.sendline("regex")
    child.expect("Regex the answer must match: ")
    child.sendline("(unclosed")
    child.expect("invalid pattern")
    child.expect("Grader")
    child.sendline("numeric")
    child.expect("Expected number: ")
    child.sendline("twelve")
    child.expect("is not a number")
    child.expect("Grader")
    child.sendline("numeric")
    child.expect("Expected number: ")
    child.sendline("12")
    child.expect("Tags")
    child.sendline("")
    child.expect("approved")
    child.expect("Approved 1, rejected 1, skipped 0; 0 candidate\\(s\\) still pending")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    # Nothing left: a third session says so.
    child = spawn("--reviewer", "bob")
    child.expect("No pending candidates")
    child.expect(pexpect.EOF)

    # The review CLI told the Dagster instance; the sensor that follows decisions asks for
    # golden_set, which promotes the approved candidates.
    from eval_pipeline.definitions import defs
    from eval_pipeline.defs.feedback import review_decisions_sensor

    d = defs()
    with dg.DagsterInstance.get() as instance:
        tick = review_decisions_sensor(dg.build_sensor_context(instance=instance))
        assert len(tick.run_requests) == 1
        assert dg.materialize([d.resolve_assets_def("golden_set")], instance=instance).success

    golden = cases.load_cases(settings.golden_path())
    by_trace = {c.provenance["source_trace_id"]: c for c in golden}
    assert set(by_trace) == {"t-billing-1", "t-lost"}
    first = by_trace["t-billing-1"]
    assert first.input == "Why was I charged twice for order #123456?"
    assert first.grader == {"type": "judge"}
    assert first.expected.startswith("Explain the temporary authorisation")
    assert first.tags == ("feedback", "refund", "double-charge", "billing")
    assert first.provenance["reviewer"] == "alice"
    assert first.provenance["feedback_comments"] == ["it refused to help", "useless"]
    assert "can't help" in first.provenance["bad_answer"]
    lost = by_trace["t-lost"]
    assert (lost.input, lost.expected, lost.grader_type) == (
        "How much is the Pro plan?",
        12,
        "numeric",
    )
    assert lost.provenance["reviewer"] == "bob"
    with store.connect(settings.duckdb_path()) as conn:
        assert candidates.counts(conn) == {
            "pending": 0,
            "approved": 0,
            "rejected": 1,
            "promoted": 2,
            "refused": 0,
        }
        trail = conn.execute(
            "SELECT reviewer, decision, note FROM candidate_reviews ORDER BY reviewed_at"
        ).fetchall()
    assert trail == [
        ("alice", "approve", None),
        ("bob", "reject", "the answer was fine, the user misread it"),
        ("bob", "approve", None),
    ]


def test_export_and_import_from_the_command_line(tmp_path):
    import json
    import subprocess

    _seed()
    out = tmp_path / "pending.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "eval_pipeline", "review", "--export", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and "wrote 3 pending" in run.stdout
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    rows[0].update(decision="approve", expected="refund", grader="contains")
    rows[1].update(decision="approve")  # no expected answer: refused, nothing recorded
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [
        sys.executable,
        "-m",
        "eval_pipeline",
        "review",
        "--reviewer",
        "carol",
        "--import",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "pending.jsonl:2: approve needs an expected" in run.stdout
    rows[1].update(decision=None)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "recorded 1 decision(s) (1 approved, 0 rejected); 2 left pending" in run.stdout
    with store.connect(settings.duckdb_path()) as conn:
        assert candidates.counts(conn)["approved"] == 1
