"""The one HTTP layer (core/http.py), tested once: what is retried, how long it waits, when
it gives up, and that secrets are scrubbed before text is cut. Against a real server on
127.0.0.1 (the fake OpenAI server) wherever a wire is involved."""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import time

import httpx
import pytest

from eval_pipeline.core.http import (
    REDACTED,
    GaveUp,
    Retryable,
    RetryPolicy,
    arequest_with_retries,
    excerpt,
    parse_retry_after,
    request_with_retries,
    scrub,
)
from eval_pipeline_tests.fake_openai import Fault, fake_openai  # noqa: F401
from eval_pipeline_tests.webhook_server import WebhookReceiver

SECRET = "sk-test-0123456789abcdef"
FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)


class Waits:
    """Stands in for time.sleep: records the waits, does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def post(server, policy=FAST, sleep=None, **kw) -> httpx.Response:
    with httpx.Client(base_url=server.base_url + "/", timeout=kw.pop("timeout", 5.0)) as client:
        return request_with_retries(
            client,
            "POST",
            "chat/completions",
            policy=policy,
            sleep=sleep or Waits(),
            json={"model": "m", "messages": []},
            **kw,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- what is retryable ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_are_retried(fake_openai, status):  # noqa: F811
    fake_openai.script(Fault.status(status), "ok")
    assert post(fake_openai).status_code == 200
    assert fake_openai.calls == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_answered_at_once(fake_openai, status):  # noqa: F811
    fake_openai.script(Fault.status(status))
    assert post(fake_openai).status_code == status
    assert fake_openai.calls == 1


def test_a_client_can_narrow_the_retryable_statuses(fake_openai):  # noqa: F811
    policy = RetryPolicy(max_attempts=3, backoff_base=0.01, retry_statuses=frozenset({503}))
    fake_openai.script(Fault.status(501))
    assert post(fake_openai, policy).status_code == 501
    assert fake_openai.calls == 1


def test_timeouts_and_dropped_connections_are_retried(fake_openai):  # noqa: F811
    fake_openai.script(Fault.hang(5), Fault.drop(), "ok")
    assert post(fake_openai, timeout=0.3).status_code == 200
    assert fake_openai.calls == 3


def test_the_budget_counts_the_first_attempt_and_keeps_the_last_problem(fake_openai):  # noqa: F811
    fake_openai.add_random_fault(Fault.status(503), fraction=1.0)
    with pytest.raises(GaveUp) as info:
        post(fake_openai)
    assert info.value.attempts == 3 == fake_openai.calls
    assert info.value.reason.startswith("HTTP 503: ")
    assert info.value.response is not None and info.value.response.status_code == 503
    assert str(info.value).endswith("gave up after 3 attempt(s)")


def test_nothing_listening_is_a_connection_problem():
    with httpx.Client(timeout=2.0) as client, pytest.raises(GaveUp) as info:
        request_with_retries(
            client, "GET", f"http://127.0.0.1:{free_port()}/", policy=FAST, sleep=Waits()
        )
    assert info.value.reason.startswith("connection: ConnectError")
    assert info.value.response is None


def test_other_exceptions_are_not_retried():
    calls = []

    def attempt():
        calls.append(1)
        raise ValueError("a bug, not a fault of the network")

    with pytest.raises(ValueError):
        FAST.run(attempt, sleep=Waits())
    assert len(calls) == 1


def test_on_retry_sees_every_retry_with_its_wait():
    seen = []
    outcomes = iter([Retryable("first"), Retryable("second", retry_after=0.0), "done"])

    def attempt():
        item = next(outcomes)
        if isinstance(item, Exception):
            raise item
        return item

    assert FAST.run(attempt, sleep=Waits(), on_retry=lambda e, w: seen.append(e.reason)) == "done"
    assert seen == ["first", "second"]


# --- how long it waits ---------------------------------------------------------------------------


def test_full_jitter_bounds_with_a_seeded_rng():
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4.0)
    rng = random.Random(7)
    for retry in range(1, 8):
        bound = min(4.0, 0.5 * 2 ** (retry - 1))
        draws = [policy.backoff(retry, rng=rng) for _ in range(500)]
        assert all(0.0 <= d <= bound for d in draws)
        # Full jitter uses the whole range, not a fixed delay plus noise.
        assert min(draws) < 0.05 * bound and max(draws) > 0.95 * bound
    # The same seed gives the same waits: a test can pin them.
    assert policy.backoff(3, rng=random.Random(7)) == policy.backoff(3, rng=random.Random(7))


def test_retry_after_is_the_floor_with_a_little_jitter_and_a_cap():
    policy = RetryPolicy(backoff_base=100.0, max_retry_after=10.0)
    rng = random.Random(1)
    for floor in (0.0, 0.5, 2.0, 8.0):
        draws = [policy.backoff(1, floor, rng) for _ in range(200)]
        assert all(floor <= d <= floor + min(1.0, 0.25 * floor + 0.05) for d in draws)
    assert all(10.0 <= policy.backoff(1, 3600.0, rng) <= 11.0 for _ in range(50))


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_in_both_forms_sets_the_floor_over_the_wire(fake_openai, form):  # noqa: F811
    value = "3" if form == "seconds" else email.utils.formatdate(time.time() + 4, usegmt=True)
    fake_openai.script(Fault.status(429, retry_after=value), "ok")
    waits = Waits()
    assert post(fake_openai, RetryPolicy(backoff_base=0.01), sleep=waits).status_code == 200
    [wait] = waits.waits
    # An HTTP date has whole seconds: 4 s ahead is at least 3 s by the time it is read.
    assert 2.9 <= wait <= 5.2


def test_parse_retry_after():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after(past) == 0.0


# --- when it gives up: the deadline -------------------------------------------------------------


def test_a_wait_that_would_pass_the_deadline_is_not_waited_for(fake_openai):  # noqa: F811
    fake_openai.script(Fault.status(429, retry_after=30))
    waits = Waits()
    with pytest.raises(GaveUp) as info:
        post(fake_openai, RetryPolicy(max_attempts=5, deadline=5.0), sleep=waits)
    assert info.value.deadline and info.value.next_wait >= 30
    assert "would pass the deadline, gave up after 1 attempt(s)" in str(info.value)
    assert waits.waits == [] and fake_openai.calls == 1


def test_the_sync_deadline_caps_each_request(fake_openai):  # noqa: F811
    fake_openai.script(Fault.hang(30))
    started = time.monotonic()
    with pytest.raises(GaveUp) as info:
        post(fake_openai, RetryPolicy(max_attempts=5, deadline=0.5), timeout=20.0)
    assert time.monotonic() - started < 3.0
    assert info.value.reason.startswith("timeout: ReadTimeout") and info.value.deadline


def test_the_async_deadline_cuts_a_hanging_request(fake_openai):  # noqa: F811
    fake_openai.script(Fault.hang(30))

    async def go():
        async with httpx.AsyncClient(base_url=fake_openai.base_url + "/", timeout=20) as client:
            return await arequest_with_retries(
                client, "POST", "chat/completions", policy=RetryPolicy(deadline=0.5), json={}
            )

    started = time.monotonic()
    with pytest.raises(GaveUp) as info:
        asyncio.run(go())
    assert time.monotonic() - started < 3.0
    assert info.value.deadline and info.value.next_wait is None
    assert "the deadline passed during attempt 1" in str(info.value)


def test_a_caller_owned_deadline_is_read_when_a_retry_is_due():
    end = {"at": None}

    def attempt():
        end["at"] = time.monotonic() + 0.01  # set once the first attempt has started
        raise Retryable("busy", retry_after=1.0)

    with pytest.raises(GaveUp) as info:
        RetryPolicy(max_attempts=9).run(attempt, sleep=Waits(), deadline_at=lambda: end["at"])
    assert info.value.deadline and info.value.attempts == 1


def test_async_retries_use_the_same_rules(fake_openai):  # noqa: F811
    fake_openai.script(Fault.status(429, retry_after=0.2), Fault.status(500), "ok")
    waits: list[float] = []

    async def sleep(seconds):
        waits.append(seconds)

    async def go():
        async with httpx.AsyncClient(base_url=fake_openai.base_url + "/", timeout=5) as client:
            return await arequest_with_retries(
                client, "POST", "chat/completions", policy=FAST, sleep=sleep, json={}
            )

    assert asyncio.run(go()).status_code == 200
    assert fake_openai.calls == 3
    assert 0.2 <= waits[0] <= 0.2 + 0.1 and 0 <= waits[1] <= 0.02


# --- secrets: scrubbed before anything is cut -----------------------------------------------------


def test_a_key_straddling_the_cut_is_scrubbed_first():
    text = "x" * 190 + SECRET + " and more"
    cut = excerpt(text, [SECRET], limit=200)
    assert "sk-" not in cut and "0123" not in cut
    assert cut == "x" * 190 + REDACTED + "..."
    # A key nobody named, in a known shape, is caught the same way.
    assert "sk-" not in excerpt("y" * 194 + " sk-live-abcdefgh12345678", limit=200)


def test_scrub_given_secrets_and_key_shapes():
    assert scrub(f"a Bearer {SECRET} b {SECRET}", [SECRET]) == f"a Bearer {REDACTED} b {REDACTED}"
    assert scrub("Authorization: bearer eyJhbGciOi.J9x1") == f"Authorization: bearer {REDACTED}"
    assert scrub("missing Bearer token in the request") == "missing Bearer token in the request"
    assert scrub("GET /x?api_key=abc123&page=2") == f"GET /x?api_key={REDACTED}&page=2"
    assert scrub("key sk-proj-AbC_123-xyz9 rejected") == f"key {REDACTED} rejected"
    assert scrub("abc", [None, ""]) == "abc"
    assert scrub("a b", ["a"]) == "a b"  # too short to be a secret: left alone
    assert scrub("scikit sk-learn-compatible") == "scikit sk-learn-compatible"


def test_a_secret_url_is_scrubbed_whole_and_by_its_path_and_query():
    url = "https://hooks.example.test/services/T000/B000/XXXXsecret99?sig=abcdef123456"
    assert scrub(f"posting to {url} failed", [url]) == f"posting to {REDACTED} failed"
    echoed = "404: no hook at /services/T000/B000/XXXXsecret99"
    assert scrub(echoed, [url]) == f"404: no hook at {REDACTED}"
    # Part of the path alone: the long segment goes, short ones are not secrets.
    assert scrub("unknown hook B000/XXXXsecret99", [url]) == f"unknown hook B000/{REDACTED}"
    assert "abcdef123456" not in scrub("bad sig abcdef123456", [url])


def test_a_receiver_echoing_the_secret_path_over_the_wire_is_scrubbed():
    with WebhookReceiver(status=404) as receiver, httpx.Client(timeout=5) as client:
        resp = request_with_retries(client, "POST", receiver.url, policy=FAST, json={"t": 1})
        assert resp.status_code == 404
        assert receiver.posts[0]["path"] == "/hooks/secret-token-123"
        echoed = f"HTTP 404 for {receiver.posts[0]['path']}"
        assert "secret-token-123" not in scrub(echoed, [receiver.url])
