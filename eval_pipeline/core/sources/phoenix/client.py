"""The HTTP side of Phoenix: a small client with bounded retries, the paged span query, and
the span-annotation POST.

Span pages: ``GET /v1/projects/{project}/spans`` with ``start_time`` / ``end_time`` =
``[day, day + 1)`` (Phoenix compares them with the span's start time), paged with the
cursor until ``next_cursor`` is null. Phoenix answers 404 (plain text) when the project
does not exist, which includes a name no span has been sent to yet (projects are created on
the first span); an existing project answers 200 with an empty page for a day without
spans. A 404 is followed by ``GET /v1/projects/{p}`` to be sure: 404 there means the
project is unknown (a typo must never read as a quiet day, so the day fails); 200 means the
day is genuinely empty.

Connection errors, timeouts and HTTP 408, 429, 500, 502, 503 and 504 are retried by the
shared ``core.http.RetryPolicy``; when the retries run out the request raises
``PhoenixUnavailable``. Phoenix keeps its own waits: doubling from ``backoff_s`` with
``Retry-After`` as the floor, at most 30 s, without jitter (one reader per day, not a crowd
of clients to spread out). Error text is scrubbed of the API key before it is cut short.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from eval_pipeline.core.http import GaveUp, Retryable, RetryPolicy, parse_retry_after, scrub
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_WAIT_S = 30.0


class DoublingBackoff(RetryPolicy):
    """The shared retry policy with Phoenix's waits: ``backoff_base * 2**(retry - 1)``, or
    the Retry-After if longer, capped at ``backoff_max``; deterministic (no jitter)."""

    def backoff(
        self, retry: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        wait = self.backoff_base * 2 ** (retry - 1)
        return min(max(wait, retry_after or 0.0), self.backoff_max)


class PhoenixUnavailable(RuntimeError):
    """Phoenix could not be reached, or kept answering 5xx / 429 / timing out."""


class PhoenixClient:
    """A small httpx client with bounded retries. Never logs the API key."""

    def __init__(
        self,
        cfg: PhoenixConfig,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self._sleep = sleep
        self._policy = DoublingBackoff(
            max_attempts=1 + max(0, cfg.retries),
            backoff_base=cfg.backoff_s,
            backoff_max=MAX_WAIT_S,
            retry_statuses=RETRY_STATUSES,
        )
        headers = {"Accept": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._http = httpx.Client(
            base_url=cfg.base_url, timeout=cfg.timeout_s, headers=headers, transport=transport
        )

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """What error text must never show."""
        return (self.cfg.api_key,)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PhoenixClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Any = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """The response to the request, retried on connection errors, timeouts, 429 and 5xx.

        Any other status is returned for the caller to interpret. Raises PhoenixUnavailable
        when the retries are used up.
        """

        def attempt() -> httpx.Response:
            try:
                resp = self._http.request(method, path, params=params, json=json_body)
            except httpx.TimeoutException as exc:
                raise Retryable(
                    f"timed out after {self.cfg.timeout_s:g} s ({type(exc).__name__})"
                ) from None
            except httpx.TransportError as exc:
                reason = f"could not connect ({type(exc).__name__}: {exc})"
                raise Retryable(scrub(reason, self.secrets)) from None
            if self._policy.retryable_status(resp.status_code):
                raise Retryable(
                    f"HTTP {resp.status_code}: {body_excerpt(resp, secrets=self.secrets)}",
                    parse_retry_after(resp.headers.get("retry-after")),
                    resp,
                )
            return resp

        try:
            return self._policy.run(attempt, sleep=self._sleep)
        except GaveUp as exc:
            raise PhoenixUnavailable(
                f"Phoenix at {self.cfg.safe_url()} did not answer {what} after "
                f"{exc.attempts} attempts: {exc.reason}"
            ) from None

    def post_span_annotations(self, payloads: list[dict]) -> httpx.Response:
        """``POST /v1/span_annotations?sync=true`` (sync: the answer has one id per
        annotation, in request order); the status is the caller's to interpret."""
        return self.request(
            "POST",
            "/v1/span_annotations",
            params={"sync": "true"},
            json_body={"data": payloads},
            what="POST /v1/span_annotations",
        )


def body_excerpt(resp: httpx.Response, limit: int = 200, secrets: Iterable[str | None] = ()) -> str:
    """The body on one line, scrubbed of ``secrets`` before it is cut to ``limit``."""
    try:
        text = resp.text
    except Exception:  # undecodable body: the status says enough
        return "(unreadable body)"
    text = " ".join(scrub(text, secrets).split())
    return text[:limit] or "(empty body)"


