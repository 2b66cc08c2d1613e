"""Core pieces of the regression gate: the verdict's error/wrong-answer split, the gate spec."""

from __future__ import annotations

import datetime as dt

import pytest

from eval_pipeline.core.judge.agreement import TrustStatus
from eval_pipeline.core.regression import gate as regression
from eval_pipeline.core.regression import runners
from eval_pipeline.core.regression.gate import CaseResult, GateSpec, RegressionRun
from eval_pipeline.core.regression.history import Comparison
from eval_pipeline.core.regression.junit import to_junit_xml
from eval_pipeline.core.regression.report import markdown_report, text_report


def make_run(passed: int, wrong: int, call_errors: int = 0, grade_errors: int = 0):
    results = (
        [CaseResult(f"p{i}", "exact", "pass", "ok", "a") for i in range(passed)]
        + [CaseResult(f"f{i}", "exact", "fail", "wrong", "b") for i in range(wrong)]
        + [
            CaseResult(f"e{i}", "exact", "error", "call failed", None, call_error="timed out")
            for i in range(call_errors)
        ]
        + [CaseResult(f"g{i}", "judge", "error", "judge down", "c") for i in range(grade_errors)]
    )
    now = dt.datetime(2026, 1, 1)
    return RegressionRun("r", "d", "t", "callable", "v", None, now, now, 0.9, 0.5, results=results)


def test_errors_alone_below_the_threshold_say_check_the_service():
    run = make_run(passed=32, wrong=3, call_errors=5)  # 80%; 92.5% had the errors passed
    assert run.status == "fail"
    assert regression.verdict(run) == (
        "FAIL (below threshold: 3 wrong answers, 5 errors (5 calls failed); "
        "without the errors it would pass: check the service before the model)"
    )
    text = text_report(run, Comparison())
    assert text.endswith("verdict: " + regression.verdict(run))
    assert regression.verdict(run) in markdown_report(run, Comparison())


def test_wrong_answers_alone_below_the_threshold_say_quality_regression():
    run = make_run(passed=32, wrong=6, call_errors=1, grade_errors=1)  # 85% even with errors
    assert regression.verdict(run) == (
        "FAIL (below threshold: 6 wrong answers, 2 errors (1 call failed; 1 got no grade "
        "(grader or judge error)); a quality regression: the wrong answers alone put it "
        "below the threshold)"
    )


def test_verdict_without_errors_and_for_pass_and_outage_is_unchanged():
    assert regression.verdict(make_run(8, 2)) == regression.STATUS_WORDS["fail"]
    assert regression.verdict(make_run(19, 0, call_errors=1)) == regression.STATUS_WORDS["pass"]
    assert regression.verdict(make_run(1, 0, call_errors=9)) == regression.STATUS_WORDS["outage"]


def test_gate_spec_from_options_ignores_other_keys_and_none():
    spec = GateSpec.from_options(
        {
            "target": "eval_pipeline.demo.app:answer",
            "golden_path": "g.jsonl",
            "model": None,
            "timeout": 3.0,
            "target_args": {"prompt_path": "good"},
            "threshold": None,
            "judge_all": True,
            "quiet": True,  # a CLI flag the spec does not know
        }
    )
    assert spec.threshold == regression.DEFAULT_THRESHOLD and spec.judge_all
    assert spec.target.timeout == 3.0 and spec.target.retries == runners.DEFAULT_RETRIES
    runner = spec.target.build()
    assert runner.kind == "callable" and runner.kwargs == {"prompt_path": "good"}
    with pytest.raises(runners.RunnerConfigError, match="no target"):
        GateSpec.from_options({"golden_path": "g.jsonl"})


def _status(validated: bool) -> TrustStatus:
    if validated:
        return TrustStatus("j|m|r1", "validated", "120 labels; κ 0.78 [0.66, 0.87]", 120,
                           0.78, 0.66, 0.87, 50, 0.6)  # fmt: skip
    return TrustStatus("j|m|r1", "unvalidated", "23 labels; κ 0.71 [0.48, 0.86]; needs 50 "
                       "labels", 23, 0.71, 0.48, 0.86, 50, 0.6)  # fmt: skip


def test_reports_carry_the_judge_trust_and_warn_only_when_unvalidated():
    cmp = Comparison(compared=False)
    for validated in (True, False):
        run = make_run(9, 1)
        run.judge_name, run.judge_model, run.rubric_version = "j", "m", "r1"
        run.judge_trust = _status(validated)
        text, md = text_report(run, cmp), markdown_report(run, cmp)
        xml = to_junit_xml(run)
        assert run.status == "pass"  # the trust never changes the verdict
        assert f"judge j|m|r1: {run.judge_trust.status} (" in text
        assert "| judge trust | judge j|m|r1" in md.replace("\\|", "|")
        assert f'name="judge_trust_status" value="{run.judge_trust.status}"' in xml
        warned = "WARNING: UNVALIDATED JUDGE" in text
        assert warned is (not validated)
        assert md.startswith("## Golden-set regression") and ("> ⚠️ **WARNING" in md) is warned
    run.judge_trust = None
    assert "judge trust: not looked up" in text_report(run, cmp)
    run.judge_name = None  # no judge in the run: nothing to say about one
    assert "judge trust" not in text_report(run, cmp) and "judge trust" not in markdown_report(
        run, cmp
    )
