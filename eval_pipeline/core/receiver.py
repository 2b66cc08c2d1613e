"""What every HTTP receiver of untrusted data here shares (the feedback collector, the OTLP
receiver): the bearer-token rule and the limits that keep slow clients from holding it.

Bearer tokens: the scheme is case-insensitive (RFC 9110), the token is compared in constant
time. Slow clients: uvicorn closes idle keep-alive connections but lets a client send its
request head as slowly as it likes, so a few hundred such connections hold the server;
``HeaderTimeoutProtocol`` closes one whose head is not complete in time, and
``server_config`` also bounds connections, keep-alive and the head's size. Body timeouts
and in-flight limits are per application (each answers them in its own protocol's words).
"""

from __future__ import annotations

import hmac

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0  # seconds for a connection to send a complete request head
MAX_CONNECTIONS = 1000  # uvicorn's limit_concurrency: open connections + running tasks


def bearer_problem(authorization: str, expected_token: bytes) -> str | None:
    """Why a request's Authorization header is refused (401), or None when it is good."""
    if not authorization:
        return "missing Authorization header (expected 'Bearer <token>')"
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode("utf-8", "surrogateescape"), expected_token
    ):
        return "invalid bearer token"
    return None


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
    """A uvicorn config with slow-client limits (header timeout, keep-alive timeout,
    connection limit, bounded request head)."""
    protocol = type(
        "ReceiverHTTPProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout}
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
