"""Runners: what a golden case's input is sent to, concurrently, with timeouts and retries.

Two kinds, chosen by the target string (:func:`runner_from_target`):

- ``http://…`` / ``https://…``: an OpenAI-compatible chat endpoint (the base URL, e.g.
  ``http://127.0.0.1:8000/v1``; ``/chat/completions`` is appended). ``model`` names the
  model; an optional system prompt file is sent as the first message; the API key is read
  from an environment variable (default ``EVAL_TARGET_API_KEY``) and sent as
  ``Authorization: Bearer …``. The key is never logged, never in reprs, errors or results:
  servers echo it in error bodies ("Incorrect API key provided: sk-…"), so every error text
  the runner produces goes through the one scrubber (core/http.py) before truncation.
- ``package.module:function``: a Python callable called as ``function(input, **kwargs)``
  where ``input`` is the case input (a string or a list of chat messages). It returns the
  answer (a string; other values are JSON-encoded).

A call ends either with an answer or with an error (timeout, HTTP 500 after retries, an
exception): :class:`Call` keeps both apart, so a failed call is never graded as a wrong
answer. Transient failures (timeouts, connection errors, 429, 5xx) are retried by the
shared retry policy (core/http.py: full-jitter backoff, ``Retry-After`` as the floor, both
capped at ``MAX_BACKOFF``).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx

from eval_pipeline.core.http import (
    GaveUp,
    Retryable,
    RetryPolicy,
    excerpt,
    parse_retry_after,
    scrub,
    transient_error,
)
from eval_pipeline.core.regression.case import Input, as_messages

DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 2
DEFAULT_API_KEY_ENV = "EVAL_TARGET_API_KEY"
MAX_BACKOFF = 10.0


class RunnerConfigError(ValueError):
    """The target cannot be run at all (bad spec, import failure, missing prompt file)."""


@dataclass
class Call:
    """One call of the target: an answer, or an error saying why there is none."""

    output: str | None
    error: str | None = None
    latency_ms: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[int, int, Call], None]  # (done, total, the call that just finished)


class Runner(Protocol):
    kind: str  # "http" or "callable"
    target: str  # identifies the target in history (no secrets)
    concurrency: int

    def run_many(self, inputs: Sequence[Input], progress: Progress | None = None) -> list[Call]:
        """One Call per input, in order. Never raises for a single failing call."""
        ...


def _policy(retries: int, backoff_base: float) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=retries + 1,
        backoff_base=backoff_base,
        backoff_max=MAX_BACKOFF,
        max_retry_after=MAX_BACKOFF,
    )


def _gave_up(exc: GaveUp, start: float) -> Call:
    suffix = f" (after {exc.attempts} attempts)" if exc.attempts > 1 else ""
    return Call(None, exc.reason + suffix, _ms(start), exc.attempts)


# --- the OpenAI-compatible endpoint -----------------------------------------------------


@dataclass
class HttpChatRunner:
    """Calls ``POST {base_url}/chat/completions`` for each input (see the module docstring)."""

    base_url: str
    model: str
    system_prompt: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    temperature: float | None = 0.0
    max_tokens: int | None = None
    backoff_base: float = 0.25
    kind: str = field(default="http", init=False)

    @property
    def target(self) -> str:
        return f"{self.base_url.rstrip('/')}#{self.model}"

    def _api_key(self) -> str | None:
        return (os.environ.get(self.api_key_env) or None) if self.api_key_env else None

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def _body(self, value: Input) -> dict[str, Any]:
        messages = as_messages(value)
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    async def _call(
        self, client: httpx.AsyncClient, url: str, value: Input, secrets: list[str | None]
    ) -> Call:
        body = self._body(value)
        policy = _policy(self.retries, self.backoff_base)
        start = time.perf_counter()
        attempts = 0

        async def attempt() -> Call:
            nonlocal attempts
            attempts += 1
            try:
                resp = await client.post(url, json=body)
            except httpx.TimeoutException:
                raise Retryable(f"timed out after {self.timeout:g}s") from None
            except httpx.TransportError as exc:
                # Connection refused / reset / cut mid-response. The message names only the
                # failure, never request headers.
                reason = f"connection failed: {type(exc).__name__}: {exc}"
                raise Retryable(scrub(reason, secrets)) from None
            if resp.status_code == 200:
                return self._parse(resp, start, attempts, secrets)
            error = f"HTTP {resp.status_code}: {_error_message(resp, secrets)}"
            if not policy.retryable_status(resp.status_code):
                return Call(None, error, _ms(start), attempts)  # not transient
            raise Retryable(error, parse_retry_after(resp.headers.get("retry-after")))

        try:
            return await policy.arun(attempt)
        except GaveUp as exc:
            return _gave_up(exc, start)

    @staticmethod
    def _parse(resp: httpx.Response, start: float, attempt: int, secrets: list[str | None]) -> Call:
        try:
            data = resp.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return Call(
                None,
                "malformed response (no choices[0].message.content): "
                f"{excerpt(resp.text, secrets, 120)!r}",
                _ms(start),
                attempt,
            )
        if not isinstance(content, str):
            return Call(None, "malformed response: content is not a string", _ms(start), attempt)
        return Call(content, None, _ms(start), attempt)

    async def _run_all(self, inputs: Sequence[Input], progress: Progress | None) -> list[Call]:
        url = self.base_url.rstrip("/") + "/chat/completions"
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        sem = asyncio.Semaphore(self.concurrency)
        results: list[Call | None] = [None] * len(inputs)
        done = 0
        key = self._api_key()
        secrets = [key]

        async with httpx.AsyncClient(
            headers=self._headers(key), timeout=timeout, limits=limits
        ) as client:

            async def one(i: int, value: Input) -> None:
                nonlocal done
                async with sem:
                    try:
                        call = await self._call(client, url, value, secrets)
                    except Exception as exc:  # never lose a case to an unexpected error
                        call = Call(None, f"runner failed: {type(exc).__name__}: {exc}")
                if call.error:  # the last line of defence: whatever produced the text
                    call.error = scrub(call.error, secrets)
                results[i] = call
                done += 1
                if progress:
                    progress(done, len(inputs), call)

            await asyncio.gather(*(one(i, v) for i, v in enumerate(inputs)))
        return [r for r in results if r is not None]

    def run_many(self, inputs: Sequence[Input], progress: Progress | None = None) -> list[Call]:
        return asyncio.run(self._run_all(inputs, progress))


def _error_message(resp: httpx.Response, secrets: list[str | None]) -> str:
    """The server's error text, scrubbed *before* truncation (a cut key is still a leak)."""
    try:
        data = resp.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return excerpt(str(data["error"].get("message", "")), secrets)
    except ValueError:
        pass
    return excerpt(resp.text, secrets)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# --- a Python callable ------------------------------------------------------------------


