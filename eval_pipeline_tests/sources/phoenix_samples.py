"""Phoenix span samples and an in-process Phoenix for the tests that need no server.

The sample files under fixtures/phoenix were captured from Phoenix 20.26.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

SAMPLES = Path(__file__).parent.parent / "fixtures" / "phoenix"


def load(name: str):
    return json.loads((SAMPLES / name).read_text())


def llm_span(attrs: dict, **over) -> dict:
    span = {
        "id": "U3Bhbjox",
        "name": "ChatCompletion",
        "context": {"trace_id": "a" * 32, "span_id": "b" * 16},
        "span_kind": "LLM",
        "parent_id": None,
        "start_time": "2026-03-01T10:00:00+00:00",
        "end_time": "2026-03-01T10:00:01.5+00:00",
        "status_code": "OK",
        "status_message": "",
        "attributes": attrs,
        "events": [],
    }
    span.update(over)
    return span


class Script:
    """An in-process Phoenix: answers requests from a list of (matcher, response) rules."""

    def __init__(self, handler):
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request, len(self.requests))
