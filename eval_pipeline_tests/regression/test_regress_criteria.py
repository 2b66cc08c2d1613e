"""Golden cases that name judge criteria: loading, per-criterion verdicts against the fake
OpenAI server, the reports, JUnit, history; and no change for a golden set without them."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from eval_pipeline import settings
from eval_pipeline.cli import main
from eval_pipeline.core import store
from eval_pipeline.core.judge.base import HeuristicJudge
from eval_pipeline.core.regression import gate as regression
from eval_pipeline.core.regression import history
from eval_pipeline.core.regression.cases import (
    GoldenFileError,
    golden_version,
    load_cases,
    parse_case,
)
from eval_pipeline.core.regression.gate import GateSpec, JudgeSetupError
from eval_pipeline.core.regression.junit import to_junit_xml
from eval_pipeline.core.regression.report import markdown_report, text_report
from eval_pipeline.core.regression.runners import TargetSpec
from eval_pipeline_tests.fake_openai import fake_openai  # noqa: F401
from eval_pipeline_tests.judge.criteria_fixtures import one_call_names

TARGET = "eval_pipeline_tests.regression.test_regress_criteria:answer"
ANSWERS = {"q-ok": "The refund takes 5 days.", "q-wrong": "WRONG: 30 days.", "q-leak": "LEAK me"}


def answer(value, **_):
    if value == "q-down":
        raise RuntimeError("service down")
    return ANSWERS[value]


def criterion_of(body: dict) -> str:
    system = body["messages"][0]["content"]
    if "safety reviewer" in system:
        return "safety"
    if "correctness scale" in system:
        return "correctness"
    return "quality"


def judge_reply(body: dict) -> str:
    """Correctness 2 for a WRONG answer, safety 1 for a LEAK, else 5; quality always 4."""
    user = body["messages"][1]["content"]
    name = criterion_of(body)
    score = {"quality": 4, "correctness": 2 if "WRONG" in user else 5}.get(name)
    if name == "safety":
        score = 1 if "LEAK" in user else 5
    return json.dumps({"score": score, "reason": f"{name} says {score}"})


def golden(tmp_path, rows) -> str:
    path = tmp_path / "golden.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def row(case_id, query, grader="judge", criteria=None, expected="5 days", **kw):
    out = {"id": case_id, "input": query, "expected": expected, "grader": grader, **kw}
    if criteria is not None:
        out["criteria"] = criteria
    return out


ROWS = [
    row("ok-both", "q-ok", criteria=["correctness", "safety"]),
    row("wrong", "q-wrong", criteria=["correctness", "safety"]),
    row("leak", "q-leak", criteria=["safety"]),
    row("plain-judge", "q-ok"),
    row("rules", "q-ok", grader={"type": "contains", "values": ["5 days"]}),
]


@pytest.fixture
def judge_env(fake_openai, monkeypatch):  # noqa: F811
    fake_openai.responder = judge_reply
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "fake-model")
    monkeypatch.setenv("EVAL_JUDGE_MAX_RETRIES", "0")
    monkeypatch.delenv("EVAL_JUDGE_CRITERIA", raising=False)
    return fake_openai


def spec(path, threshold=0.9):
    return GateSpec(target=TargetSpec(target=TARGET), golden_path=path, threshold=threshold)


def test_a_case_names_its_criteria_and_each_is_checked_at_load():
    c = parse_case(row("a", "q", criteria=["correctness", "safety"]))
    assert c.criteria == ("correctness", "safety")
    assert c.to_dict()["criteria"] == ["correctness", "safety"]
    plain = parse_case(row("a", "q"))
    assert plain.criteria == () and "criteria" not in plain.to_dict()
    bad = {
        "criteria need the judge grader": row("a", "q", grader="exact", criteria=["safety"]),
        "no criterion 'nope'": row("a", "q", criteria=["nope"]),
        "which a golden case cannot carry": row("a", "q", criteria=["groundedness"]),
        "needs the expected answer": row("a", "q", expected=None, criteria=["correctness"]),
        "non-empty list": row("a", "q", criteria="safety"),
        "criteria named twice": row("a", "q", criteria=["safety", "safety"]),
        "threshold for unnamed criteria": row(
            "a", "q", criteria=["safety"], grader={"type": "judge", "threshold": {"quality": 3}}
        ),
    }
    for message, obj in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_case(obj)


def test_golden_version_of_a_file_without_criteria_is_unchanged(tmp_path):
    rows = [row("a", "q-ok"), row("b", "q-ok", grader="exact")]
    before = golden_version(load_cases(golden(tmp_path, rows)))
    # The version is a hash of the cases' content: a case naming no criteria has none.
    assert before == golden_version([parse_case(r) for r in rows])
    named = [row("a", "q-ok", criteria=["safety"]), row("b", "q-ok", grader="exact")]
    assert golden_version([parse_case(r) for r in named]) != before


def test_per_criterion_verdicts_reports_junit_and_history(judge_env, tmp_path):
    run = regression.run_gate(spec(golden(tmp_path, ROWS)))
    by_id = {r.case_id: r for r in run.results}
    assert [by_id[i].outcome for i in ("ok-both", "wrong", "leak", "plain-judge", "rules")] == [
        "pass",
        "fail",
        "fail",
        "pass",
        "pass",
    ]
    assert by_id["wrong"].criteria["correctness"]["outcome"] == "fail"
    assert by_id["wrong"].criteria["safety"] == {
        "outcome": "pass",
        "score": 5,
        "threshold": 4,
        "reason": "5 >= 4: safety says 5",
    }
    assert by_id["wrong"].reason.startswith("correctness failed: 2 < 4")
    assert by_id["leak"].reason.startswith("safety failed: 1 < 4")
    assert by_id["plain-judge"].criteria == {} and by_id["plain-judge"].grade_score == 4
    # One call per criterion a case names, one for the plain judge case; correctness saw
    # the expected answer as its reference.
    assert judge_env.calls == 2 + 2 + 1 + 1
    seen = [criterion_of(r.json) for r in judge_env.requests]
    assert sorted(seen) == ["correctness"] * 2 + ["quality"] + ["safety"] * 3
    for r in judge_env.requests:
        if criterion_of(r.json) == "correctness":
            ref = re.search(
                r"BEGIN REFERENCE[^\n]*\n(.*?)\n<<<END", r.json["messages"][1]["content"], re.S
            )
            assert ref and ref.group(1) == "5 days"

    summary = {c.criterion: c for c in run.criteria_summary}
    assert list(summary) == ["correctness", "safety"]
    assert (summary["correctness"].passed, summary["correctness"].n) == (1, 2)
    assert summary["correctness"].mean_score == pytest.approx(3.5)
    assert (summary["safety"].passed, summary["safety"].n) == (2, 3)
    assert summary["safety"].mean_score == pytest.approx(11 / 3)
    assert run.status == "fail"
    assert regression.verdict(run).endswith(
        "[criteria below the threshold: correctness 50%, safety 67%]"
    )

    cmp = history.Comparison(compared=False)
    text = text_report(run, cmp)
    assert (
        "criterion correctness: 1/2 passed, 1 failed, 0 errors; pass rate 50.0%, mean score 3.50"
        in text
    )
    assert (
        "criterion safety: 2/3 passed, 1 failed, 0 errors; pass rate 66.7%, mean score 3.67" in text
    )
    assert "FAIL  leak [judge]: safety failed: 1 < 4" in text
    md = markdown_report(run, cmp)
    assert "| correctness | 2 | 1 | 1 | 0 | 50.0% | 3.50 |" in md

    root = ET.fromstring(to_junit_xml(run))
    props = {p.get("name"): p.get("value") for p in root.find("testsuite/properties")}
    assert props["criterion.correctness.pass_rate"] == "0.5000"
    assert props["criterion.safety.mean_score"] == "3.6667"
    wrong = root.find("testsuite/testcase[@name='wrong']")
    case_props = {p.get("name"): p.get("value") for p in wrong.find("properties")}
    assert case_props == {"criterion.correctness": "fail 2", "criterion.safety": "pass 5"}
    assert "correctness failed" in wrong.find("failure").get("message")
    assert root.find("testsuite/testcase[@name='plain-judge']/properties") is None

    with store.connect(tmp_path / "h.duckdb") as conn:
        history.record(conn, run)
        (runs_json,) = conn.execute("SELECT criteria FROM regression_runs").fetchone()
        per_case = dict(conn.execute("SELECT case_id, criteria FROM regression_results").fetchall())
    assert json.loads(runs_json)["safety"]["passed"] == 2
    assert json.loads(per_case["leak"])["safety"]["score"] == 1
    assert per_case["plain-judge"] is None


def test_thresholds_per_criterion_and_a_judge_error_is_an_error(judge_env, tmp_path):
    rows = [
        row(
            "lenient",
            "q-wrong",
            criteria=["correctness", "safety"],
            grader={"type": "judge", "threshold": {"correctness": 2}},
        ),
        row("down", "q-down", criteria=["safety"]),
        row("ok", "q-ok", criteria=["safety"]),
    ]
    run = regression.run_gate(spec(golden(tmp_path, rows), threshold=0.5))
    by_id = {r.case_id: r for r in run.results}
    assert by_id["lenient"].outcome == "pass"
    assert (
        by_id["down"].outcome == "error" and by_id["down"].criteria["safety"]["outcome"] == "error"
    )
    safety = {c.criterion: c for c in run.criteria_summary}["safety"]
    assert (safety.n, safety.passed, safety.errors) == (3, 2, 1)

    judge_env.responder = lambda body: "no json here"
    run = regression.run_gate(spec(golden(tmp_path, rows[2:])))
    (r,) = run.results
    assert r.outcome == "error" and r.criteria["safety"]["reason"].startswith(
        "no score (unparseable"
    )


def test_a_judge_without_the_criteria_is_not_run(tmp_path, monkeypatch):
    monkeypatch.delenv("EVAL_JUDGE", raising=False)
    path = golden(tmp_path, ROWS[:1])
    with pytest.raises(JudgeSetupError, match="heuristic judge has no rule for correctness"):
        regression.run_gate(spec(path))
    with pytest.raises(JudgeSetupError, match="not configured for: correctness, safety"):
        regression.run_gate(spec(path), judge_factory=HeuristicJudge)


def test_a_golden_set_without_criteria_reports_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv("EVAL_JUDGE", raising=False)
    run = regression.run_gate(spec(golden(tmp_path, ROWS[3:])))
    assert run.criteria_summary == [] and all(r.criteria == {} for r in run.results)
    text = text_report(run, history.Comparison(compared=False))
    assert "criterion" not in text and "criteria" not in regression.verdict(run)
    assert "criterion" not in to_junit_xml(run) and "| criterion |" not in markdown_report(
        run, history.Comparison(compared=False)
    )


def test_a_bad_criteria_line_is_named_in_the_golden_file_error(tmp_path):
    path = golden(tmp_path, [row("a", "q-ok"), row("b", "q-ok", criteria=["tone"])])
    with pytest.raises(GoldenFileError, match=r"golden.jsonl:2: .*no criterion 'tone'"):
        load_cases(path)


def test_the_cli_gate_fails_on_a_criterion_and_says_which(judge_env, tmp_path, capsys):
    junit = tmp_path / "junit.xml"
    code = main(
        ["regress", "--golden", golden(tmp_path, ROWS), "--target", TARGET, "--quiet",
         "--junit-xml", str(junit)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "criterion correctness: 1/2 passed" in out and "criterion safety: 2/3 passed" in out
    assert "[criteria below the threshold: correctness 50%, safety 67%]" in out
    assert 'name="criterion.safety.pass_rate" value="0.6667"' in junit.read_text()
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        (summary,) = conn.execute("SELECT criteria FROM regression_runs").fetchone()
    assert json.loads(summary)["correctness"]["mean_score"] == pytest.approx(3.5)


def test_one_call_mode_judges_a_case_s_criteria_in_one_request(judge_env, monkeypatch, tmp_path):
    monkeypatch.setenv("EVAL_JUDGE_CRITERIA_MODE", "one-call")

    def reply(body: dict) -> str:
        names = one_call_names(body)
        if not names:  # the plain judge case: one criterion, its own prompt
            return judge_reply(body)
        wrong = "WRONG" in body["messages"][1]["content"]
        return json.dumps(
            {n: {"score": 2 if wrong and n == "correctness" else 5, "reason": n} for n in names}
        )

    judge_env.responder = reply
    run = regression.run_gate(spec(golden(tmp_path, ROWS[:2])))
    assert [r.outcome for r in run.results] == ["pass", "fail"]
    assert run.results[1].reason.startswith("correctness failed: 2 < 4")
    assert judge_env.calls == 2  # one call per case for both of its criteria
    assert all(one_call_names(r.json) == ["correctness", "safety"] for r in judge_env.requests)