def project_path(project: str) -> str:
    return "/v1/projects/" + urllib.parse.quote(project, safe="")


# --- reading spans ----------------------------------------------------------------------


@dataclass
class FetchResult:
    spans: list[dict]
    pages: int
    project_exists: bool


def fetch_part_spans(client: PhoenixClient, day: dt.date) -> FetchResult:
    """The day's spans of the part kinds (RETRIEVER, TOOL): a trace's retrieved documents
    and tool calls. Phoenix filters them by kind; the attribute filters do not apply (a
    retriever span rarely carries the app's attributes)."""
    return fetch_spans(client, day, kinds=client.cfg.part_kinds)


def fetch_spans(
    client: PhoenixClient, day: dt.date, kinds: tuple[str, ...] | None = None
) -> FetchResult:
    """Every span of the configured filter that started on ``day`` (UTC), all pages; with
    ``kinds``, every span of those kinds instead."""
    cfg = client.cfg
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    params: list[tuple[str, Any]] = [
        ("start_time", start.isoformat()),
        ("end_time", (start + dt.timedelta(days=1)).isoformat()),
        ("limit", cfg.page_size),
    ]
    if kinds is not None:
        params.extend(("span_kind", k) for k in kinds)
    elif cfg.root_only:
        # Roots are at most one per trace, so all root kinds are fetched and the unwanted
        # ones counted as skipped (that count tells a user whose roots are CHAIN spans why
        # nothing came in). Child spans can be many per trace: filter those in Phoenix.
        params.append(("parent_id", "null"))
    else:
        params.extend(("span_kind", k) for k in cfg.span_kinds)
    for key, value in cfg.attribute_filters if kinds is None else ():
        # Phoenix JSON-parses the value: encode it so "2" stays a string, 2 a number.
        params.append(("attribute", f"{key}:{json.dumps(value)}"))
    path = project_path(cfg.project) + "/spans"
    spans: list[dict] = []
    seen_cursors: set[str] = set()
    cursor: str | None = None
    pages = 0
    while True:
        page_params = params + ([("cursor", cursor)] if cursor else [])
        resp = client.request("GET", path, params=page_params, what=f"GET {path}")
        pages += 1
        if resp.status_code == 404 and pages == 1:
            return FetchResult([], pages, _check_project(client))
        if resp.status_code in (401, 403):
            raise PhoenixUnavailable(
                f"Phoenix at {cfg.safe_url()} refused the span query (HTTP "
                f"{resp.status_code}): set PHOENIX_API_KEY to a valid API key"
            )
        if resp.status_code != 200:
            raise PhoenixUnavailable(
                f"Phoenix at {cfg.safe_url()} answered HTTP {resp.status_code} to GET {path} "
                f"(page {pages}): {body_excerpt(resp, secrets=client.secrets)}"
            )
        try:
            body = resp.json()
            data = body["data"]
            cursor = body.get("next_cursor")
        except (ValueError, KeyError, TypeError) as exc:
            raise PhoenixUnavailable(
                f"Phoenix at {cfg.safe_url()} sent an unreadable span page ({exc!r}): "
                f"{body_excerpt(resp, secrets=client.secrets)}"
            ) from None
        if not isinstance(data, list):
            raise PhoenixUnavailable(f"Phoenix span page {pages}: 'data' is not a list")
        spans.extend(data)
        if not cursor:
            return FetchResult(spans, pages, True)
        if cursor in seen_cursors:
            raise PhoenixUnavailable(f"Phoenix returned the same cursor twice ({cursor!r})")
        seen_cursors.add(cursor)


def _check_project(client: PhoenixClient) -> bool:
    cfg = client.cfg
    path = project_path(cfg.project)
    resp = client.request("GET", path, what=f"GET {path}")
    if resp.status_code == 200:
        return True
    if resp.status_code == 404:
        raise PhoenixUnavailable(
            f"Phoenix project {cfg.project!r} not found at {cfg.safe_url()} "
            f"({body_excerpt(resp, secrets=client.secrets)}); "
            "set EVAL_PHOENIX_PROJECT to an existing project"
        )
    raise PhoenixUnavailable(
        f"Phoenix at {cfg.safe_url()} answered HTTP {resp.status_code} to GET {path}: "
        f"{body_excerpt(resp, secrets=client.secrets)}"
    )
