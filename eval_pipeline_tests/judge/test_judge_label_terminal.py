"""`eval-pipeline judge label` driven as a person would, in a pseudo-terminal: the judge's
score hidden, labels saved as they are given, a second session resuming, control characters
in trace text shown and not obeyed; then `judge agreement` on what was labelled."""

from __future__ import annotations

import datetime as dt
import os
import sys

import pexpect

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.feedback import candidates
from eval_pipeline.core.feedback import ingest as feedback
from eval_pipeline.core.judge import cache
from eval_pipeline.core.judge.base import HeuristicJudge
from eval_pipeline_tests.feedback.feedback_fixtures import add_traces, line
from eval_pipeline_tests.judge.trust_fixtures import DAY, SimJudge, add_day

ASK = r"Your score \[1-5, s, q\]: "


def spawn(*args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "eval_pipeline", "judge", *args],
        env={**os.environ, "COLUMNS": "100"},
        encoding="utf-8",
        timeout=60,
    )
    child.logfile_read = sys.stdout  # shown by pytest when the test fails
    return child


def test_label_in_a_terminal_then_resume_then_agreement():
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 6, SimJudge())
    child = spawn("label", "--labeller", "ann", "--limit", "4")
    child.expect(r"4 trace\(s\) to label for judge sim\|sim-model\|sim-v1")
    child.expect(r"\[1/4\] trace t0301-")
    child.expect("Question:")
    child.expect(r"answer \d of quality (\d)\. \\x1b\[2J\(esc\)")  # the ESC is shown, escaped
    first_quality = int(child.match.group(1))
    child.expect(ASK)
    assert child.before.strip() == ""  # after the answer: no judge score, no reason
    child.sendline("7")
    child.expect("please type 1, 2, 3, 4, 5, s or q")
    child.expect(ASK)
    child.sendline(str(first_quality))
    child.expect(f"saved: {first_quality}")
    child.expect(r"\[2/4\]")
    child.expect(ASK)
    child.sendline("s")
    child.expect(r"\[3/4\]")
    child.expect(ASK)
    child.sendline("q")
    child.expect("Labels given so far are saved")
    child.expect(r"Labelled 1, skipped 1; 5 trace\(s\) left")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = conn.execute(
            "SELECT labeller, human_score, source, judge_identity FROM judge_labels"
        ).fetchall()
    assert rows == [("ann", first_quality, "terminal", "sim|sim-model|sim-v1")]

    # Resume: the labelled trace is not asked again; Ctrl-D ends the session cleanly.
    child = spawn("label", "--labeller", "ann")
    child.expect(r"5 trace\(s\) to label")
    for i in range(1, 5):
        child.expect(rf"\[{i}/5\]")
        child.expect(r"answer \d of quality (\d)")
        q = child.match.group(1)
        child.expect(ASK)
        child.sendline(q)
        child.expect(f"saved: {q}")
    child.expect(r"\[5/5\]")
    child.expect(ASK)
    child.sendeof()
    child.expect(r"Labelled 4, skipped 0; 1 trace\(s\) left")
    child.expect(pexpect.EOF)
    child.close()

    out = pexpect.run(
        f"{sys.executable} -m eval_pipeline judge agreement --min-labels 5",
        env=dict(os.environ),
        encoding="utf-8",
    )
    assert "labels:         5" in out
    assert "test-retest:    not measured yet" in out
    assert "weighted κ:     κ 1.00" in out
    assert "trust:          validated (5 labels; κ 1.00" in out


def test_review_records_the_reviewers_score_as_a_label():
    add_traces()
    with store.connect(settings.duckdb_path()) as conn:
        conn.execute(
            "INSERT INTO sampled_traces SELECT partition_date, trace_id, segment, 1, 1"
            " FROM raw_traces"
        )
        cache.score_day(conn, HeuristicJudge(), dt.date(2026, 10, 22))
        lines = [line("t-billing-1", comment="it refused"), line("t-lost", comment="wrong")]
        feedback.ingest_bytes(conn, ("\n".join(lines) + "\n").encode(), "seed.jsonl")
        candidates.build_candidates(conn)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "eval_pipeline", "review", "--reviewer", "alice", "--score"],
        env={**os.environ, "COLUMNS": "100"},
        encoding="utf-8",
        timeout=60,
    )
    child.logfile_read = sys.stdout
    scored = set()
    for _ in range(2):
        child.expect(r"Candidate \d of 2")
        child.expect(r"\[q\]uit: ")
        child.sendline("r")
        child.expect(r"Why reject\? \(Enter = no note\): ")
        child.sendline("")
        child.expect("rejected")
        child.expect(r"Your score of this answer, 1-5 \(Enter = skip\): ")
        child.sendline("9")
        child.expect("please type 1-5, or press Enter to skip")
        child.sendline("1")
        i = child.expect(["score 1 saved as a judge label", "score not saved: (.*) has no ok"])
        scored.add(i)
    assert scored == {0, 1}  # the judged trace is labelled; the unknown one says why not
    child.expect(pexpect.EOF)
    child.close()
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        rows = conn.execute(
            "SELECT trace_id, labeller, human_score, source, judge_identity FROM judge_labels"
        ).fetchall()
    assert rows == [("t-billing-1", "alice", 1, "review", "heuristic||heuristic-v2")]
