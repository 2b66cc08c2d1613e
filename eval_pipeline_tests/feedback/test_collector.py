"""The feedback collector over real HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.feedback import inbox as feedback_inbox
from eval_pipeline.core.feedback import ingest as feedback
from eval_pipeline.core.feedback import records
from eval_pipeline.core.feedback.collector import create_app
from eval_pipeline.core.feedback.spool import recover_incoming

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn in a thread on a free port; stop() runs the app's shutdown (final rotation)."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/feedback"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)


def inbox_files(inbox: Path) -> list[Path]:
    return sorted(
        p for p in inbox.iterdir() if p.is_file() and feedback_inbox.is_candidate_name(p.name)
    )


def test_good_record_bad_token_bad_body():
    inbox = settings.feedback_inbox()
    app = create_app(inbox, TOKEN)
    with ThreadServer(app) as srv, httpx.Client(timeout=10) as http:
        good = {
            "trace_id": "t-1",
            "rating": "down",
            "comment": "wrong answer",
            "user_id": "u-9",
            "ts": "2026-10-22T10:00:00Z",
        }
        r = http.post(srv.url, json=good, headers=AUTH)
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 1
        fid = r.json()["feedback_ids"][0]

        r = http.post(srv.url, json=good)
        assert r.status_code == 401 and "missing Authorization" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
        r = http.post(srv.url, json=good, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"] == "invalid bearer token"
        assert TOKEN not in r.text

        r = http.post(srv.url, content=b'{"trace_id": "t-1", "rat', headers=AUTH)
        assert r.status_code == 400 and r.json()["error"].startswith("body is not JSON")
        r = http.post(srv.url, json={"trace_id": "t-1", "rating": "meh"}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["error"] == "unknown rating: 'meh' (expected 'up' or 'down')"
        r = http.post(srv.url, json={"rating": "up"}, headers=AUTH)
        assert r.status_code == 422 and r.json()["error"] == "missing field: trace_id"
        r = http.post(srv.url, json=[good, {"trace_id": 5, "rating": "up"}], headers=AUTH)
        assert r.status_code == 422 and r.json()["error"].startswith("record 1: invalid field")
        r = http.post(srv.url, content=b"x" * 2_000_000, headers=AUTH)
        assert r.status_code == 413
        r = http.post(srv.url, json={**good, "received_at": "2020-01-01"}, headers=AUTH)
        assert r.status_code == 422
        # Nothing is in the inbox until the file is rotated (here: on shutdown).
        assert inbox_files(inbox) == []
    files = inbox_files(inbox)
    assert len(files) == 1
    (rec,) = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert rec["trace_id"] == "t-1" and rec["received_at"].endswith("Z")
    assert records.validate_record(rec).feedback_id == fid
    assert list((inbox / ".incoming").iterdir()) == []


def test_concurrent_posts_no_loss_no_duplicate_no_half_file():
    inbox = settings.feedback_inbox()
    # Tiny rotation limits, so files are published many times while posts are in flight.
    app = create_app(inbox, TOKEN, max_records=7, max_bytes=4096, max_age_seconds=0.2)
    n = 200
    problems: list[str] = []
    seen_files: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        # Every file visible in the inbox must be complete: every line whole JSON, a final
        # newline, and its content never changes once seen.
        contents: dict[str, bytes] = {}
        while not stop.is_set():
            for p in inbox_files(inbox) if inbox.exists() else []:
                try:
                    data = p.read_bytes()
                except FileNotFoundError:
                    continue
                if not data.endswith(b"\n"):
                    problems.append(f"{p.name}: no final newline")
                for ln in data.splitlines():
                    try:
                        json.loads(ln)
                    except ValueError:
                        problems.append(f"{p.name}: half-written line {ln[:40]!r}")
                if p.name in contents and contents[p.name] != data:
                    problems.append(f"{p.name}: changed after it appeared")
                contents[p.name] = data
                seen_files.add(p.name)

    async def post_all(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:

            async def one(i: int) -> int:
                body = {
                    "trace_id": f"t-{i:03}",
                    "rating": "down" if i % 3 else "up",
                    "comment": f"comment {i} " + "é" * (i % 50),
                    "user_id": f"u{i}",
                }
                return (await http.post(url, json=body, headers=AUTH)).status_code

            return await asyncio.gather(*(one(i) for i in range(n)))

    watcher = threading.Thread(target=watch, daemon=True)
    with ThreadServer(app) as srv:
        watcher.start()
        statuses = asyncio.run(post_all(srv.url))
    stop.set()
    watcher.join(10)
    assert statuses == [202] * n
    assert problems == []
    files = inbox_files(inbox)
    assert len(files) > 10 and len(seen_files) > 1  # it really rotated under load
    records = [json.loads(x) for p in files for x in p.read_text().splitlines()]
    ids = sorted(r["trace_id"] for r in records)
    assert ids == [f"t-{i:03}" for i in range(n)]  # none lost, none twice
    assert list((inbox / ".incoming").iterdir()) == []
    # And they ingest to exactly n records.
    with store.connect(settings.duckdb_path()) as conn:
        for p in files:
            feedback.ingest_file(conn, p)
        assert conn.execute("SELECT count(*) FROM feedback").fetchall()[0][0] == n


def test_app_requires_a_token(monkeypatch):
    monkeypatch.delenv("EVAL_FEEDBACK_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="EVAL_FEEDBACK_TOKEN"):
        create_app(settings.feedback_inbox())


def test_leftover_file_of_a_dead_writer_is_published(tmp_path):
    inbox = tmp_path / "inbox"
    incoming = inbox / ".incoming"
    incoming.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    left = incoming / f"feedback-20260101T000000000000Z-p{pid}-1.jsonl"
    left.write_text('{"trace_id": "t", "rating": "up"}\n{"trace_id": "t2", "ra')
    mine = incoming / f"feedback-20260101T000000000000Z-p{os.getpid()}-1.jsonl"
    with open(mine, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what a live writer holds
        moved = recover_incoming(inbox)
        assert moved == [inbox / left.name]
        assert mine.exists()  # a live writer's file is left alone
    parsed = feedback.parse_file(moved[0].read_bytes())
    assert len(parsed.records) == 1 and parsed.rejects[0].reason.startswith("not JSON")


def test_cli_serve_over_http_and_sigterm_publishes(tmp_path):
    port = free_port()
    env = {**os.environ, "EVAL_FEEDBACK_TOKEN": TOKEN}
    inbox = settings.feedback_inbox()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eval_pipeline",
            "feedback",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--rotate-seconds",
            "3600",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"collector did not start: {proc.stdout.read()}")
            time.sleep(0.1)
        for i in range(3):
            r = httpx.post(
                url + "/v1/feedback",
                json={"trace_id": f"t{i}", "rating": "down"},
                headers=AUTH,
                timeout=10,
            )
            assert r.status_code == 202
        assert inbox_files(inbox) == []  # still being written
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert TOKEN not in out
    files = inbox_files(inbox)
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 3


def test_distinct_posts_never_collapse_but_a_client_id_retry_lands_once():
    # Two users' thumbs-downs on one trace, neither sending ts, user_id or comment: two
    # records. A client retrying with its own feedback_id: one record.
    inbox = settings.feedback_inbox()
    app = create_app(inbox, TOKEN)
    bare = {"trace_id": "t-same", "rating": "down"}
    with ThreadServer(app) as srv, httpx.Client(timeout=10) as http:
        ids = [http.post(srv.url, json=bare, headers=AUTH).json()["feedback_ids"][0]]
        ids.append(http.post(srv.url, json=bare, headers=AUTH).json()["feedback_ids"][0])
        with_id = {**bare, "trace_id": "t-retry", "feedback_id": "client-7"}
        retry = [http.post(srv.url, json=with_id, headers=AUTH) for _ in range(2)]
    assert ids[0] != ids[1]
    assert retry[0].json() == retry[1].json()
    with store.connect(settings.duckdb_path()) as conn:
        for p in inbox_files(inbox):
            feedback.ingest_file(conn, p)
        counts = dict(
            conn.execute("SELECT trace_id, count(*) FROM feedback GROUP BY trace_id").fetchall()
        )
        stored = {r[0] for r in conn.execute("SELECT feedback_id FROM feedback").fetchall()}
    assert counts == {"t-same": 2, "t-retry": 1}
    assert set(ids) <= stored  # the ids the client got back are the stored identities


HOST_MODULE = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from eval_pipeline.core.feedback.collector import create_app


async def hello(request):
    return PlainTextResponse("host")


# The README's way: a host app with its own routes, the collector mounted at "/".
app = Starlette(routes=[Route("/hello", hello)])
app.mount("/", create_app(max_age_seconds=3600))
"""


