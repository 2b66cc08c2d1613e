"""The one HTTP layer: what is worth retrying, how long to wait, when to give up, and which
error text may be stored or shown.

- What is retryable: HTTP 429 and 5xx (a client may narrow the set with
  ``RetryPolicy.retry_statuses``), timeouts and connection errors (:func:`transient_error`).
  Anything else is the caller's answer: a 4xx will not get better by asking again.
- How long to wait: full-jitter exponential backoff, the n-th wait drawn from
  ``[0, min(backoff_max, backoff_base * 2**(n-1))]`` so a burst of 429s does not come back
  as one burst. A ``Retry-After`` header (seconds or an HTTP date) is the floor, capped at
  ``max_retry_after``, with a little jitter on top.
- When to give up: after ``max_attempts`` attempts, or when the next wait would pass the
  deadline (``RetryPolicy.deadline`` seconds from the first attempt, or an absolute
  ``deadline_at`` the caller owns). The async variant also cuts an attempt that is still in
  flight at the policy's deadline. Giving up raises :class:`GaveUp` with the last problem.
- Error text: :func:`scrub` removes the given secrets and common key shapes; it runs
  *before* any truncation (:func:`excerpt`), because a key cut in half is still a leak.

A client's attempt function does one request and either returns, raises :class:`Retryable`
(with the reason in the client's own words and any Retry-After), or raises anything else to
stop at once. :func:`request_with_retries` / :func:`arequest_with_retries` are that attempt
function for the plain case: they return the first non-retryable response.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
REDACTED = "[redacted]"
MIN_SECRET_LEN = 4  # shorter "secrets" would redact ordinary words


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


# --- secrets --------------------------------------------------------------------------------

# Shapes that are secrets whoever wrote them: OpenAI-style keys, bearer tokens, and the
# usual credential parameters of a query string.
_KEY_SHAPES = (
    # An API key is long and has a digit; "sk-learn-compatible" is prose.
    (re.compile(r"\bsk-(?=[A-Za-z_\-]*\d)[A-Za-z0-9_\-]{16,}"), REDACTED),
    # A bearer token has a digit; "Bearer token required" is prose.
    (
        re.compile(r"\b(Bearer\s+)(?=[A-Za-z._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{8,}", re.I),
        rf"\1{REDACTED}",
    ),
    (
        re.compile(
            r"([?&](?:api[_-]?key|key|token|access_token|secret|sig|signature|password)=)[^&\s\"']+",
            re.I,
        ),
        rf"\1{REDACTED}",
    ),
)


def _secret_parts(secret: str) -> list[str]:
    """The secret, and for a URL its path, query and long path segments and query values:
    a receiver that echoes only the path of a webhook URL leaks the token in it."""
    parts = [secret]
    url = urllib.parse.urlsplit(secret)
    if url.scheme and url.netloc:
        if len(url.path) > 1:
            parts.append(url.path)
        if url.query:
            parts.append(url.query)
        pieces = url.path.split("/") + [v for _, v in urllib.parse.parse_qsl(url.query)]
        parts += [p for p in pieces if len(p) >= 8]
    return parts


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every given secret (and, for a URL, its path and query) and every common
    key shape (``sk-…``, ``Bearer …``, ``?api_key=…``) replaced by ``[redacted]``.

    Run it before cutting text short: a secret that straddles the cut survives otherwise.
    """
    parts = [p for s in secrets if s and len(s) >= MIN_SECRET_LEN for p in _secret_parts(s)]
    for part in sorted(set(parts), key=len, reverse=True):  # longest first: no half-redactions
        text = text.replace(part, REDACTED)
    for pattern, replacement in _KEY_SHAPES:
        text = pattern.sub(replacement, text)
    return text


def excerpt(text: str, secrets: Iterable[str | None] = (), limit: int = 200) -> str:
    """``text`` scrubbed, whitespace collapsed, then cut to ``limit`` characters (with "...")."""
    text = " ".join(scrub(text, secrets).split())
    return text if len(text) <= limit else text[:limit] + "..."


# --- what is retryable ------------------------------------------------------------------------


def transient_error(exc: BaseException) -> bool:
    """A timeout or a connection error (httpx's or the standard library's)."""
    return isinstance(
        exc, httpx.TimeoutException | httpx.TransportError | TimeoutError | ConnectionError
    )


