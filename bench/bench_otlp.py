"""The OTLP receiver: LLM spans per second sustained, ingest-to-inbox latency, and loss.

`eval-pipeline otlp serve` runs as its own process. The spans are OpenInference LLM spans
made by the OpenTelemetry SDK and encoded by its OTLP exporter's own encoder in batches
of 512 (the BatchSpanProcessor's default), as an instrumented service sends them.

1. Receiver: the batches, made and encoded beforehand, are POSTed by two concurrent
   senders (two app instances, or a Collector's two consumers). Measured: spans/s
   acknowledged (each acknowledged span is durable: fdatasync-ed in a write-ahead file),
   the receiver's CPU seconds, the time a batch waits for its answer, and ingest-to-inbox
   latency: from a batch's POST to its records being visible in a published inbox file
   (polled every 50 ms; the receiver publishes files every ``PUBLISH_S``).
2. End to end: two app processes create spans and export them live with the SDK's
   BatchSpanProcessor and OTLP/HTTP exporter. On this 2-core machine the apps' own span
   creation and encoding cost more CPU than the receiver, so this rate is the apps'.

Loss: the inbox must hold every span of both phases exactly once.

The baseline, in this process: appending the same records as JSON lines to one file and
fsyncing once (the least any writer of this inbox does).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from eval_pipeline.core.sources.otlp.writer import keys_in

N_REPLAY = int(os.environ.get("BENCH_OTLP_SPANS", 30_000))
N_LIVE = int(os.environ.get("BENCH_OTLP_LIVE_SPANS", 8_000))
BATCH = 512
SENDERS = 2
APPS = 2
PUBLISH_S = 0.5
TOKEN = "bench-token"


def _attrs(i: int) -> dict:
    return {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-bench",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are a helpful support assistant.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": f"How do I reset my password? (ticket {i})",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Open Settings, then Security, then Reset. " * 3,
        "llm.token_count.prompt": 42,
        "llm.token_count.completion": 30,
        "session.id": f"s{i % 1000}",
        "metadata": json.dumps({"segment": "support", "prompt_version": "v2"}),
    }


def _sdk_spans(first: int, count: int, exporter) -> object:
    """A TracerProvider whose spans go to ``exporter`` through the batching processor."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench-app"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=max(count, BATCH) + 1,
            max_export_batch_size=BATCH,
            schedule_delay_millis=50,
        )
    )
    tracer = provider.get_tracer("bench")
    for i in range(first, first + count):
        with tracer.start_as_current_span("ChatCompletion", attributes=_attrs(i)):
            pass
    provider.shutdown()  # waits until every batch is exported
    return provider


