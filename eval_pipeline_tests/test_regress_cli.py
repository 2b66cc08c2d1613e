"""`eval-pipeline regress` end to end: exit codes for pass, fail and outage; JUnit XML a
JUnit parser accepts; history and newly failing / newly passing across runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from eval_pipeline import settings
from eval_pipeline.cli import main
from eval_pipeline.core import regression, store
from eval_pipeline.demo_app import answer as demo_answer
from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault

DEMO_GOLDEN = str(settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl")
DEMO = "eval_pipeline.demo_app:answer"
SECRET = "sk-regress-secret-987"


@pytest.fixture
def fake():
    with FakeOpenAIServer() as server:
        yield server


def regress(*args, golden=DEMO_GOLDEN):
    return main(["regress", "--golden", golden, "--quiet", *args])


def db_rows(sql, params=()):
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        return conn.execute(sql, list(params)).fetchall()


def test_pass_then_regression_exit_codes_history_and_newly_failing(capsys, tmp_path):
    assert regress("--target", DEMO, "--deploy-id", "good-1") == 0
    out = capsys.readouterr().out
    assert "pass rate 100.0%" in out and "verdict: PASS" in out

    code = regress(
        "--target",
        DEMO,
        "--arg",
        "prompt_path=regressed",
        "--deploy-id",
        "bad-2",
        "--junit-xml",
        str(tmp_path / "junit.xml"),
        "--markdown",
        str(tmp_path / "summary.md"),
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL  billing-refund-time [contains]: missing" in out
    assert "since the previous run (deploy good-1): 8 newly failing, 0 newly passing" in out
    assert "verdict: FAIL" in out

    runs = db_rows(
        "SELECT deploy_id, target, golden_version, pass_rate, status, newly_failing "
        "FROM regression_runs ORDER BY finished_at"
    )
    assert [(r[0], r[4]) for r in runs] == [("good-1", "pass"), ("bad-2", "fail")]
    assert runs[1][1] == DEMO and runs[1][3] == pytest.approx(24 / 32) and runs[1][5] == 8
    assert len(runs[0][2]) == 16 and runs[0][2] == runs[1][2]
    per_case = db_rows(
        "SELECT outcome, count(*) FROM regression_results r JOIN regression_runs USING (run_id) "
        "WHERE deploy_id = 'bad-2' GROUP BY 1 ORDER BY 1"
    )
    assert per_case == [("fail", 8), ("pass", 24)]
    md = (tmp_path / "summary.md").read_text()
    assert "**75.0%**" in md and "**Newly failing:**" in md and "`billing-invoice`" in md

    # Back to the good prompt: the eight billing cases are newly passing.
    assert regress("--target", DEMO, "--deploy-id", "good-3") == 0
    out = capsys.readouterr().out
    assert "since the previous run (deploy bad-2): 0 newly failing, 8 newly passing" in out


def test_junit_xml_is_accepted_by_junit_parsers(tmp_path):
    path = tmp_path / "out" / "junit.xml"
    regress("--target", DEMO, "--arg", "prompt_path=regressed", "--junit-xml", str(path))
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("32", "8", "0")
    testcases = suite.findall("testcase")
    assert len(testcases) == 32
    failed = [tc for tc in testcases if tc.find("failure") is not None]
    assert {tc.get("classname") for tc in failed} == {"golden.billing"}
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["status"] == "fail" and props["pass_rate"] == "0.7500"

    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1 and suites[0].tests == 32 and suites[0].failures == 8
    results = {case.name: case.result for case in suites[0]}
    assert results["billing-invoice"] and isinstance(
        results["billing-invoice"][0], junitparser.Failure
    )
    assert results["shipping-time"] == []


def test_http_target_pass_fail_and_outage(fake, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("EVAL_TARGET_API_KEY", SECRET)
    prompt = {"path": "good"}
    fake.responder = lambda body: demo_answer(body["messages"], prompt_path=prompt["path"])
    system = tmp_path / "system.txt"
    system.write_text("You are Acme's support bot.")
    args = [
        "--target",
        fake.base_url,
        "--model",
        "demo",
        "--system-prompt-file",
        str(system),
        "--retries",
        "1",
        "--timeout",
        "2",
        "--junit-xml",
        str(tmp_path / "j.xml"),
    ]
    assert regress(*args) == 0
    assert fake.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert fake.chat_requests[0].json["messages"][0]["content"] == "You are Acme's support bot."

    prompt["path"] = "regressed"
    assert regress(*args) == 1

    # The service goes down: every call is a 500. Not a regression, not a pass: exit 3.
    fake.responder = lambda body: Fault.status(500)
    assert regress(*args) == regression.EXIT_NOT_RUN
    out = capsys.readouterr().out
    assert "32 errors" in out and "NOT RUN (outage" in out
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.get("errors") == "32" and root.get("failures") == "0"

    # The outage is recorded but is not the baseline of the next comparison.
    fake.responder = lambda body: demo_answer(body["messages"], prompt_path="good")
    assert regress(*args) == 0
    out = capsys.readouterr().out
    assert "8 newly passing" in out  # compared with the regressed run, not the outage
    statuses = [r[0] for r in db_rows("SELECT status FROM regression_runs ORDER BY finished_at")]
    assert statuses == ["pass", "fail", "outage", "pass"]

    # The API key never reaches output, files or the store.
    everything = (
        out
        + (tmp_path / "j.xml").read_text()
        + json.dumps(db_rows("SELECT * FROM regression_results"), default=str)
        + json.dumps(db_rows("SELECT * FROM regression_runs"), default=str)
    )
    assert SECRET not in everything


def test_a_few_errors_count_against_the_pass_rate_but_are_listed_apart(fake, capsys):
    fake.responder = lambda body: demo_answer(body["messages"])
    fake.script(*[Fault.status(500)] * 8)  # the first four cases fail twice each
    code = regress(
        "--target", fake.base_url, "--model", "m", "--retries", "1", "--concurrency", "1"
    )
    out = capsys.readouterr().out
    assert "28 passed, 0 failed, 4 errors" in out
    assert out.count("ERROR ") == 4 and "call failed: HTTP 500" in out
    assert code == 1  # 28/32 = 87.5% < 90%, and 4/32 errors is not an outage


def test_bad_golden_file_and_bad_target_exit_3(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "input": "q", "expected": null, "grader": {"type": "regex", "pattern": "("}}\n'
        "not json\n"
    )
    assert regress("--target", DEMO, golden=str(bad)) == regression.EXIT_NOT_RUN
    err = capsys.readouterr().err
    assert f"{bad}:1:" in err and f"{bad}:2:" in err and "bad golden file" in err
    assert regress("--target", "no_such_module_xyz:f") == regression.EXIT_NOT_RUN
    assert regress("--target", "http://127.0.0.1:1/v1") == regression.EXIT_NOT_RUN  # no model
    assert regress("--target", DEMO, "--arg", "novalue") == regression.EXIT_NOT_RUN
    assert not settings.duckdb_path().exists()  # nothing was run, nothing recorded


def test_threshold_and_no_store(capsys):
    assert (
        regress(
            "--target", DEMO, "--arg", "prompt_path=regressed", "--threshold", "0.7", "--no-store"
        )
        == 0
    )
    assert "no previous completed run" in capsys.readouterr().out
    assert not settings.duckdb_path().exists()


def test_judge_mean_is_recorded_as_the_drift_baseline():
    assert regress("--target", DEMO, "--judge-all", "--deploy-id", "d1") == 0
    with store.connect(settings.duckdb_path()) as conn:
        base = regression.latest_baseline(conn, DEMO)
        assert regression.latest_baseline(conn, "other-target") is None
    assert base["deploy_id"] == "d1" and base["judge_name"] == "heuristic"
    assert base["judge_n"] == 32 and 1 <= base["judge_mean"] <= 5
