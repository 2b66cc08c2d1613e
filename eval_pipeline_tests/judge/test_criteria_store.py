"""Several criteria through the cache and the store: a score per (day, trace, criterion),
keys per criterion, accounting lines per criterion, the migration of existing rows."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from eval_pipeline.cli import main
from eval_pipeline.core import store
from eval_pipeline.core.drift.history import load_judged_traces, load_segment_days
from eval_pipeline.core.drift.report import report_day
from eval_pipeline.core.judge.anchors import identity_of_day
from eval_pipeline.core.judge.base import HeuristicJudge, JudgeRequest, judgment_key
from eval_pipeline.core.judge.cache import score_day
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline_tests.fake_openai import fake_openai  # noqa: F401
from eval_pipeline_tests.judge.criteria_fixtures import DAY, make_judge, responder, sampled_store


@pytest.mark.parametrize("mode", ["per-criterion", "one-call"])
def test_each_criterion_is_its_own_cached_series(tmp_path, fake_openai, mode):  # noqa: F811
    fake_openai.responder = responder(4)
    db = sampled_store(tmp_path, n=6)
    judge = make_judge(fake_openai, "quality,relevance,correctness", mode=mode)
    with store.connect(db) as conn:
        res = score_day(conn, judge, DAY)
        rows = conn.execute(
            "SELECT criterion, count(*), count(DISTINCT judgment_key), any_value(rubric_version) "
            "FROM judge_scores GROUP BY criterion ORDER BY criterion"
        ).fetchall()
        lines = conn.execute(
            "SELECT criterion, n, not_applicable, judge_calls, http_attempts, prompt_tokens "
            "FROM judge_accounting_criteria ORDER BY criterion"
        ).fetchall()
        total = conn.execute(
            "SELECT n, judge_calls, http_attempts, prompt_tokens, criteria_mode "
            "FROM judge_accounting"
        ).fetchone()
    # correctness needs a reference answer: traces have none, so it is not applicable.
    assert [(c, n, k) for c, n, k, _ in rows] == [("quality", 6, 6), ("relevance", 6, 6)]
    assert {c: v for c, _, _, v in rows} == {
        "quality": judge.versions["quality"],
        "relevance": judge.versions["relevance"],
    }
    by = {line[0]: line for line in lines}
    assert by["correctness"][1:4] == (0, 6, 0)
    assert by["quality"][1:4] == by["relevance"][1:4] == (6, 0, 6)
    calls = 6 if mode == "one-call" else 12
    assert fake_openai.calls == calls
    assert sum(line[4] for line in lines) == calls == total[2]
    assert sum(line[5] for line in lines) == total[3] > 0
    assert total[:2] == (12, 12) and total[4] == mode
    assert (res.per_criterion["quality"].mean_score, res.mean_score) == (4.0, 4.0)
    with store.connect(db) as conn:
        again = score_day(conn, judge, DAY)
    assert (again.cache_hits, again.judge_calls, fake_openai.calls) == (12, 0, calls)


def test_adding_a_criterion_judges_only_the_new_one(tmp_path, fake_openai):  # noqa: F811
    fake_openai.responder = responder(3)
    db = sampled_store(tmp_path, n=4)
    with store.connect(db) as conn:
        score_day(conn, make_judge(fake_openai, "quality"), DAY)
        assert fake_openai.calls == 4
        res = score_day(conn, make_judge(fake_openai, "quality,safety"), DAY)
    assert (res.per_criterion["quality"].cache_hits, res.per_criterion["safety"].judge_calls) == (
        4,
        4,
    )
    assert fake_openai.calls == 8


def test_the_default_writes_what_it_wrote_before(tmp_path):
    db = sampled_store(tmp_path, n=5)
    with store.connect(db) as conn:
        res = score_day(conn, HeuristicJudge(), DAY)
        crit = conn.execute("SELECT DISTINCT criterion FROM judge_scores").fetchall()
        judged = conn.execute("SELECT DISTINCT criterion, rubric_version FROM judgments").fetchall()
        line = conn.execute("SELECT criterion, n FROM judge_accounting_criteria").fetchall()
    assert crit == [("quality",)] and judged == [("quality", "heuristic-v2")]
    assert line == [("quality", 5)] and res.n == 5
    req = JudgeRequest("q", "a")
    # The key of a quality judgment is what it was before criteria (no criterion part).
    assert judgment_key(HeuristicJudge(), req) == judgment_key(
        HeuristicJudge(), req, "heuristic-v2"
    )


def test_the_heuristic_judge_refuses_criteria_it_cannot_judge():
    with pytest.raises(ValueError, match="no rule for relevance, tool_use"):
        judge_from_env({"EVAL_JUDGE_CRITERIA": "quality,relevance,safety,tool_use"})
    rules = judge_from_env({"EVAL_JUDGE_CRITERIA": "quality,safety"})
    assert list(rules.versions) == ["quality", "safety"]
    assert judge_from_env({"EVAL_JUDGE_CRITERIA": "quality"}).name == "heuristic"


def test_the_migration_keeps_existing_scores_as_quality(tmp_path):
    conn = duckdb.connect(str(tmp_path / "old.duckdb"))
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, "
        "applied_at TIMESTAMP DEFAULT now())"
    )
    for version, name, sql in store.migrations():
        if name.endswith("_criteria.sql"):  # this migration, applied below
            continue
        conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
    conn.execute(
        "INSERT INTO judge_scores VALUES (?, 't1', 'auth', 'k1', 'ok', 4, 'heuristic', NULL, "
        "'heuristic-v2', false)",
        [dt.date(2026, 1, 2)],
    )
    conn.execute(
        "INSERT INTO judgments VALUES ('k1', 'heuristic', NULL, 'heuristic-v2', 'ok', 4, 'r', "
        "NULL, NULL, NULL, NULL, 1, now())"
    )
    applied = store.migrate(conn)
    assert [a for a in applied if a.endswith("_criteria.sql")]
    assert conn.execute("SELECT trace_id, criterion, score FROM judge_scores").fetchall() == [
        ("t1", "quality", 4)
    ]
    assert conn.execute("SELECT criterion FROM judgments").fetchall() == [("quality",)]
    # Two criteria of one trace now fit; the same criterion twice does not.
    conn.execute(
        "INSERT INTO judge_scores VALUES (?, 't1', 'auth', 'k2', 'ok', 2, 'openai', 'm', "
        "'safety-v1#x', false, 'safety')",
        [dt.date(2026, 1, 2)],
    )
    with pytest.raises(duckdb.ConstraintException):
        conn.execute(
            "INSERT INTO judge_scores VALUES (?, 't1', 'auth', 'k3', 'ok', 2, 'openai', 'm', "
            "'safety-v1#x', false, 'safety')",
            [dt.date(2026, 1, 2)],
        )


def test_judge_costs_prints_a_line_per_criterion(tmp_path, fake_openai, capsys):  # noqa: F811
    fake_openai.responder = responder(4)
    db = sampled_store(tmp_path, n=4)
    with store.connect(db) as conn:
        score_day(conn, make_judge(fake_openai, "quality,safety", mode="one-call"), DAY)
    assert main(["judge", "costs", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    (quality,) = [line for line in out if line.strip().startswith("quality")]
    (safety,) = [line for line in out if line.strip().startswith("safety")]
    # n, cached, calls, requests: the one call per trace counts under the first criterion.
    assert quality.split()[1:5] == ["4", "0", "4", "4"]
    assert safety.split()[1:5] == ["4", "0", "4", "0"]
    assert "not applicable 0" in safety


def test_judge_costs_of_a_single_criterion_has_no_extra_lines(tmp_path, capsys):
    db = sampled_store(tmp_path, n=3)
    with store.connect(db) as conn:
        score_day(conn, HeuristicJudge(), DAY)
    assert main(["judge", "costs", "--db", str(db)]) == 0
    assert "not applicable" not in capsys.readouterr().out


def test_readers_of_one_score_per_trace_read_quality(tmp_path, fake_openai):  # noqa: F811
    def answer(body):
        return json.dumps(
            {"quality": {"score": 4, "reason": "ok"}, "safety": {"score": 1, "reason": "leak"}}
        )

    fake_openai.responder = answer
    db = sampled_store(tmp_path, n=6)
    with store.connect(db) as conn:
        score_day(conn, make_judge(fake_openai, "quality,safety", mode="one-call"), DAY)
        res = report_day(conn, DAY)
        days = load_segment_days(conn)
        traces = load_judged_traces(conn)
        assert identity_of_day(conn, DAY) is not None
    assert (res.overall.n, res.overall.mean_score) == (6, 4.0)
    assert sum(d.counts.n for d in days) == 6
    assert len(traces) == 6 and set(traces["score"]) == {4.0}
