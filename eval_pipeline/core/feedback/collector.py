"""The feedback collector: a small ASGI app with ``POST /v1/feedback``.

Mount it in a service (``app.mount("/", create_app())``) or run it on its own
(``eval-pipeline feedback serve``). Requests carry ``Authorization: Bearer <token>``; the
token comes from ``EVAL_FEEDBACK_TOKEN`` and is never logged.

Accepted records are appended, one JSON line each, to a file in ``<inbox>/.incoming/``
(outside what the inbox sensor looks at), which is renamed into the inbox when complete
(``spool.py``: rotation, and recovery of files left by dead writers). The response is sent
after the line has been written to the file (flushed to the OS), so a record acknowledged
with 202 is in a file that will reach the inbox, even if this process is killed.

Slow or hostile clients: the body must arrive within ``body_timeout`` (408), at most
``max_concurrent_posts`` requests are read and written at once (others wait up to SLOT_WAIT
seconds for a slot, then get 503 with Retry-After), and ``server_config`` gives uvicorn a header timeout (a connection that has not sent
a complete request head within ``header_timeout`` is closed) and a connection limit. Behind
a reverse proxy, let the proxy enforce these as well (see SECURITY.md).

Mounted, the app gets no lifespan (Starlette runs only the host's), so nothing here depends
on it (``CollectorRuntime``): recovery and the age-rotation thread start on the first
request, and the current file is published at interpreter exit (atexit) and on SIGTERM
(uvicorn ends a SIGTERM shutdown by re-raising the signal with its default action, which
skips atexit). When the lifespan does run (standalone), it does the same, earlier.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import datetime as dt
import hmac
import logging
import os
import signal
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from eval_pipeline import settings
from eval_pipeline.core.feedback.records import (
    MAX_LINE_BYTES,
    InvalidRecord,
    loads_line,
    record_to_json,
    validate_record,
)
from eval_pipeline.core.feedback.spool import RotatingWriter, recover_incoming

log = logging.getLogger(__name__)

TOKEN_ENV = "EVAL_FEEDBACK_TOKEN"
MAX_BATCH = 100
MAX_BODY_BYTES = MAX_BATCH * MAX_LINE_BYTES
HEADER_TIMEOUT = 10.0  # seconds for a connection to send a complete request head
BODY_TIMEOUT = 30.0  # seconds for the whole body, once the head is in
MAX_CONCURRENT_POSTS = 64  # requests being read and written at once; more wait, then 503
SLOT_WAIT = 5.0  # seconds a request waits for one of those slots before 503
MAX_CONNECTIONS = 1000  # uvicorn's limit_concurrency: open connections + running tasks


class CollectorRuntime:
    """Recovery, age rotation and the final publish, started without the host's help.

    ``ensure_started`` is idempotent and cheap after the first call (per process: a forked
    worker starts its own thread). It runs on the first request and in the lifespan when the
    lifespan runs. ``close`` publishes the current file and stops the thread; it runs in the
    lifespan's shutdown, at interpreter exit, and on SIGTERM.
    """

    def __init__(self, writer: RotatingWriter, inbox: Path, interval: float) -> None:
        self.writer = writer
        self.inbox = inbox
        self.interval = interval
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._pid == os.getpid()

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            recovered = recover_incoming(self.inbox)
            if recovered:
                log.warning(
                    "published %d feedback files left by stopped collectors", len(recovered)
                )
            self.writer.draining = False
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._rotate_by_age,
                args=(self._stop,),
                name="feedback-collector-rotation",
                daemon=True,
            )
            self._thread.start()
            atexit.register(self._at_exit)
            _install_sigterm_publish()
            self._pid = os.getpid()
        _RUNTIMES.add(self)

    def _rotate_by_age(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.writer.rotate_if_old()
            except Exception:  # keep rotating; the next tick tries again
                log.exception("feedback collector: rotation failed")

    def close(self, timeout: float = -1) -> None:
        """Publish the current file and stop rotating. Safe to call more than once."""
        with self._lock:
            self._stop.set()
            thread, self._thread, self._pid = self._thread, None, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        atexit.unregister(self._at_exit)
        _RUNTIMES.discard(self)
        try:
            if not self.writer.close(timeout):
                log.warning("feedback collector: current file left for recovery (busy)")
        except OSError:
            log.exception("feedback collector: could not publish the current file")

    def _at_exit(self) -> None:
        self.close(timeout=5)


_RUNTIMES: set[CollectorRuntime] = set()  # started in this process; published on SIGTERM


def _on_sigterm(signum: int, frame: object) -> None:
    # Publish first (with a timeout: the interrupted thread may hold a writer's lock), then
    # let whatever handled SIGTERM before (uvicorn's graceful shutdown, or the default
    # action) run. Writes that still arrive while draining are published one by one.
    for runtime in list(_RUNTIMES):
        runtime.writer.draining = True
        try:  # never raise into whatever code the signal interrupted
            runtime.writer.close(timeout=2)
        except OSError:
            log.exception("feedback collector: could not publish the current file")
    previous = _on_sigterm.previous  # type: ignore[attr-defined]
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _install_sigterm_publish() -> None:
    """Chain ``_on_sigterm`` in front of the current SIGTERM handler (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be handled there; atexit still publishes
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return
    _on_sigterm.previous = current  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, _on_sigterm)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def create_app(
    inbox: Path | str | None = None,
    token: str | None = None,
    *,
    max_bytes: int = 1_000_000,
    max_records: int = 10_000,
    max_age_seconds: float = 60.0,
    body_timeout: float = BODY_TIMEOUT,
    max_concurrent_posts: int = MAX_CONCURRENT_POSTS,
) -> Starlette:
    """The collector app. ``token`` defaults to $EVAL_FEEDBACK_TOKEN (required)."""
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if not token:
        raise RuntimeError(
            f"no feedback token: set {TOKEN_ENV} (clients send it as a bearer token)"
        )
    expected_token = token.encode()
    inbox_path = Path(inbox) if inbox is not None else settings.feedback_inbox()
    writer = RotatingWriter(inbox_path, max_bytes, max_records, max_age_seconds)
    runtime = CollectorRuntime(writer, inbox_path, min(1.0, max(0.05, max_age_seconds / 4)))
    # Bounds the memory of bodies being read (each up to MAX_BODY_BYTES). A burst waits for
    # a slot (its body is not read meanwhile) before it is turned away.
    slots = asyncio.Semaphore(max_concurrent_posts)

    async def post_feedback(request: Request) -> JSONResponse:
        # In the request's thread (the main thread under uvicorn), so SIGTERM can be hooked.
        runtime.ensure_started()
        auth = request.headers.get("authorization", "")
        if not auth:
            return _error(
                401,
                "missing Authorization header (expected 'Bearer <token>')",
                **{"WWW-Authenticate": "Bearer"},
            )
        # The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
        scheme, _, credentials = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"), expected_token
        ):
            return _error(401, "invalid bearer token", **{"WWW-Authenticate": "Bearer"})
        try:
            async with asyncio.timeout(SLOT_WAIT):
                await slots.acquire()
        except TimeoutError:
            return _error(503, "too many requests at once; retry shortly", **{"Retry-After": "1"})
        try:
            return await _accept(request)
        finally:
            slots.release()

    async def _accept(request: Request) -> JSONResponse:
        body = bytearray()
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    body.extend(chunk)
                    if len(body) > MAX_BODY_BYTES:
                        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
        except TimeoutError:
            return _error(
                408, f"body not received within {body_timeout:g} s", **{"Connection": "close"}
            )
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "body is not UTF-8")
        try:
            payload = loads_line(text)
        except InvalidRecord as exc:
            return _error(400, f"body is {exc}")
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            return _error(422, "empty list: send one record or a list of records")
        if len(items) > MAX_BATCH:
            return _error(413, f"at most {MAX_BATCH} records per request")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        lines, ids, problems = [], [], []
        for i, item in enumerate(items):
            try:
                if isinstance(item, dict) and "received_at" in item:
                    raise InvalidRecord(
                        "invalid field", "received_at is set by the collector, not the client"
                    )
                rec = validate_record(item)
            except InvalidRecord as exc:
                problems.append(str(exc) if len(items) == 1 else f"record {i}: {exc}")
                continue
            if not rec.client_feedback_id:
                # Every post is its own record: two users' identical thumbs-downs must not
                # collapse. (A client that retries sends its own feedback_id to land once.)
                item = {**item, "feedback_id": uuid.uuid4().hex}
                rec = validate_record(item)
            rec = dataclasses.replace(rec, received_at=now)
            line = record_to_json(rec)
            if len(line.encode("utf-8")) > MAX_LINE_BYTES:
                problems.append(f"record {i}: larger than {MAX_LINE_BYTES} bytes")
                continue
            lines.append(line)
            ids.append(rec.feedback_id)
        if problems:
            # All or nothing, so a client can fix and resend the whole request.
            return _error(422, "; ".join(problems))
        # File I/O off the event loop; the writer's lock keeps lines whole.
        await asyncio.to_thread(writer.write_lines, lines)
        return JSONResponse({"accepted": len(lines), "feedback_ids": ids}, status_code=202)

    async def health(request: Request) -> JSONResponse:
        runtime.ensure_started()
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Only when the app is served on its own: a mounted app's lifespan never runs.
        runtime.ensure_started()
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.close)

    app = Starlette(
        routes=[
            Route("/v1/feedback", post_feedback, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.writer = writer
    app.state.collector = runtime
    return app


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a connection that has not sent a complete request head
    within ``header_timeout`` seconds (after connecting, or after its previous response) is
    closed. uvicorn alone waits for ever, so a few hundred such connections hold it."""

    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = self.loop.call_later(
            self.header_timeout, self._header_timed_out, self.cycle
        )

    def _header_timed_out(self, cycle_when_armed: object) -> None:
        # Still the same cycle (no new request head arrived) and nothing running: close.
        idle = self.cycle is cycle_when_armed and (
            self.cycle is None or self.cycle.response_complete
        )
        if idle and not self.transport.is_closing():
            self.transport.close()


def server_config(
    app,
    host: str = "127.0.0.1",
    port: int = 8077,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    **kwargs,
) -> uvicorn.Config:
    """A uvicorn config for the collector with slow-client limits (header timeout,
    keep-alive timeout, connection limit, bounded request head)."""
    protocol = type(
        "CollectorHTTPProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout}
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=5,
        limit_concurrency=max_connections,
        h11_max_incomplete_event_size=64 * 1024,  # request line + headers
        **kwargs,
    )
