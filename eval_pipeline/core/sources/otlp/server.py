"""The OTLP/HTTP trace receiver: ``POST /v1/traces`` as an ASGI app, and its limits.

One request, in order: bearer token (the feedback collector's rules: 401 without the
header, with another scheme or another token; the scheme is case-insensitive, the token
compared in constant time), content type (415 unless
``application/x-protobuf`` or ``application/json``), backpressure (429 when too many
requests are in progress, 503 when the disk is nearly full or a write fails, both with
``Retry-After``, which OTLP exporters honour), the body (413 over the size limit, 408 when
it does not arrive in time, gzip inflated up to a limit), decoding (400 for a body that is
not an ``ExportTraceServiceRequest``), the span count (413), then mapping and the durable
write. Only then 200, with an ``ExportTraceServiceResponse`` in the request's encoding;
spans that could not be mapped are counted in ``partial_success`` with the reasons (a
success: clients do not retry it).

The header timeout is a connection-level limit, so it lives in ``HeaderTimeoutH11``, the
HTTP protocol class ``eval-pipeline otlp serve`` gives uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from eval_pipeline.core.sources.openinference import TraceRules
from eval_pipeline.core.sources.otlp import decode
from eval_pipeline.core.sources.otlp.mapping import Mapped, map_spans
from eval_pipeline.core.sources.otlp.writer import InboxWriter, WriteFailed

log = logging.getLogger(__name__)

TOKEN_ENV = "EVAL_OTLP_TOKEN"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 * 1024 * 1024  # as sent (compressed or not)
    max_decoded_bytes: int = 64 * 1024 * 1024  # after gzip
    max_spans: int = 20_000  # per request
    max_attribute_chars: int = 64_000  # longer string values are cut and marked
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_in_flight: int = 64  # requests being received or written at once
    min_free_bytes: int = 256 * 1024 * 1024  # below this on the inbox's disk: 503
    retry_after_busy_s: int = 1
    retry_after_disk_s: int = 30


@dataclass
class Stats:
    requests: int = 0
    spans_received: int = 0
    records_written: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)


def _error(status: int, message: str, **headers: str) -> Response:
    """An error as JSON shaped like google.rpc.Status (code, message), whatever the request's
    encoding: exporters only log it, and people read it."""
    return JSONResponse(
        {"code": status, "message": message}, status_code=status, headers=headers or None
    )


class ReceiverRuntime:
    """Start-up recovery and the thread that publishes old files and recovers others'."""

    def __init__(self, writer: InboxWriter, tick_s: float, recover_every_s: float = 30.0):
        self.writer = writer
        self.tick_s = tick_s
        self.recover_every_s = recover_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = False

    def start(self) -> None:
        if self.started:
            return
        self.writer.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="otlp-publish", daemon=True)
        self._thread.start()
        self.started = True

    def _loop(self) -> None:
        last_recover = time.monotonic()
        while not self._stop.wait(self.tick_s):
            try:
                self.writer.publish_old()
                if time.monotonic() - last_recover >= self.recover_every_s:
                    last_recover = time.monotonic()
                    # Files of another receiver on the same inbox that died since.
                    self.writer.recover_abandoned()
            except OSError:  # keep going; the next tick tries again
                log.exception("otlp receiver: publishing failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.writer.close(timeout=10)
        self.started = False


def create_app(
    inbox: Path | str,
    token: str | None = None,
    *,
    rules: TraceRules | None = None,
    limits: Limits | None = None,
    max_file_records: int = 100_000,
    max_age_s: float = 5.0,
    fsync: bool = True,
) -> Starlette:
    """The receiver app. ``token`` defaults to $EVAL_OTLP_TOKEN (required)."""
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if not token:
        raise RuntimeError(f"no OTLP token: set {TOKEN_ENV} (clients send it as a bearer token)")
    expected_token = token.encode()
    rules = rules or TraceRules()
    limits = limits or Limits()
    inbox = Path(inbox)
    writer = InboxWriter(inbox, max_file_records=max_file_records, max_age_s=max_age_s, fsync=fsync)
    runtime = ReceiverRuntime(writer, tick_s=min(1.0, max(0.05, max_age_s / 4)))
    stats = Stats()
    in_flight = 0
    disk_checked = [0.0, True]  # (when, enough free space): statvfs at most every 0.5 s

    def disk_ok() -> bool:
        now = time.monotonic()
        if now - disk_checked[0] > 0.5:
            disk_checked[0] = now
            disk_checked[1] = shutil.disk_usage(inbox).free >= limits.min_free_bytes
        return bool(disk_checked[1])

    def process(body: bytes, media: str, encoding: str | None) -> tuple[int, Mapped, int, int]:
        """Decode, map and write, in a worker thread. (spans, mapping, written, duplicates)"""
        raw = decode.decompress(body, encoding, limits.max_decoded_bytes)
        request = decode.parse_request(raw, media)
        n = decode.count_spans(request)
        if n > limits.max_spans:
            raise decode.BadRequest(413, f"{n} spans in one request; at most {limits.max_spans}")
        mapped = map_spans(decode.iter_spans(request, limits.max_attribute_chars), rules)
        written, dups = writer.write(mapped.records)
        return n, mapped, written, dups

    async def receive_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            raise decode.BadRequest(413, f"body larger than {limits.max_body_bytes} bytes")
        body = bytearray()
        deadline = time.monotonic() + limits.body_timeout_s
        stream = request.stream().__aiter__()
        while True:
            left = deadline - time.monotonic()
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(left, 0.001))
            except StopAsyncIteration:
                return bytes(body)
            except TimeoutError:
                raise decode.BadRequest(
                    408, f"body not received within {limits.body_timeout_s:g} s"
                ) from None
            body.extend(chunk)
            if len(body) > limits.max_body_bytes:
                raise decode.BadRequest(413, f"body larger than {limits.max_body_bytes} bytes")

    async def post_traces(request: Request) -> Response:
        stats.requests += 1
        response = await _handle(request)
        stats.statuses[response.status_code] += 1
        return response

    async def _handle(request: Request) -> Response:
        nonlocal in_flight
        auth = request.headers.get("authorization", "")
        if not auth:
            return _error(
                401,
                "missing Authorization header (expected 'Bearer <token>')",
                **{"WWW-Authenticate": "Bearer"},
            )
        # The feedback collector's rule: the scheme is case-insensitive (RFC 9110), the
        # token is compared in constant time.
        scheme, _, credentials = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"), expected_token
        ):
            return _error(401, "invalid bearer token", **{"WWW-Authenticate": "Bearer"})
        media = decode.media_type(request.headers.get("content-type"))
        if media is None:
            return _error(
                415,
                f"unsupported Content-Type {request.headers.get('content-type')!r}: "
                f"send {decode.PROTOBUF} or {decode.JSON}",
            )
        if in_flight >= limits.max_in_flight:
            return _error(
                429,
                f"{in_flight} requests in progress; retry later",
                **{"Retry-After": str(limits.retry_after_busy_s)},
            )
        if not disk_ok():
            return _error(
                503,
                "the trace inbox's disk is nearly full; retry later",
                **{"Retry-After": str(limits.retry_after_disk_s)},
            )
        in_flight += 1
        try:
            body = await receive_body(request)
            n, mapped, written, dups = await asyncio.to_thread(
                process, body, media, request.headers.get("content-encoding")
            )
        except decode.BadRequest as exc:
            return _error(exc.status, exc.reason)
        except WriteFailed as exc:
            log.error("otlp receiver: %s", exc)
            disk_checked[0] = 0.0
            return _error(
                503,
                "could not write the trace inbox; retry later",
                **{"Retry-After": str(limits.retry_after_disk_s)},
            )
        finally:
            in_flight -= 1
        # Counted here, on the event loop, so concurrent requests never race on them.
        stats.spans_received += n
        stats.records_written += written
        stats.duplicates += dups
        stats.rejected.update(mapped.rejects)
        stats.skipped.update(mapped.skips)
        content_type = decode.JSON if media == decode.JSON else decode.PROTOBUF
        return Response(
            decode.encode_response(media, mapped.rejected, mapped.message()),
            status_code=200,
            media_type=content_type,
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "ok": True,
                "requests": stats.requests,
                "spans_received": stats.spans_received,
                "records_written": stats.records_written,
                "duplicates_skipped": stats.duplicates,
                "rejected": dict(stats.rejected),
                "skipped": dict(stats.skipped),
                "statuses": {str(k): v for k, v in stats.statuses.items()},
                "pending_in_write_ahead": writer.pending(),
                "files_published": writer.files_published,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(runtime.start)
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.close)

    app = Starlette(
        routes=[
            Route("/v1/traces", post_traces, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.writer = writer
    app.state.runtime = runtime
    app.state.stats = stats
    return app


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for a request's headers.

    uvicorn closes idle keep-alive connections but lets a client send headers as slowly
    as it likes; this closes a connection whose request line and headers are not complete
    within ``header_timeout_s`` of its first byte (or of the connection opening).
    """

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_headers():
            self._arm()
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests the keep-alive timeout applies; headers are timed from the
        # next request's first byte (data_received).
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutH11]:
    return type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout_s": seconds})
