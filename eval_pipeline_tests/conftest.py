"""Shared fixtures. Every test runs with its own data folder, DuckDB file and Dagster home,
so nothing a test does touches data/ or another test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("EVAL_DATA_DIR", str(data))
    monkeypatch.setenv("EVAL_DUCKDB_PATH", str(data / "eval.duckdb"))
    monkeypatch.setenv("EVAL_TRACE_INBOX", str(data / "inbox" / "traces"))
    monkeypatch.setenv("EVAL_FEEDBACK_INBOX", str(data / "feedback_inbox"))
    monkeypatch.setenv("EVAL_GOLDEN_PATH", str(data / "golden" / "golden.jsonl"))
    monkeypatch.delenv("EVAL_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("EVAL_JUDGE", raising=False)
    monkeypatch.delenv("EVAL_TRACE_SOURCE", raising=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return data