def resolve_callable(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RunnerConfigError(f"a callable target is 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise RunnerConfigError(f"cannot import {module_name!r}: {exc}") from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise RunnerConfigError(f"{module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise RunnerConfigError(f"{spec!r} is not callable")
    return fn


@dataclass
class CallableRunner:
    """Calls ``fn(input, **kwargs)`` in a bounded thread pool.

    A call that exceeds ``timeout`` is reported as an error; its thread cannot be killed
    and is left to finish in the background (it is a daemon thread).
    """

    spec: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff_base: float = 0.1
    kind: str = field(default="callable", init=False)

    def __post_init__(self) -> None:
        self.fn = resolve_callable(self.spec)

    @property
    def target(self) -> str:
        return self.spec

    def _once(self, value: Input) -> Any:
        box: queue.Queue = queue.Queue(maxsize=1)

        def work() -> None:
            try:
                box.put((True, self.fn(value, **self.kwargs)))
            except BaseException as exc:  # handed to the caller, not lost in the thread
                box.put((False, exc))

        threading.Thread(target=work, daemon=True, name="callable-runner-call").start()
        try:
            ok, result = box.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"timed out after {self.timeout:g}s") from None
        if not ok:
            raise result
        return result

    def call(self, value: Input) -> Call:
        start = time.perf_counter()
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            try:
                return self._once(value)
            except Exception as exc:
                if not transient_error(exc):
                    raise
                error = str(exc) if isinstance(exc, TimeoutError) and str(exc) else repr(exc)
                raise Retryable(scrub(error)) from None

        try:
            result = _policy(self.retries, self.backoff_base).run(attempt)
        except GaveUp as exc:
            return _gave_up(exc, start)
        except Exception as exc:
            error = scrub(f"raised {type(exc).__name__}: {exc}")
            return Call(None, error, _ms(start), attempts)
        if result is None:
            return Call(None, "returned None", _ms(start), attempts)
        if not isinstance(result, str):
            result = json.dumps(result, ensure_ascii=False, default=str)
        return Call(result, None, _ms(start), attempts)

    def run_many(self, inputs: Sequence[Input], progress: Progress | None = None) -> list[Call]:
        results: list[Call | None] = [None] * len(inputs)
        lock = threading.Lock()
        done = 0

        def one(i: int) -> None:
            nonlocal done
            call = self.call(inputs[i])
            with lock:
                results[i] = call
                done += 1
                if progress:
                    progress(done, len(inputs), call)

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            list(pool.map(one, range(len(inputs))))
        return [r for r in results if r is not None]


# --- choosing a runner ------------------------------------------------------------------


def runner_from_target(
    target: str,
    *,
    model: str | None = None,
    system_prompt_file: str | Path | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    kwargs: dict[str, Any] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
) -> Runner:
    """An HTTP runner for an ``http(s)://`` base URL, else a callable runner for ``mod:fn``."""
    if concurrency < 1:
        raise RunnerConfigError("concurrency must be at least 1")
    if target.startswith(("http://", "https://")):
        if not model:
            raise RunnerConfigError("an HTTP target needs a model name (--model)")
        system_prompt = None
        if system_prompt_file:
            try:
                system_prompt = Path(system_prompt_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise RunnerConfigError(
                    f"cannot read the system prompt file {system_prompt_file}: {exc.strerror}"
                ) from exc
        return HttpChatRunner(
            base_url=target,
            model=model,
            system_prompt=system_prompt,
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout=timeout,
            retries=retries,
        )
    if system_prompt_file:
        raise RunnerConfigError("--system-prompt-file applies to HTTP targets only")
    return CallableRunner(
        target, kwargs=dict(kwargs or {}), concurrency=concurrency, timeout=timeout, retries=retries
    )


@dataclass(frozen=True)
class TargetSpec:
    """How to reach the target under test: what :func:`runner_from_target` needs.

    The one place a runner is built from configuration (the CLI's flags, the Dagster
    config): :meth:`from_options` takes any mapping with these keys. It holds the name of
    the API key's variable, never the key.
    """

    target: str
    model: str | None = None
    system_prompt_file: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    target_args: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TargetSpec:
        """The spec from a mapping; other keys are ignored, None means the default."""
        names = cls.__dataclass_fields__.keys()
        values = {k: v for k, v in options.items() if k in names and v is not None}
        if not values.get("target"):
            raise RunnerConfigError("no target given")
        return cls(**values)

    def build(self) -> Runner:
        return runner_from_target(
            self.target,
            model=self.model,
            system_prompt_file=self.system_prompt_file,
            api_key_env=self.api_key_env,
            kwargs=dict(self.target_args),
            concurrency=self.concurrency,
            timeout=self.timeout,
            retries=self.retries,
        )


# --- progress on a terminal -------------------------------------------------------------


class ProgressLine:
    """Progress on stderr: one updating line on a terminal, a line every ~10% otherwise."""

    def __init__(self, label: str = "regress", stream: TextIO | None = None, every_s: float = 10.0):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self.errors = 0
        self._last = 0.0
        self._last_decile = -1
        self._started = time.monotonic()
        self._dirty = False

    def __call__(self, done: int, total: int, call: Call) -> None:
        if not call.ok:
            self.errors += 1
        text = (
            f"{self.label}: {done}/{total} calls, {self.errors} errors, "
            f"{time.monotonic() - self._started:.1f}s"
        )
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1 or done == total:
                self.stream.write("\r" + text.ljust(60))
                self.stream.flush()
                self._last = now
                self._dirty = True
            return
        decile = done * 10 // max(total, 1)
        if decile != self._last_decile and (now - self._last >= self.every_s or done == total):
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last = now
            self._last_decile = decile

    def close(self) -> None:
        if self.tty and self._dirty:
            self.stream.write("\n")
            self.stream.flush()
