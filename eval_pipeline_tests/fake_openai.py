"""A real OpenAI-compatible HTTP server for tests and benchmarks, with scriptable faults.

It is a uvicorn server (plain ASGI app, no framework) running in a background thread on
127.0.0.1 on a free port. It speaks ``POST /v1/chat/completions`` in the OpenAI shape
(``choices[0].message.content``, ``usage.prompt_tokens`` / ``completion_tokens``) and
``GET /v1/models`` / ``GET /health`` for readiness checks. Every request is served
concurrently (latency is an ``asyncio.sleep``), so 32 concurrent calls at 200 ms take
~200 ms, not 6.4 s.

Usage::

    from eval_pipeline_tests.fake_openai import Fault, FakeOpenAIServer

    with FakeOpenAIServer(latency=0.2) as server:
        server.base_url                  # "http://127.0.0.1:PORT/v1"
        server.latency = 0.0             # seconds added to every chat call (settable)
        server.responder = lambda body: '{"score": 2, "reason": "meh"}'
        server.script(Fault.status(429, retry_after=1), Fault.status(503), "ok")
        server.add_random_fault(Fault.status(429, retry_after=1), fraction=0.2, seed=0)
        server.reject_response_format = True   # 400 whenever a request has response_format
        ...
        server.calls                     # number of chat-completion requests received
        server.requests[0].json          # the request body (dict; None if not JSON)
        server.requests[0].headers       # lower-cased header names, e.g. ["authorization"]
        server.requests[0].fault         # what the server did: "content", "status:429", ...
        server.requests[0].client        # (host, port) of the client: one port per connection
        server.max_in_flight             # most chat calls served at the same time
        server.reset()                   # forget requests, script, random faults

How a chat call is answered, first match wins:

1. ``reject_response_format`` is True and the body has ``response_format`` (or it is a
   set of type names, e.g. ``{"json_schema"}``, and the body's ``response_format.type`` is
   one of them): 400 with an OpenAI-style error naming the parameter.
2. The next entry of the ``script([...])`` queue (one entry per call, consumed in order).
3. A random fault added with ``add_random_fault`` (its own seeded RNG: reproducible).
4. ``responder(body)``: returns the assistant content string, or a ``Fault`` to apply.
   The default answers ``{"score": 4, "reason": "..."}``.

Script entries and responder results are ``Fault`` objects or strings: ``"ok"`` (use the
responder), or any other string (used as the assistant content verbatim). Faults:

- ``Fault.status(code, retry_after=None, body=None)``: an HTTP error (429, 500, 503, 400
  ...) with an OpenAI-style error body and an optional ``Retry-After`` header.
- ``Fault.hang(seconds)``: wait that long before answering normally (past a client's
  read timeout); the wait ends early when the server stops.
- ``Fault.body(text, status=200, content_type="text/plain")``: a raw, e.g. non-JSON, body.
- ``Fault.json(obj)``: a 200 JSON body of any shape (e.g. without ``choices``).
- ``Fault.content(text)``: a well-formed completion whose assistant content is ``text``
  (prose around the JSON, an out-of-range score, a code fence...).
- ``Fault.drop()``: cut the connection mid-response (the client sees a protocol error).

The pytest fixture ``fake_openai`` (a started server, stopped after the test) lives here;
use it with ``from eval_pipeline_tests.fake_openai import fake_openai  # noqa: F401``
or ``pytest_plugins = ["eval_pipeline_tests.fake_openai"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

DEFAULT_CONTENT = '{"score": 4, "reason": "fake judge: clear and on topic"}'


@dataclass(frozen=True)
class Fault:
    """One way of answering (or not answering) a chat call."""

    kind: str  # status | hang | body | json | content | drop | ok
    status_code: int = 200
    retry_after: float | str | None = None
    seconds: float = 0.0
    payload: Any = None
    content_type: str = "application/json"

    @classmethod
    def ok(cls) -> Fault:
        return cls("ok")

    @classmethod
    def status(cls, code: int, retry_after: float | str | None = None, body: Any = None) -> Fault:
        return cls("status", status_code=code, retry_after=retry_after, payload=body)

    @classmethod
    def hang(cls, seconds: float = 60.0) -> Fault:
        return cls("hang", seconds=seconds)

    @classmethod
    def body(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Fault:
        return cls("body", status_code=status, payload=text, content_type=content_type)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Fault:
        return cls("json", status_code=status, payload=obj)

    @classmethod
    def content(cls, text: str) -> Fault:
        return cls("content", payload=text)

    @classmethod
    def drop(cls) -> Fault:
        return cls("drop")

    @property
    def label(self) -> str:
        return f"status:{self.status_code}" if self.kind == "status" else self.kind


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    raw: bytes
    client: tuple[str, int] | None = None  # the client's (host, port): one per connection
    fault: str = ""
    received_at: float = field(default_factory=time.monotonic)


def default_responder(body: dict) -> str:
    return DEFAULT_CONTENT


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def completion_body(request: dict | None, content: str) -> dict:
    """The OpenAI chat.completion shape around an assistant message."""
    messages = (request or {}).get("messages") or []
    prompt_text = "".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    prompt_tokens = _approx_tokens(prompt_text)
    completion_tokens = _approx_tokens(content)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": (request or {}).get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error_body(code: int, message: str, param: str | None = None) -> dict:
    kind = {
        400: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(code, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Drop(Exception):
    """Raised inside the app to make the server close the connection without answering."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from printing a traceback for every deliberate Fault.drop()."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _Drop)


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class FakeOpenAIServer:
    """See the module docstring."""

    def __init__(
        self,
        latency: float = 0.0,
        responder: Callable[[dict], str | Fault] | None = None,
        model: str = "fake-model",
    ) -> None:
        self.latency = latency
        self.responder: Callable[[dict], str | Fault] = responder or default_responder
        self.model = model
        self.reject_response_format: bool | set[str] = False
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0  # chat calls being answered right now
        self.max_in_flight = 0  # the most at once since start/reset
        self._script: deque[Fault | str] = deque()
        self._random_faults: list[tuple[Fault, float, random.Random]] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self.port: int | None = None

    # --- configuration ------------------------------------------------------------------

    def script(self, *entries: Fault | str) -> None:
        """Queue how the next calls are answered, one entry per call, in order.

        Also accepts a single list: ``script([Fault.status(500), "ok"])``.
        """
        if len(entries) == 1 and isinstance(entries[0], list | tuple):
            entries = tuple(entries[0])
        with self._lock:
            self._script.extend(entries)

    def add_random_fault(self, fault: Fault, fraction: float, seed: int = 0) -> None:
        """Answer about ``fraction`` of the calls (drawn with a seeded RNG) with ``fault``."""
        with self._lock:
            self._random_faults.append((fault, fraction, random.Random(seed)))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight
            self._script.clear()
            self._random_faults.clear()
        self.reject_response_format = False
        self.responder = default_responder

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fake server is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def calls(self) -> int:
        return len(self.chat_requests)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            interface="asgi3",
            log_level="warning",
            access_log=False,
            backlog=2048,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"fake-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the ASGI app -------------------------------------------------------------------------

    def _rejects(self, body: Any) -> bool:
        if not self.reject_response_format or not isinstance(body, dict):
            return False
        fmt = body.get("response_format")
        if fmt is None:
            return False
        if self.reject_response_format is True:
            return True
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        return kind in self.reject_response_format

    def _choose(self, body: Any) -> Fault | str:
        with self._lock:
            if self._rejects(body):
                return Fault.status(
                    400,
                    body=_error_body(
                        400, "response_format is not supported by this server", "response_format"
                    ),
                )
            if self._script:
                return self._script.popleft()
            for fault, fraction, rng in self._random_faults:
                if rng.random() < fraction:
                    return fault
        return "ok"

    async def _app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        more = True
        while more:
            message = await receive()
            raw += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        client = tuple(scope["client"]) if scope.get("client") else None
        record = RecordedRequest(scope["method"], scope["path"], headers, body, raw, client)
        with self._lock:
            self.requests.append(record)
        path = scope["path"].rstrip("/")
        if scope["method"] == "GET" and path in ("/health", "/v1/models"):
            record.fault = "ok"
            payload = {"object": "list", "data": [{"id": self.model, "object": "model"}]}
            await self._send_json(send, 200, payload)
            return
        if scope["method"] != "POST" or path != "/v1/chat/completions":
            record.fault = "status:404"
            await self._send_json(send, 404, _error_body(404, f"no route {path}"))
            return
        if not isinstance(body, dict):
            record.fault = "status:400"
            await self._send_json(send, 400, _error_body(400, "body is not a JSON object"))
            return
        action = self._choose(body)
        if action == "ok" or (isinstance(action, Fault) and action.kind == "ok"):
            action = self.responder(body)
        if isinstance(action, str):
            action = Fault.content(action)
        record.fault = action.label
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._sleep(self.latency)
            await self._apply(action, body, send)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _sleep(self, seconds: float) -> None:
        # Sleeps in slices so a stopping server does not wait for a long hang.
        end = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    async def _apply(self, fault: Fault, body: dict, send) -> None:
        kind = fault.kind
        if kind == "hang":
            await self._sleep(fault.seconds)
            content = self.responder(body)
            if isinstance(content, Fault):
                content = DEFAULT_CONTENT
            await self._send_json(send, 200, completion_body(body, content))
        elif kind == "status":
            extra = []
            if fault.retry_after is not None:
                extra.append((b"retry-after", str(fault.retry_after).encode()))
            payload = fault.payload or _error_body(
                fault.status_code, f"fake server answered {fault.status_code}"
            )
            await self._send_json(send, fault.status_code, payload, extra)
        elif kind == "body":
            await self._send(
                send, fault.status_code, str(fault.payload).encode(), fault.content_type
            )
        elif kind == "json":
            await self._send_json(send, fault.status_code, fault.payload)
        elif kind == "content":
            await self._send_json(send, 200, completion_body(body, str(fault.payload)))
        elif kind == "drop":
            # uvicorn closes the transport when an app fails after the response started:
            # the client sees the connection cut mid-response.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"100"),
                    ],
                }
            )
            raise _Drop("fake server drops the connection")
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    async def _send_json(self, send, status: int, payload: Any, extra=()) -> None:
        await self._send(send, status, json.dumps(payload).encode(), "application/json", extra)

    @staticmethod
    async def _send(send, status: int, data: bytes, content_type: str, extra=()) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(data)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


@pytest.fixture
def fake_openai():
    """A started FakeOpenAIServer (no latency, default judge answers), stopped afterwards."""
    with FakeOpenAIServer() as server:
        yield server
