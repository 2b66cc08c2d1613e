"""`eval-pipeline otlp serve` over HTTP: encodings, partial success, auth, bad input and
limits (each with its status), backpressure, and nothing already accepted lost."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from eval_pipeline import settings
from eval_pipeline_tests.sources.otlp_receiver import Receiver, inbox_lines
from eval_pipeline_tests.sources.otlp_requests import llm_attrs, request, span

pytestmark = pytest.mark.slow  # each test starts the receiver as its own process

PB = {"Content-Type": "application/x-protobuf"}


def post(receiver: Receiver, body: bytes, headers: dict | None = None, auth: bool = True):
    h = {**(receiver.headers if auth else {}), **PB, **(headers or {})}
    return httpx.post(receiver.url, content=body, headers=h, timeout=30)


def records(receiver: Receiver) -> list[dict]:
    receiver.stop()
    return [json.loads(line) for line in inbox_lines(receiver.inbox)]


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(
        settings.trace_inbox(),
        "--publish-seconds",
        "0.2",
        "--max-spans",
        "50",
        "--max-body-bytes",
        str(1024 * 1024),
        "--max-attribute-chars",
        "5000",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        log_path=tmp_path / "receiver.log",
    )
    with r:
        yield r


def test_protobuf_json_and_gzip_requests_land_in_the_inbox(receiver):
    ok = post(receiver, request(span(llm_attrs("q1?", "a1"))).SerializeToString())
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(ok.content)
    assert not parsed.HasField("partial_success")

    js = json_format.MessageToDict(request(span(llm_attrs("q2?", "a2"))))
    # OTLP/JSON carries ids as hex, not proto3's base64.
    s = js["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    trace_hex = "0af7651916cd43dd8448eb211c80319c"
    s["traceId"], s["spanId"] = trace_hex, "b7ad6b7169203331"
    r = post(receiver, json.dumps(js).encode(), {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json") and r.json() == {}

    zipped = gzip.compress(request(span(llm_attrs("q3?", "a3"))).SerializeToString())
    r = post(receiver, zipped, {"Content-Encoding": "gzip"})
    assert r.status_code == 200

    rows = {r["user_query"]: r for r in records(receiver)}
    assert set(rows) == {"q1?", "q2?", "q3?"}
    assert rows["q2?"]["trace_id"] == trace_hex
    assert rows["q2?"]["metadata"]["span_id"] == "b7ad6b7169203331"
    assert rows["q1?"]["metadata"]["latency_ms"] == 250.0
    assert rows["q1?"]["metadata"]["prompt_tokens"] == 10


def test_unmappable_spans_are_a_partial_success_and_others_are_skipped(receiver):
    trace = b"\x01" * 16
    root = span(llm_attrs("fine?", "yes"), trace_id=trace)
    child = span(llm_attrs("child?", "c"), trace_id=trace, parent=root.span_id)
    tool = span({"openinference.span.kind": "TOOL", "tool.name": "x"})
    failed = span(llm_attrs("boom?", "x"), error="upstream 500")
    no_answer = span({"openinference.span.kind": "LLM", "input.value": "hi"})
    body = request(root, child, tool, failed, no_answer)
    r = post(receiver, body.SerializeToString(), {"Content-Type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["message"]  # protobuf, said JSON
    r = httpx.post(
        receiver.url,
        content=json_format.MessageToJson(body).encode(),
        headers={**receiver.headers, "Content-Type": "application/json"},
    )
    # proto3 JSON's base64 ids are not OTLP/JSON's hex: a clear 400.
    assert r.status_code == 400 and "not hex" in r.json()["message"]
    r = post(receiver, body.SerializeToString())
    assert r.status_code == 200
    partial = ExportTraceServiceResponse.FromString(r.content).partial_success
    assert partial.rejected_spans == 2
    assert "span status ERROR (upstream 500)" in partial.error_message
    assert "no output" in partial.error_message
    health = receiver.health()
    assert health["skipped"] == {"not a root span": 1, "span kind TOOL": 1}
    assert [r["user_query"] for r in records(receiver)] == ["fine?"]


def test_bad_input_gets_its_status_and_loses_nothing_accepted(receiver):
    good = request(span(llm_attrs("kept?", "kept")))
    assert post(receiver, good.SerializeToString()).status_code == 200

    r = post(receiver, b"\x0a\xff\xff\xff\xff\x0fgarbage")
    assert r.status_code == 400 and "ExportTraceServiceRequest" in r.json()["message"]
    r = post(receiver, good.SerializeToString(), {"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = post(receiver, good.SerializeToString(), auth=False)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "missing Authorization" in r.json()["message"]
    r = post(receiver, good.SerializeToString(), {"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["message"] == "invalid bearer token"
    r = post(receiver, good.SerializeToString(), {"Authorization": f"Basic {receiver.token}"})
    assert r.status_code == 401
    # The scheme is case-insensitive, as for the feedback collector: accepted (a retry).
    r = post(receiver, good.SerializeToString(), {"Authorization": f"bearer {receiver.token}"})
    assert r.status_code == 200
    r = post(receiver, b"not gzip", {"Content-Encoding": "gzip"})
    assert r.status_code == 400
    r = post(receiver, good.SerializeToString(), {"Content-Encoding": "br"})
    assert r.status_code == 415
    many = request(*[span(llm_attrs(f"q{i}", "a")) for i in range(51)])
    r = post(receiver, many.SerializeToString())
    assert r.status_code == 413 and "at most 50" in r.json()["message"]
    r = post(receiver, b"\x00" * (1024 * 1024 + 1))
    assert r.status_code == 413
    bomb = gzip.compress(b"\x00" * (70 * 1024 * 1024))  # inflates past the 64 MiB limit
    r = post(receiver, bomb, {"Content-Encoding": "gzip"})
    assert r.status_code == 413

    # A huge attribute is cut to the limit and marked; the span is still accepted.
    huge = "x" * 200_000
    r = post(receiver, request(span(llm_attrs("big?", huge))).SerializeToString())
    assert r.status_code == 200
    assert post(receiver, good.SerializeToString()).status_code == 200  # a retry: no copy

    rows = {r["user_query"]: r for r in records(receiver)}
    assert set(rows) == {"kept?", "big?"}
    big = rows["big?"]
    assert big["assistant_response"].startswith("x" * 5000)
    assert big["assistant_response"].endswith("[truncated by eval-pipeline otlp: 200000 chars]")
    assert big["metadata"]["truncated_attributes"] == ["llm.output_messages.0.message.content"]


def test_slow_headers_and_slow_bodies_are_cut_off(receiver):
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")  # never finishes
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server
        assert 0.8 < time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        head = (
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Authorization: Bearer {receiver.token}\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b"\x0a\x00")
        reply = sock.recv(1000)
        assert reply.startswith(b"HTTP/1.1 408"), reply
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)
        assert sock.recv(100).startswith(b"HTTP/1.1 400")  # headers over 64 KiB


def test_backpressure_answers_429_and_503_with_retry_after(tmp_path):
    inbox = settings.trace_inbox()
    busy = Receiver(inbox, "--max-in-flight", "1", "--body-timeout", "5")
    with busy:
        # One request whose body is still arriving holds the only slot.
        sock = socket.create_connection(("127.0.0.1", busy.port), timeout=5)
        head = (
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Authorization: Bearer {busy.token}\r\nContent-Length: 100\r\n\r\n"
        )
        sock.sendall(head.encode())
        time.sleep(0.3)
        r = post(busy, request(span(llm_attrs("q", "a"))).SerializeToString())
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        sock.close()
    full = Receiver(inbox, "--min-free-bytes", str(10**18))
    with full:
        r = post(full, request(span(llm_attrs("q", "a"))).SerializeToString())
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    assert inbox_lines(inbox) == []


def test_concurrent_requests_are_all_written_once(receiver):
    sent: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(headers={**receiver.headers, **PB}, timeout=30) as c:
            for j in range(10):
                queries = [f"c{n}-{j}-{k}" for k in range(20)]
                body = request(*[span(llm_attrs(q, "a")) for q in queries])
                assert c.post(receiver.url, content=body.SerializeToString()).status_code == 200
                with lock:
                    sent.extend(queries)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [r["user_query"] for r in records(receiver)]
    assert sorted(got) == sorted(sent) and len(got) == 800