def test_mounted_in_a_host_app_rotates_by_age_and_recovers():
    # Starlette does not run a mounted app's lifespan: rotation and recovery must start
    # without it.
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    inbox = settings.feedback_inbox()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    left = inbox / ".incoming" / f"feedback-20260101T000000000000Z-p{int(dead.stdout)}-1.jsonl"
    left.parent.mkdir(parents=True)
    left.write_text('{"trace_id": "t-left", "rating": "down"}\n')

    async def hello(request):
        return PlainTextResponse("host")

    collector = create_app(inbox, TOKEN, max_age_seconds=0.3)
    host = Starlette(routes=[Route("/hello", hello)])
    host.mount("/", collector)
    try:
        with ThreadServer(host) as srv, httpx.Client(timeout=10) as http:
            assert http.get(f"http://127.0.0.1:{srv.port}/hello").text == "host"
            r = http.post(srv.url, json={"trace_id": "t-mounted", "rating": "down"}, headers=AUTH)
            assert r.status_code == 202
            deadline = time.monotonic() + 20
            while True:
                published = [
                    json.loads(x) for p in inbox_files(inbox) for x in p.read_text().splitlines()
                ]
                if {"t-left", "t-mounted"} <= {rec["trace_id"] for rec in published}:
                    break
                assert time.monotonic() < deadline, f"not published by age: {published}"
                time.sleep(0.1)
            assert len(published) == 2
    finally:
        collector.state.collector.close()
    assert list((inbox / ".incoming").iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_mounted_in_a_host_app_publishes_on_shutdown(tmp_path, sig):
    (tmp_path / "host_app.py").write_text(HOST_MODULE)
    port = free_port()
    inbox = settings.feedback_inbox()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "host_app:app",
            "--app-dir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "EVAL_FEEDBACK_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/hello", timeout=1).text == "host":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"host app did not start: {proc.stdout.read()}")
            time.sleep(0.1)
        for i in range(3):
            r = httpx.post(
                url + "/v1/feedback",
                json={"trace_id": f"t{i}", "rating": "down"},
                headers=AUTH,
                timeout=10,
            )
            assert r.status_code == 202, r.text
        assert inbox_files(inbox) == []  # rotation by age is an hour away
    finally:
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    files = inbox_files(inbox)
    assert len(files) == 1, out
    assert sorted(json.loads(x)["trace_id"] for x in files[0].read_text().splitlines()) == [
        "t0",
        "t1",
        "t2",
    ]
    assert list((inbox / ".incoming").iterdir()) == []
