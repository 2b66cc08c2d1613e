"""`eval-pipeline regress` end to end: exit codes for pass, fail and outage; JUnit XML a
JUnit parser accepts; history and newly failing / newly passing across runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import duckdb
import pytest

from eval_pipeline import settings
from eval_pipeline.cli import main
from eval_pipeline.core import store
from eval_pipeline.core.regression import gate as regression
from eval_pipeline.core.regression import history
from eval_pipeline.core.regression.history import latest_baseline
from eval_pipeline.demo.app import answer as demo_answer
from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault

DEMO_GOLDEN = str(settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl")
DEMO = "eval_pipeline.demo.app:answer"
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
    # ...and the verdict says the shortfall is the errors, not the model.
    assert (
        "verdict: FAIL (below threshold: 0 wrong answers, 4 errors (4 calls failed); "
        "without the errors it would pass: check the service before the model)"
    ) in out


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
    assert "history not compared" in capsys.readouterr().out
    assert not settings.duckdb_path().exists()


def test_judge_mean_is_recorded_as_the_drift_baseline(capsys, tmp_path):
    xml = tmp_path / "junit.xml"
    assert (
        regress("--target", DEMO, "--judge-all", "--deploy-id", "d1", "--junit-xml", str(xml)) == 0
    )
    # No labels for this judge: the report says it is unvalidated; the gate still passes.
    out = capsys.readouterr().out
    assert "judge heuristic||heuristic-v2: unvalidated (0 labels;" in out
    assert "WARNING: UNVALIDATED JUDGE" in out and "verdict: PASS" in out
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).iter("property")}
    assert props["judge_trust_status"] == "unvalidated"
    assert props["judge_trust"].startswith("judge heuristic||heuristic-v2: unvalidated")
    with store.connect(settings.duckdb_path()) as conn:
        base = latest_baseline(conn, DEMO)
        assert latest_baseline(conn, "other-target") is None
    assert base["deploy_id"] == "d1" and base["judge_name"] == "heuristic"
    assert base["judge_n"] == 32 and 1 <= base["judge_mean"] <= 5


def test_a_key_echoed_in_error_bodies_is_nowhere_in_the_outputs(
    fake, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("EVAL_TARGET_API_KEY", SECRET)
    fake.responder = lambda body: demo_answer(body["messages"])
    message = f"Incorrect API key provided: {SECRET}. Sent: Authorization: Bearer {SECRET}"
    fake.script(*[Fault.status(401, body={"error": {"message": message}})] * 4)
    junit, md = tmp_path / "j.xml", tmp_path / "summary.md"
    code = regress(
        "--target",
        fake.base_url,
        "--model",
        "m",
        "--concurrency",
        "1",
        "--junit-xml",
        str(junit),
        "--markdown",
        str(md),
    )
    assert code == 1  # 28 of 32: 4 errors, not an outage
    captured = capsys.readouterr()
    assert "call failed: HTTP 401: Incorrect API key provided: [redacted]" in captured.out
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        dumped = json.dumps(
            {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}, default=str
        )
    assert "regression_results" in tables and "[redacted]" in dumped
    everything = captured.out + captured.err + junit.read_text() + md.read_text() + dumped
    assert SECRET not in everything and "very-secret" not in everything.replace(SECRET, "")


def test_a_misconfigured_judge_is_not_run_with_one_clear_line(capsys, monkeypatch):
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.delenv("EVAL_JUDGE_BASE_URL", raising=False)
    assert regress("--target", DEMO, "--judge-all") == regression.EXIT_NOT_RUN
    err = capsys.readouterr().err
    assert "NOT RUN: the judge cannot be built" in err and "EVAL_JUDGE_BASE_URL" in err
    assert "Traceback" not in err
    assert not settings.duckdb_path().exists()  # stopped before calling the target


def test_an_unexpected_crash_is_not_run_and_verbose_shows_the_traceback(capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("grading blew up\nsecond line")

    monkeypatch.setattr(regression, "execute", boom)
    assert regress("--target", DEMO) == regression.EXIT_NOT_RUN
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "regress: NOT RUN: running the golden set failed: RuntimeError: grading blew up "
        "(--verbose for the traceback)"
    ]
    assert regress("--target", DEMO, "--verbose") == regression.EXIT_NOT_RUN
    err = capsys.readouterr().err
    assert "Traceback" in err and "NOT RUN: running the golden set failed" in err


def test_an_unwritable_report_path_is_not_run_but_the_verdict_is_shown(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = regress("--target", DEMO, "--junit-xml", str(blocker / "junit.xml"))
    assert code == regression.EXIT_NOT_RUN
    captured = capsys.readouterr()
    assert "verdict: PASS" in captured.out  # the run itself completed
    assert f"NOT RUN: writing the JUnit XML to {blocker / 'junit.xml'} failed" in captured.err
    assert "the cases ran (verdict: pass) but the file is missing" in captured.err
    code = regress("--target", DEMO, "--markdown", str(blocker / "summary.md"))
    assert code == regression.EXIT_NOT_RUN
    assert "writing the markdown summary to" in capsys.readouterr().err


def test_a_store_write_failure_is_not_run(capsys, monkeypatch, tmp_path):
    def locked(conn, run):
        raise duckdb.IOException('IO Error: Could not set lock on file "eval.duckdb"')

    monkeypatch.setattr(history, "record", locked)
    junit = tmp_path / "j.xml"
    code = regress("--target", DEMO, "--arg", "prompt_path=regressed", "--junit-xml", str(junit))
    assert code == regression.EXIT_NOT_RUN  # not 1: the history is missing
    captured = capsys.readouterr()
    assert "verdict: FAIL" in captured.out and junit.exists()
    assert "NOT RUN: recording the run in DuckDB failed: IOException: IO Error: " in captured.err
    assert "the cases ran (verdict: fail) but the run is not in the history" in captured.err
    assert "Traceback" not in captured.err


def test_the_drift_baseline_comes_from_passing_runs_only():
    assert regress("--target", DEMO, "--judge-all", "--deploy-id", "good") == 0
    assert (
        regress(
            "--target", DEMO, "--judge-all", "--deploy-id", "bad", "--arg", "prompt_path=regressed"
        )
        == 1
    )
    with store.connect(settings.duckdb_path()) as conn:
        base = latest_baseline(conn, DEMO)
    assert base["deploy_id"] == "good"  # the rejected deploy is the latest run, not the baseline
