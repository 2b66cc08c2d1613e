"""`eval-pipeline judge check|costs` against the fake OpenAI server."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from eval_pipeline import settings
from eval_pipeline.cli import main
from eval_pipeline.core import store
from eval_pipeline.core.judge import cache as scoring
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline_tests.fake_openai import Fault, fake_openai  # noqa: F401


def point_at(monkeypatch, server) -> None:
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", server.base_url)
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "cli-model")
    monkeypatch.setenv("EVAL_JUDGE_API_KEY", "sk-cli-secret")
    monkeypatch.setenv("EVAL_JUDGE_MAX_RETRIES", "0")
    monkeypatch.setenv("EVAL_JUDGE_PRICE_PROMPT_PER_1K", "0.01")


def test_check_reports_an_ok_judgment(monkeypatch, capsys, fake_openai):  # noqa: F811
    point_at(monkeypatch, fake_openai)
    assert main(["judge", "check"]) == 0
    out = capsys.readouterr().out
    assert "state:          ok" in out and "score:          4" in out
    assert "cli-model" in out and "structured out: json_schema" in out
    assert "sk-cli-secret" not in out


def test_check_fails_with_the_reason(monkeypatch, capsys, fake_openai):  # noqa: F811
    point_at(monkeypatch, fake_openai)
    fake_openai.script(Fault.status(401))
    assert main(["judge", "check", "--query", "q", "--response", "a"]) == 1
    assert "http_error: HTTP 401" in capsys.readouterr().out


def test_check_names_a_configuration_error(monkeypatch, capsys):
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.delenv("EVAL_JUDGE_BASE_URL", raising=False)
    assert main(["judge", "check"]) == 2
    assert "EVAL_JUDGE_BASE_URL" in capsys.readouterr().out


def test_costs_lists_the_accounting_rows(monkeypatch, capsys, fake_openai):  # noqa: F811
    point_at(monkeypatch, fake_openai)
    day = dt.date(2026, 3, 1)
    raw = pd.DataFrame(
        {
            "partition_date": day,
            "trace_id": ["a", "b", "c"],
            "ts": pd.Timestamp("2026-03-01"),
            "user_query": ["q1", "q2", "q2"],
            "assistant_response": ["r1", "r2", "r2"],
            "segment": "s",
            "source": "test",
        }
    )
    with store.connect(settings.duckdb_path()) as conn:
        conn.register("_raw", raw)
        cols = ", ".join(raw.columns)
        conn.execute(f"INSERT INTO raw_traces ({cols}) SELECT {cols} FROM _raw")
        conn.execute(
            "INSERT INTO sampled_traces SELECT partition_date, trace_id, segment, 3, 3 FROM _raw"
        )
        fake_openai.script("ok", Fault.content("nope"), Fault.content("still nope"))
        res = scoring.score_day(conn, judge_from_env(), day)
    assert (res.n, res.judge_calls, res.http_attempts) == (3, 2, 3)
    assert main(["judge", "costs"]) == 0
    out = capsys.readouterr().out
    assert "2026-03-01" in out and "openai/cli-model" in out
    # Which pair got the garbage depends on request order; the duplicate pair counts twice.
    assert "unparseable/invalid_output" in out
    assert "1 days, 2 judge calls, 0 cache hits, estimated cost" in out


def test_costs_without_a_store_says_so(capsys, tmp_path):
    assert main(["judge", "costs", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "no judge accounting" in capsys.readouterr().out
