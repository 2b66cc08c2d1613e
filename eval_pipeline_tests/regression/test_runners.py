"""Runners: the OpenAI-compatible HTTP runner against a real server on 127.0.0.1, and the
Python callable runner. Good answers, slow answers, 500s, 429s, timeouts, garbage."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from eval_pipeline.core.regression import runners
from eval_pipeline.core.regression.runners import CallableRunner, HttpChatRunner, RunnerConfigError
from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault

SECRET = "sk-test-very-secret-123"


@pytest.fixture
def fake():
    """A real OpenAI-compatible server on 127.0.0.1, stopped after the test."""
    with FakeOpenAIServer() as server:
        yield server


def echo(body: dict) -> str:
    return "echo: " + body["messages"][-1]["content"]


def http_runner(server, **kw) -> HttpChatRunner:
    kw.setdefault("retries", 2)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff_base", 0.01)
    return HttpChatRunner(base_url=server.base_url, model="demo-model", **kw)


def test_good_answers_in_order_with_model_system_prompt_and_bearer_token(
    fake,
    monkeypatch,
):
    monkeypatch.setenv("EVAL_TARGET_API_KEY", SECRET)
    fake.responder = echo
    runner = http_runner(fake, system_prompt="Be brief.", concurrency=4)
    inputs = [f"question {i}" for i in range(10)] + [
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "last"},
        ]
    ]
    calls = runner.run_many(inputs)
    assert [c.output for c in calls[:10]] == [f"echo: question {i}" for i in range(10)]
    assert calls[10].output == "echo: last"
    assert all(c.ok and c.attempts == 1 for c in calls)
    req = fake.chat_requests[0]
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.json["model"] == "demo-model"
    assert req.json["messages"][0] == {"role": "system", "content": "Be brief."}
    multi = [r for r in fake.chat_requests if r.json["messages"][-1]["content"] == "last"][0]
    assert [m["role"] for m in multi.json["messages"]] == ["system", "user", "assistant", "user"]
    assert SECRET not in repr(runner)
    assert runner.target == f"{fake.base_url}#demo-model"


def test_no_authorization_header_without_a_key(fake, monkeypatch):
    monkeypatch.delenv("EVAL_TARGET_API_KEY", raising=False)
    http_runner(fake).run_many(["q"])
    assert "authorization" not in fake.chat_requests[0].headers


def test_slow_answers_within_the_timeout_succeed_concurrently_within_the_bound():
    with FakeOpenAIServer(latency=1.0, responder=echo) as server:
        runner = http_runner(server, concurrency=8, timeout=5.0)
        done = []
        calls = runner.run_many(
            [f"q{i}" for i in range(8)], progress=lambda d, t, c: done.append(d)
        )
        assert all(c.ok for c in calls)
        assert sorted(done) == list(range(1, 9))
        # The server saw all 8 calls at once (one at a time, it would never see two).
        assert server.max_in_flight == 8

        server.reset()
        server.max_in_flight = 0
        server.latency = 0.3
        calls = http_runner(server, concurrency=3).run_many([f"q{i}" for i in range(9)])
        assert all(c.ok for c in calls)
        assert server.max_in_flight == 3  # overlapped, and never past the bound


def test_500_is_retried_then_succeeds(fake):
    fake.responder = echo
    fake.script(Fault.status(500), Fault.status(503), "ok")
    [call] = http_runner(fake).run_many(["q"])
    assert call.ok and call.output == "echo: q" and call.attempts == 3


def test_persistent_500_is_an_error_after_the_retry_budget(fake):
    fake.responder = lambda body: Fault.status(500)
    [call] = http_runner(fake, retries=2).run_many(["q"])
    assert not call.ok and call.output is None
    assert "HTTP 500" in call.error and "after 3 attempts" in call.error
    assert fake.calls == 3


def test_429_honours_retry_after(fake):
    fake.script(Fault.status(429, retry_after=0.2), "plain answer")
    [call] = http_runner(fake).run_many(["q"])
    assert call.output == "plain answer" and call.attempts == 2
    first, second = fake.chat_requests
    assert second.received_at - first.received_at >= 0.2


def test_4xx_is_not_retried(fake):
    fake.script(Fault.status(401))
    [call] = http_runner(fake).run_many(["q"])
    assert "HTTP 401" in call.error and call.attempts == 1
    assert fake.calls == 1


def test_a_key_echoed_by_the_server_is_scrubbed_from_every_error(fake, monkeypatch):
    monkeypatch.setenv("EVAL_TARGET_API_KEY", SECRET)
    fake.script(
        Fault.status(401, body={"error": {"message": f"Incorrect API key provided: {SECRET}."}}),
        Fault.status(403, body={"error": {"message": f"bad header: Bearer {SECRET}"}}),
        # Truncating to 200 characters before scrubbing would leave half the key.
        Fault.body("x" * 190 + SECRET, status=400),
        Fault.body(f"<html>your key {SECRET} is not allowed</html>"),  # malformed 200
        Fault.status(500, body={"error": {"message": f"upstream rejected {SECRET}"}}),
    )
    calls = http_runner(fake, retries=0, concurrency=1).run_many(list("abcde"))
    errors = [c.error or "" for c in calls]
    assert [e.split(":")[0] for e in errors] == [
        "HTTP 401",
        "HTTP 403",
        "HTTP 400",
        "malformed response (no choices[0].message.content)",
        "HTTP 500",
    ]
    for error in errors:
        assert "sk-test" not in error and "very-secret" not in error, error
    assert errors[0] == "HTTP 401: Incorrect API key provided: [redacted]."
    assert errors[1] == "HTTP 403: bad header: Bearer [redacted]"
    assert errors[2] == "HTTP 400: " + "x" * 190 + "[redacted]"
    assert "your key [redacted] is not allowed" in errors[3]


def test_timeouts_become_errors(fake):
    fake.responder = echo
    fake.script(Fault.hang(5), Fault.hang(5))
    [call] = http_runner(fake, timeout=0.3, retries=1).run_many(["q"])
    assert not call.ok and "timed out after 0.3s" in call.error and call.attempts == 2
    fake.script(Fault.hang(5))
    [call] = http_runner(fake, timeout=0.3, retries=1).run_many(["q"])
    assert call.ok and call.attempts == 2  # the retry after one timeout succeeds


def test_garbage_and_dropped_connections(fake):
    fake.script(Fault.body("<html>oops</html>"), Fault.json({"nope": 1}), Fault.drop())
    calls = http_runner(fake, retries=0, concurrency=1).run_many(["a", "b", "c"])
    assert "malformed response" in calls[0].error
    assert "malformed response" in calls[1].error
    assert "connection failed" in calls[2].error


def test_service_down_is_an_error_for_every_case():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = HttpChatRunner(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_base=0.01)
    calls = runner.run_many(["a", "b"])
    assert all(not c.ok and "connection failed" in c.error for c in calls)


# --- the callable runner ------------------------------------------------------------------

FLAKY = {"n": 0}


def flaky(value, **kw):
    FLAKY["n"] += 1
    if FLAKY["n"] < 2:
        raise ConnectionError("transient")
    return {"answer": value, **kw}


def slow(value):
    threading.Event().wait(2)
    return "late"


def broken(value):
    raise ValueError("bad input")


def nothing(value):
    return None


def test_callable_runner_calls_with_kwargs_and_reports_errors():
    r = runners.runner_from_target("eval_pipeline.demo.app:answer", kwargs={"prompt_path": "good"})
    [call] = r.run_many(["How long do I have to return something?"])
    assert "30 days" in call.output and r.kind == "callable"
    FLAKY["n"] = 0
    [call] = CallableRunner(f"{__name__}:flaky", kwargs={"k": "v"}, backoff_base=0.01).run_many(
        ["q"]
    )
    assert call.output == '{"answer": "q", "k": "v"}' and call.attempts == 2
    [call] = CallableRunner(f"{__name__}:broken").run_many(["q"])
    assert call.error == "raised ValueError: bad input" and call.attempts == 1
    [call] = CallableRunner(f"{__name__}:nothing").run_many(["q"])
    assert call.error == "returned None"
    [call] = CallableRunner(f"{__name__}:slow", timeout=0.2, retries=0).run_many(["q"])
    assert call.error == "timed out after 0.2s"


def test_bad_targets_are_config_errors(tmp_path):
    for spec in ("nomodule", "no_such_module_xyz:f", "eval_pipeline.demo.app:nope"):
        with pytest.raises(RunnerConfigError):
            runners.runner_from_target(spec)
    with pytest.raises(RunnerConfigError, match="model"):
        runners.runner_from_target("http://127.0.0.1:1/v1")
    with pytest.raises(RunnerConfigError, match="system prompt"):
        runners.runner_from_target(
            "http://127.0.0.1:1/v1", model="m", system_prompt_file=tmp_path / "missing.txt"
        )
    with pytest.raises(RunnerConfigError, match="concurrency"):
        runners.runner_from_target("eval_pipeline.demo.app:answer", concurrency=0)


# --- progress -------------------------------------------------------------------------------


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_progress_updates_one_line_on_a_terminal_and_prints_lines_otherwise():
    tty = FakeTty()
    p = runners.ProgressLine("regress", stream=tty)
    for i in range(1, 4):
        p(i, 3, runners.Call("x") if i != 2 else runners.Call(None, "boom"))
    p.close()
    text = tty.getvalue()
    assert text.startswith("\r") and "3/3 calls, 1 errors" in text and text.endswith("\n")
    assert text.count("\n") == 1
    plain = io.StringIO()
    p = runners.ProgressLine("regress", stream=plain, every_s=0)
    for i in range(1, 21):
        p(i, 20, runners.Call("x"))
    lines = plain.getvalue().splitlines()
    assert lines[-1].startswith("regress: 20/20 calls, 0 errors")
    assert 2 <= len(lines) <= 11 and "\r" not in plain.getvalue()