class Retryable(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.response = response


class GaveUp(Exception):
    """The retries are spent: ``reason`` is the last problem, ``attempts`` how many were made.

    ``deadline`` is True when the deadline (not the attempt budget) stopped it; then
    ``next_wait`` is the wait that would have passed it (None: an attempt was cut short).
    """

    def __init__(
        self,
        reason: str,
        attempts: int,
        *,
        deadline: bool = False,
        next_wait: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        if not deadline:
            text = f"{reason}; gave up after {attempts} attempt(s)"
        elif next_wait is None:
            text = f"{reason}; the deadline passed during attempt {attempts}"
        else:
            text = (
                f"{reason}; the next retry (in {next_wait:.1f}s) would pass the deadline, "
                f"gave up after {attempts} attempt(s)"
            )
        super().__init__(text)
        self.reason = reason
        self.attempts = attempts
        self.deadline = deadline
        self.next_wait = next_wait
        self.response = response


@dataclass(frozen=True)
class RetryPolicy:
    """How one client retries. ``max_attempts`` counts the first attempt."""

    max_attempts: int = 3
    backoff_base: float = 0.5  # the first retry waits up to this long
    backoff_max: float = 20.0  # the exponential part never exceeds this
    max_retry_after: float = 60.0  # a longer Retry-After is capped (and the deadline rules)
    deadline: float | None = None  # seconds for all attempts and waits, from the first attempt
    retry_statuses: frozenset[int] | None = None  # None: 429 and every 5xx

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"deadline must be > 0, got {self.deadline}")

    def retryable_status(self, status: int) -> bool:
        if self.retry_statuses is not None:
            return status in self.retry_statuses
        return status == 429 or status >= 500

    def backoff(
        self, retry: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds before retry number ``retry`` (1 for the first retry)."""
        draw = (rng or random).uniform
        if retry_after is not None:
            # The server's number is the floor; a little jitter on top de-synchronises.
            floor = min(max(retry_after, 0.0), self.max_retry_after)
            return floor + draw(0, min(1.0, 0.25 * floor + 0.05))
        return draw(0, min(self.backoff_max, self.backoff_base * 2 ** (retry - 1)))

    def _give_up_or_wait(
        self,
        exc: Retryable,
        attempts: int,
        end: float | None,
        rng: random.Random | None,
    ) -> float:
        """The wait before the next attempt, or GaveUp when there is no next attempt."""
        if attempts >= self.max_attempts:
            raise GaveUp(exc.reason, attempts, response=exc.response) from None
        wait = self.backoff(attempts, exc.retry_after, rng)
        if end is not None and time.monotonic() + wait > end:
            raise GaveUp(
                exc.reason, attempts, deadline=True, next_wait=wait, response=exc.response
            ) from None
        return wait

    def run(
        self,
        attempt: Callable[[], T],
        *,
        sleep: Callable[[float], Any] = time.sleep,
        rng: random.Random | None = None,
        deadline_at: Callable[[], float | None] | None = None,
        on_retry: Callable[[Retryable, float], Any] | None = None,
    ) -> T:
        """``attempt()`` until it returns, raises something other than Retryable, or the
        policy gives up (GaveUp). A synchronous attempt cannot be interrupted: give the
        request its own timeout; the deadline bounds the waits between attempts."""
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                return attempt()
            except Retryable as exc:
                wait = self._give_up_or_wait(exc, attempts, self._end(started, deadline_at), rng)
                if on_retry:
                    on_retry(exc, wait)
                sleep(wait)

    async def arun(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        deadline_at: Callable[[], float | None] | None = None,
        on_retry: Callable[[Retryable, float], Any] | None = None,
    ) -> T:
        """The async ``run``. With ``RetryPolicy.deadline`` (and no ``deadline_at``) an
        attempt still in flight when the deadline passes is cancelled (GaveUp)."""
        started = time.monotonic()
        attempts = 0
        last: Retryable | None = None
        while True:
            attempts += 1
            try:
                if deadline_at is None and self.deadline is not None:
                    remaining = started + self.deadline - time.monotonic()
                    timer = asyncio.timeout(max(0.0, remaining))
                    try:
                        async with timer:
                            return await attempt()
                    except TimeoutError:
                        if not timer.expired():
                            raise
                        reason = last.reason if last else "no answer"
                        raise GaveUp(reason, attempts, deadline=True) from None
                return await attempt()
            except Retryable as exc:
                last = exc
                wait = self._give_up_or_wait(exc, attempts, self._end(started, deadline_at), rng)
                if on_retry:
                    on_retry(exc, wait)
                await sleep(wait)

    def _end(self, started: float, deadline_at: Callable[[], float | None] | None) -> float | None:
        if deadline_at is not None:
            return deadline_at()
        return None if self.deadline is None else started + self.deadline


# --- the plain case: one request, retried -------------------------------------------------------


def _classify(
    policy: RetryPolicy, resp: httpx.Response, secrets: Iterable[str | None]
) -> httpx.Response:
    if policy.retryable_status(resp.status_code):
        raise Retryable(
            f"HTTP {resp.status_code}: {excerpt(resp.text, secrets) or '(empty body)'}",
            parse_retry_after(resp.headers.get("retry-after")),
            resp,
        )
    return resp


def _transport_reason(exc: Exception, secrets: Iterable[str | None]) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout: {type(exc).__name__}"
    return f"connection: {excerpt(f'{type(exc).__name__}: {exc}', secrets)}"


def request_with_retries(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    secrets: Iterable[str | None] = (),
    sleep: Callable[[float], Any] = time.sleep,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """The first response whose status is not retryable (2xx, 3xx, 4xx but 429: the caller
    reads it). Raises GaveUp (its ``response`` is the last one, if any) when retries run out.
    With a policy deadline, no single request is given longer than the time left."""
    secrets = list(secrets)
    started = time.monotonic()

    def attempt() -> httpx.Response:
        extra = dict(kwargs)
        if policy.deadline is not None and "timeout" not in extra:
            left = max(0.001, started + policy.deadline - time.monotonic())
            timeout = client.timeout
            extra["timeout"] = httpx.Timeout(
                min(timeout.read or left, left),
                connect=min(timeout.connect or left, left),
                write=min(timeout.write or left, left),
                pool=min(timeout.pool or left, left),
            )
        try:
            resp = client.request(method, url, **extra)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise Retryable(_transport_reason(exc, secrets)) from None
        return _classify(policy, resp, secrets)

    return policy.run(attempt, sleep=sleep, rng=rng)


async def arequest_with_retries(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    secrets: Iterable[str | None] = (),
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """The async ``request_with_retries``; the policy deadline also cuts a hanging request."""
    secrets = list(secrets)

    async def attempt() -> httpx.Response:
        try:
            resp = await client.request(method, url, **kwargs)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise Retryable(_transport_reason(exc, secrets)) from None
        return _classify(policy, resp, secrets)

    return await policy.arun(attempt, sleep=sleep, rng=rng)
