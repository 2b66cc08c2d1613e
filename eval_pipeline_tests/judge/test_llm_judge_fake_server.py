"""The fake OpenAI server itself: a real HTTP server whose faults do what they say."""

from __future__ import annotations

import httpx
import pytest

from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault, fake_openai  # noqa: F401

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def test_default_answer_is_an_openai_completion(fake_openai):  # noqa: F811
    r = httpx.post(
        fake_openai.base_url + "/chat/completions",
        json=BODY,
        headers={"Authorization": "Bearer sk-test"},
    )
    assert r.status_code == 200
    data = r.json()
    assert data["choices"][0]["message"]["content"].startswith('{"score": 4')
    assert data["usage"]["prompt_tokens"] >= 1
    assert fake_openai.calls == 1
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-test"
    assert fake_openai.requests[0].json == BODY


def test_script_is_consumed_in_order_then_the_responder_answers(fake_openai):  # noqa: F811
    fake_openai.script(Fault.status(429, retry_after=1), Fault.body("<html>"), "plain words")
    url = fake_openai.base_url + "/chat/completions"
    r1, r2, r3, r4 = (httpx.post(url, json=BODY) for _ in range(4))
    assert (r1.status_code, r1.headers["retry-after"]) == (429, "1")
    assert r2.text == "<html>"
    assert r3.json()["choices"][0]["message"]["content"] == "plain words"
    assert r4.json()["choices"][0]["message"]["content"].startswith('{"score": 4')
    assert [r.fault for r in fake_openai.requests] == ["status:429", "body", "content", "content"]


def test_reject_response_format_and_drop(fake_openai):  # noqa: F811
    fake_openai.reject_response_format = True
    url = fake_openai.base_url + "/chat/completions"
    r = httpx.post(url, json={**BODY, "response_format": {"type": "json_object"}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "response_format"
    assert httpx.post(url, json=BODY).status_code == 200
    fake_openai.script(Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, json=BODY)


def test_hang_outlasts_a_client_timeout_and_stop_does_not_wait_for_it():
    with FakeOpenAIServer() as server:
        server.script(Fault.hang(30))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.base_url + "/chat/completions", json=BODY, timeout=0.3)


def test_random_faults_are_reproducible():
    seen = []
    for _ in range(2):
        with FakeOpenAIServer() as server:
            server.add_random_fault(Fault.status(503), fraction=0.5, seed=7)
            with httpx.Client() as client:
                codes = [
                    client.post(server.base_url + "/chat/completions", json=BODY).status_code
                    for _ in range(20)
                ]
            seen.append(codes)
    assert seen[0] == seen[1]
    assert 0 < codes.count(503) < 20
