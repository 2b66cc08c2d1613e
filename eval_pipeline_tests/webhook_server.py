"""A real HTTP server on 127.0.0.1 that records webhook posts.

Three flavours, picked by ``kind``:
- ``slack``: any JSON body, answered ``status`` (a Slack-compatible incoming webhook);
- ``signed``: a generic webhook receiver that verifies ``X-Eval-Signature`` itself, written
  from the documented scheme (not by calling the sender's code): HMAC-SHA256 over
  ``t + "." + raw body``, compared with ``hmac.compare_digest``, timestamps more than
  ``tolerance_s`` from now refused. A bad or stale signature is answered 401 and recorded in
  ``rejected``, not in ``posts``;
- ``pagerduty``: checks an Events API v2 body the way PagerDuty does (routing key,
  event_action, dedup_key <= 255, and for a trigger summary <= 1024, source, severity) and
  answers 202 ``{"status": "success"}`` or 400 with the errors.
``echo_path`` makes an error answer quote the request path (a receiver that leaks the
secret part of its own URL back at the sender); ``retry_after`` adds that header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PD_SEVERITIES = {"critical", "error", "warning", "info"}


def check_pagerduty(body: dict) -> list[str]:
    """What PagerDuty's Events API v2 would reject in ``body``."""
    errors = []
    if not isinstance(body.get("routing_key"), str) or not body.get("routing_key"):
        errors.append("routing_key missing")
    action = body.get("event_action")
    if action not in {"trigger", "acknowledge", "resolve"}:
        errors.append(f"bad event_action {action!r}")
    key = body.get("dedup_key")
    if action in {"acknowledge", "resolve"} and not key:
        errors.append("dedup_key required")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        errors.append("dedup_key longer than 255")
    if action == "trigger":
        payload = body.get("payload") or {}
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            errors.append("payload.summary missing or longer than 1024")
        if not payload.get("source"):
            errors.append("payload.source missing")
        if payload.get("severity") not in PD_SEVERITIES:
            errors.append(f"bad payload.severity {payload.get('severity')!r}")
    return errors


def verify(secret: str, header: str | None, body: bytes, tolerance_s: float) -> str | None:
    """None if the signature holds, else why not."""
    if not header:
        return "no signature"
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.partition("=")
        fields.setdefault(key.strip(), []).append(value.strip())
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return "no timestamp"
    if abs(time.time() - t) > tolerance_s:
        return "stale timestamp"
    expected = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256)
    if not any(hmac.compare_digest(expected.hexdigest(), v) for v in fields.get("v1", [])):
        return "bad signature"
    return None


class WebhookReceiver:
    """Context manager. ``status`` is what it answers; ``posts`` every well-formed post."""

    def __init__(
        self,
        status: int | None = None,
        *,
        kind: str = "slack",
        secret: str | None = None,
        tolerance_s: float = 300,
        echo_path: bool = False,
        retry_after: str | None = None,
        path: str = "/hooks/secret-token-123",
    ) -> None:
        self.kind = kind
        self.status = status if status is not None else (202 if kind == "pagerduty" else 200)
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.echo_path = echo_path
        self.retry_after = retry_after
        self.posts: list[dict] = []
        self.rejected: list[str] = []
        self.requests = 0
        self.on_post = None  # called (no arguments) while a post is being answered
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests += 1
                if receiver.on_post is not None:
                    receiver.on_post()
                status, answer = receiver._handle(self.path, dict(self.headers), raw)
                self.send_response(status)
                if receiver.retry_after and status == 429:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.url = self.base + path

    def _handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, bytes]:
        headers = {k.lower(): v for k, v in headers.items()}
        if self.kind == "signed":
            problem = verify(
                self.secret or "", headers.get("x-eval-signature"), raw, self.tolerance_s
            )
            if problem:
                self.rejected.append(problem)
                return 401, problem.encode()
        try:
            body = json.loads(raw)
        except ValueError:
            self.rejected.append("not JSON")
            return 400, b"invalid JSON"
        if self.kind == "pagerduty":
            errors = check_pagerduty(body)
            if errors:
                self.rejected.append("; ".join(errors))
                return 400, json.dumps({"status": "invalid event", "errors": errors}).encode()
        # Every well-formed post is recorded, with what it was answered.
        post = {"path": path, "json": body, "raw": raw, "headers": headers, "answered": self.status}
        self.posts.append(post)
        if 200 <= self.status < 300:
            if self.kind == "pagerduty":
                answer = {"status": "success", "dedup_key": body.get("dedup_key")}
                return self.status, json.dumps(answer).encode()
            return self.status, b"ok"
        text = f"error for {path}" if self.echo_path else "error"
        return self.status, text.encode()

    def __enter__(self) -> WebhookReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
