"""Phoenix down, erroring or slow: the day's partition fails loudly and nothing is written;
and while Phoenix is answering, the assets do not hold the DuckDB store.

A tiny HTTP server on 127.0.0.1 stands in for Phoenix (it serves a real span page captured
from Phoenix 20.26.1, or 500s, or hangs); "down" is a port nothing listens on. The daily
assets run through Dagster with EVAL_TRACE_SOURCE=phoenix. Needs no Phoenix install.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.defs.drift_loop import judge_scores, raw_traces, sampled_traces
from eval_pipeline.defs.phoenix import judge_annotations
from eval_pipeline.defs.resources import EvalStore, JudgeResource, TraceSourceResource
from eval_pipeline_tests.sources.phoenix_fixtures import free_port

# A real page captured from Phoenix (recorded on 2026-11-28), moved to a past day so its
# daily partition exists whatever the clock says.
DAY = "2026-03-10"
PAGE = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "phoenix" / "spans_page1_response.json")
    .read_text()
    .replace('"2026-11-28T', f'"{DAY}T')
)
ASSETS = [raw_traces, sampled_traces, judge_scores, judge_annotations]
RESOURCES = {"store": EvalStore(), "trace_source": TraceSourceResource(), "judge": JudgeResource()}


class FakePhoenix:
    """mode: "ok" (one page of spans), "500" (always), "hang" (answers too late)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits = 0
        # Called with "GET" / "POST" while a request is being answered (before the answer).
        self.on_request: Callable[[str], None] | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.hits += 1
                if fake.on_request:
                    fake.on_request("GET")
                if fake.mode == "500":
                    self._send(500, b"Internal Server Error", "text/plain")
                elif fake.mode == "hang":
                    time.sleep(1.5)
                    self._send(200, b'{"data": [], "next_cursor": null}', "application/json")
                else:
                    body = {"data": PAGE["data"], "next_cursor": None}
                    self._send(200, json.dumps(body).encode(), "application/json")

            def do_POST(self) -> None:
                fake.hits += 1
                length = int(self.headers.get("content-length") or 0)
                data = json.loads(self.rfile.read(length))["data"]
                if fake.on_request:
                    fake.on_request("POST")
                out = {"data": [{"id": f"ann-{d['span_id']}"} for d in data]}
                self._send(200, json.dumps(out).encode(), "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # the client may have given up (timeout test)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_phoenix(monkeypatch):
    fake = FakePhoenix()
    monkeypatch.setenv("EVAL_TRACE_SOURCE", "phoenix")
    monkeypatch.setenv("EVAL_PHOENIX_URL", fake.url)
    monkeypatch.setenv("EVAL_PHOENIX_PROJECT", "shop")
    monkeypatch.setenv("EVAL_PHOENIX_RETRIES", "2")
    monkeypatch.setenv("EVAL_PHOENIX_BACKOFF", "0.05")
    yield fake
    fake.stop()


def run(instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS, resources=RESOURCES, instance=instance, partition_key=DAY, raise_on_error=False
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "raw_traces"
    return str(failure.event_specific_data.error)


def day_state() -> tuple:
    path = settings.duckdb_path()
    if not path.exists():
        # Phoenix is read before the store is opened: a failed read never even creates it.
        return ([], 0, 0, 0)
    with store.connect(path, read_only=True) as conn:
        return (
            conn.execute("SELECT rows_seen, rows_ingested FROM trace_ingests").fetchall(),
            conn.execute("SELECT count(*) FROM raw_traces").fetchone()[0],
            conn.execute("SELECT count(*) FROM judge_scores").fetchone()[0],
            conn.execute("SELECT count(*) FROM drift_reports").fetchone()[0],
        )


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def test_erroring_phoenix_fails_the_day_and_keeps_what_was_there(fake_phoenix):
    instance = dg.DagsterInstance.ephemeral()
    ok = run(instance)
    assert ok.success
    before = day_state()
    assert before[:3] == ([(7, 7)], 7, 7)
    annotated = materialized(ok)
    assert "judge_annotations" in annotated

    fake_phoenix.mode = "500"
    fake_phoenix.hits = 0
    result = run(instance)
    assert not result.success
    text = failure_text(result)
    assert "did not answer" in text and "after 3 attempts: HTTP 500" in text
    assert fake_phoenix.hits == 3
    # Nothing downstream ran and the day was not replaced by a zero-trace day.
    assert materialized(result) == set()
    assert day_state() == before


def test_nothing_listening_fails_the_day_and_writes_nothing(fake_phoenix, monkeypatch):
    monkeypatch.setenv("EVAL_PHOENIX_URL", f"http://127.0.0.1:{free_port()}")
    result = run(dg.DagsterInstance.ephemeral())
    assert not result.success
    assert "could not connect" in failure_text(result)
    assert materialized(result) == set()
    assert day_state() == ([], 0, 0, 0)


def test_slow_phoenix_times_out_and_fails_the_day(fake_phoenix, monkeypatch):
    fake_phoenix.mode = "hang"
    monkeypatch.setenv("EVAL_PHOENIX_TIMEOUT", "0.3")
    monkeypatch.setenv("EVAL_PHOENIX_RETRIES", "1")
    result = run(dg.DagsterInstance.ephemeral())
    assert not result.success
    assert "timed out after 0.3 s" in failure_text(result)
    assert day_state() == ([], 0, 0, 0)


def test_jsonl_days_make_judge_annotations_a_clean_no_op(monkeypatch):
    inbox = settings.trace_inbox()
    inbox.mkdir(parents=True)
    (inbox / f"{DAY}.jsonl").write_text(
        json.dumps(
            {
                "trace_id": "t1",
                "timestamp": f"{DAY}T10:00:00Z",
                "user_query": "How do I reset my password?",
                "assistant_response": "Go to Settings, then click Reset password.",
            }
        )
        + "\n"
    )
    # Phoenix settings point nowhere: they must not even be read.
    monkeypatch.setenv("EVAL_PHOENIX_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("EVAL_PHOENIX_SPAN_KINDS", "NOT_A_KIND")
    result = run(dg.DagsterInstance.ephemeral())
    assert result.success
    [mat] = result.asset_materializations_for_node("judge_annotations")
    assert "no judgments of Phoenix-sourced traces" in mat.metadata["note"].value
    assert "trace source: jsonl" in mat.metadata["note"].value


def test_cli_check_and_annotation_status(fake_phoenix, capsys):
    from eval_pipeline.cli import main

    assert main(["phoenix", "check", "--day", DAY]) == 0
    out = capsys.readouterr().out
    assert "7 spans in 1 pages" in out and "traces:   7" in out
    assert "query:  'What is 19 + 19?'" in out
    assert run(dg.DagsterInstance.ephemeral()).success
    assert main(["phoenix", "annotations"]) == 0
    assert capsys.readouterr().out.startswith("sent           7")
    fake_phoenix.mode = "500"
    assert main(["phoenix", "check", "--day", DAY]) == 1
    assert "FAILED: Phoenix at" in capsys.readouterr().out


# DuckDB's file lock is per process: another connection in this process would share the
# lock, so the probe is a separate Python process opening the file read-write.
PROBE = "import sys, duckdb; duckdb.connect(sys.argv[1]).close()"


def probe_store(path: Path) -> tuple[bool, str]:
    """(whether another process could open the store read-write now, its error if not)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=60
    )
    return proc.returncode == 0, proc.stderr.strip()[-300:]


def test_the_store_is_not_held_while_phoenix_answers(fake_phoenix):
    path = settings.duckdb_path()
    with store.connect(path) as conn:
        # The probe can tell: while this process holds the store, it cannot connect.
        held, error = probe_store(path)
        assert not held and "lock" in error.lower()
        conn.execute("SELECT 1")
    probes: list[tuple[str, bool, str]] = []
    fake_phoenix.on_request = lambda method: probes.append((method, *probe_store(path)))

    result = run(dg.DagsterInstance.ephemeral())

    assert result.success
    # one span page, one page of part spans (retrievers, tools), one annotation batch
    assert [m for m, _, _ in probes] == ["GET", "GET", "POST"]
    assert [(m, ok) for m, ok, _ in probes] == [("GET", True), ("GET", True), ("POST", True)]
    [mat] = result.asset_materializations_for_node("judge_annotations")
    assert mat.metadata["annotations_sent"].value == 7
    assert day_state()[:2] == ([(7, 7)], 7)