def _encoded_batches(count: int) -> list[bytes]:
    """``count`` SDK spans, encoded in batches by the OTLP exporter's own encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    batches: list[bytes] = []

    class Encoding(SpanExporter):
        def export(self, spans):
            batches.append(encode_spans(spans).SerializeToString())
            return SpanExportResult.SUCCESS

    _sdk_spans(10_000_000, count, Encoding())
    return batches


def _app(endpoint: str, first: int, count: int, out) -> None:
    """One instrumented app process: makes and exports ``count`` spans live."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    failed = []

    class Counting(OTLPSpanExporter):
        def export(self, spans):
            result = super().export(spans)
            if result != SpanExportResult.SUCCESS:
                failed.append(len(spans))
            return result

    try:
        exporter = Counting(endpoint=endpoint, headers={"Authorization": f"Bearer {TOKEN}"})
        _sdk_spans(first, count, exporter)
        out.send((time.time(), sum(failed)))
    except BaseException as exc:  # report it: a forked child's death is otherwise silent
        out.send((None, f"{type(exc).__name__}: {exc}"))
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _baseline(records: list[dict], path: Path) -> float:
    """Lines per second: json.dumps and append every record, fsync once."""
    t = time.monotonic()
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return len(records) / (time.monotonic() - t)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class InboxWatch:
    """When each span (by key) first became visible in a published inbox file."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.files: set[Path] = set()
        self.seen: dict[str, float] = {}
        self.lines = 0

    def poll(self) -> None:
        now = time.time()
        for path in self.inbox.glob("*/*.jsonl"):
            if path not in self.files:
                self.files.add(path)
                data = path.read_bytes()
                self.lines += data.count(b"\n")
                for key in keys_in(data):
                    self.seen.setdefault(key, now)

    def watch_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll()
            time.sleep(0.05)

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.seen) < n and time.time() < deadline:
            self.poll()
            time.sleep(0.02)


def _start_receiver(inbox: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from eval_pipeline.cli import main; sys.exit(main())",
            "otlp",
            "serve",
            "--port",
            str(port),
            "--inbox",
            str(inbox),
            "--publish-seconds",
            str(PUBLISH_S),
        ],
        env={**os.environ, "EVAL_OTLP_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the receiver did not start")
        time.sleep(0.05)


def _replay(url: str, batches: list[bytes]) -> tuple[float, list[float], dict[int, float]]:
    """POST the batches from SENDERS threads. (wall s, answer ms per batch, sent at)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-protobuf"}
    answer_ms: list[float] = []
    sent_at: dict[int, float] = {}
    todo = iter(range(len(batches)))
    lock = threading.Lock()
    failures: list[int] = []

    def sender() -> None:
        with httpx.Client(headers=headers, timeout=60) as client:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                sent_at[i] = time.time()
                t = time.monotonic()
                status = client.post(url, content=batches[i]).status_code
                answer_ms.append((time.monotonic() - t) * 1000)
                if status != 200:
                    failures.append(i)

    started = time.monotonic()
    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} batches not acknowledged")
    return time.monotonic() - started, answer_ms, sent_at


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_otlp_"))
    inbox = work / "inbox"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1/traces"
    t = time.monotonic()
    batches = _encoded_batches(N_REPLAY)
    prep_rate = N_REPLAY / (time.monotonic() - t)
    batch_keys = [keys_of_batch(b) for b in batches]
    receiver = _start_receiver(inbox, port)
    watch = InboxWatch(inbox)
    try:
        # 1. The receiver, fed as fast as two senders can.
        cpu0 = _cpu_seconds(receiver.pid)
        stop = threading.Event()
        watcher = threading.Thread(target=watch.watch_until, args=(stop,))
        watcher.start()
        wall, answer_ms, sent_at = _replay(url, batches)
        cpu = _cpu_seconds(receiver.pid) - cpu0
        watch.wait_for(N_REPLAY, timeout=30)
        stop.set()
        watcher.join()
        latencies = [
            watch.seen[key] - sent_at[i]
            for i, keys in enumerate(batch_keys)
            for key in keys
            if key in watch.seen
        ]
        # 2. End to end: live apps with the SDK's batching exporter.
        ctx = multiprocessing.get_context("fork")
        per_app = N_LIVE // APPS
        live_start = time.time()
        pipes, procs = [], []
        for k in range(APPS):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_app, args=(url, k * per_app, per_app, send))
            p.start()
            pipes.append(recv)
            procs.append(p)
        results = [pipe.recv() for pipe in pipes]
        if any(r[0] is None for r in results):
            raise RuntimeError(f"an app process failed: {[r[1] for r in results]}")
        for p in procs:
            p.join(30)
        live_wall = max(r[0] for r in results) - live_start
        live_failed = sum(r[1] for r in results)
        watch.wait_for(N_REPLAY + per_app * APPS, timeout=30)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
    watch.poll()
    total = N_REPLAY + per_app * APPS
    lines = [
        line
        for path in sorted(inbox.glob("*/*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    distinct = len(set(keys_in("\n".join(lines).encode())))
    records = [json.loads(x) for x in lines[:20_000]]
    base_rate = _baseline(records, work / "baseline.jsonl")
    rate = N_REPLAY / wall
    print(
        f"spans: OpenInference LLM spans made by the OpenTelemetry SDK, encoded by its OTLP "
        f"exporter in batches of {BATCH} ({prep_rate:,.0f} spans/s made+encoded in one process)"
    )
    print(
        f"receiver   {N_REPLAY:,} spans from {SENDERS} concurrent senders: {rate:,.0f} spans/s "
        f"acknowledged durable (aim >= 5,000); {wall:.2f} s wall; receiver CPU {cpu:.2f} s "
        f"= {N_REPLAY / cpu:,.0f} spans per receiver CPU-second"
    )
    print(
        f"answer     per {BATCH}-span request (decode, map, fdatasync, answer): "
        f"p50 {_pct(answer_ms, 0.5):.0f} ms, p99 {_pct(answer_ms, 0.99):.0f} ms"
    )
    print(
        f"latency    POST -> visible in a published inbox file (files published every "
        f"{PUBLISH_S} s): p50 {_pct(latencies, 0.5):.2f} s, p99 {_pct(latencies, 0.99):.2f} s"
    )
    print(
        f"end-to-end {per_app * APPS:,} spans made and exported live by {APPS} app processes "
        f"(BatchSpanProcessor + OTLPSpanExporter): {per_app * APPS / live_wall:,.0f} spans/s, "
        f"{live_failed} spans failed to export"
    )
    loss = total - distinct
    print(
        f"loss       sent {total:,}, inbox lines {len(lines):,}, distinct spans {distinct:,}: "
        f"lost {loss}, duplicated {len(lines) - distinct}; receiver answered "
        f"{health['statuses']}" + ("" if loss == 0 and len(lines) == distinct else "   <-- LOSS")
    )
    print(
        f"baseline   json.dumps + append + one fsync of the same records, in this process: "
        f"{base_rate:,.0f} lines/s"
    )
    print(f"ratio      receiver spans/s / baseline lines/s: {rate / base_rate:.3f}x")


def keys_of_batch(body: bytes) -> list[str]:
    """The trace:span keys of an encoded batch, as the inbox records will carry them."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest.FromString(body)
    return [
        f"{s.trace_id.hex()}:{s.span_id.hex()}"
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
