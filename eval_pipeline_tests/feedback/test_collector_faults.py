"""The collector under faults and abuse, over real HTTP on 127.0.0.1: crashed writers (also
as PID 1 in a container), two collectors on one inbox, hostile JSON, slow clients, a soak."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from eval_pipeline import settings
from eval_pipeline.core.feedback import inbox as feedback_inbox
from eval_pipeline.core.feedback.collector import create_app
from eval_pipeline.core.feedback.spool import RotatingWriter, recover_incoming
from eval_pipeline_tests.feedback.test_collector import AUTH, TOKEN, ThreadServer, free_port


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    try:
        out = subprocess.run(
            ["unshare", "--pid", "--fork", sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "1"


UNSHARE = _unshare_works()
needs_unshare = pytest.mark.skipif(not UNSHARE, reason="unshare --pid --fork is not permitted")


class Collector:
    """`eval-pipeline feedback serve` in a subprocess; optionally as PID 1 of a new PID
    namespace (what a container gives it), with the real python process reachable by pid."""

    def __init__(self, inbox: Path, *extra: str, pid_namespace: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "eval_pipeline",
            "feedback",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--inbox",
            str(inbox),
            "--rotate-seconds",
            "3600",
            *extra,
        ]
        if pid_namespace:
            cmd = ["unshare", "--pid", "--fork", "--kill-child", *cmd]
        env = {**os.environ, "EVAL_FEEDBACK_TOKEN": TOKEN}
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.pid_namespace = pid_namespace
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"collector did not start: {self.proc.stdout.read()}")
            time.sleep(0.1)

    @property
    def server_pid(self) -> int:
        """The python process (unshare's child when in a PID namespace)."""
        if not self.pid_namespace:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def post(self, records: list[dict], client: httpx.Client | None = None) -> httpx.Response:
        c = client or httpx
        return c.post(self.url + "/v1/feedback", json=records, headers=AUTH, timeout=20)

    def kill9(self) -> None:
        os.kill(self.server_pid, signal.SIGKILL)
        self.proc.wait(20)

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.kill(self.server_pid, signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out


def published(inbox: Path) -> list[dict]:
    return [
        json.loads(x)
        for p in sorted(inbox.iterdir())
        if p.is_file() and feedback_inbox.is_candidate_name(p.name)
        for x in p.read_text().splitlines()
        if x.strip()
    ]


def _records(prefix: str, n: int) -> list[dict]:
    return [
        {"trace_id": f"{prefix}-{i}", "rating": "down", "feedback_id": f"{prefix}-{i}"}
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "pid_namespace", [False, pytest.param(True, marks=needs_unshare, id="pid1")]
)
def test_acknowledged_records_survive_kill_9_and_restart(tmp_path, pid_namespace):
    inbox = tmp_path / "inbox"
    first = Collector(inbox, pid_namespace=pid_namespace)
    acked = []
    try:
        for batch in range(4):
            recs = _records(f"a{batch}", 5)
            assert first.post(recs).status_code == 202
            acked += [r["feedback_id"] for r in recs]
    finally:
        first.kill9()
    assert published(inbox) == []  # still in .incoming, as the crash left it
    second = Collector(inbox, pid_namespace=pid_namespace)  # PID 1 again when namespaced
    try:
        recs = _records("b", 3)
        assert second.post(recs).status_code == 202
        acked += [r["feedback_id"] for r in recs]
    finally:
        second.stop()
    ids = [r["feedback_id"] for r in published(inbox)]
    assert sorted(ids) == sorted(acked)  # every acknowledged record, exactly once
    assert list((inbox / feedback_inbox.INCOMING_DIR).iterdir()) == []


def test_a_file_whose_writer_holds_its_lock_is_never_recovered(tmp_path):
    inbox = tmp_path / "inbox"
    incoming = inbox / feedback_inbox.INCOMING_DIR
    incoming.mkdir(parents=True)
    # The writer's pid as seen from here means nothing (another PID namespace): name the
    # file with a pid that does not exist here, as a writer in another container would.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = incoming / f"feedback-20260101T000000000000Z-p{int(dead.stdout)}-1.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"fh = open({str(path)!r}, 'ab')\n"
            "fcntl.flock(fh, fcntl.LOCK_EX)\n"
            'fh.write(b\'{"trace_id": "t", "rating": "up"}\\n\'); fh.flush()\n'
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert recover_incoming(inbox) == []
        assert path.exists()
    finally:
        holder.kill()
        holder.wait(10)
    # The writer is gone, its lock with it: now the file is abandoned and published.
    assert recover_incoming(inbox) == [inbox / path.name]


@needs_unshare
def test_two_collectors_in_different_pid_namespaces_share_an_inbox(tmp_path):
    inbox = tmp_path / "inbox"
    host = Collector(inbox, "--rotate-records", "6")
    acked = []
    try:
        recs = _records("h1", 3)
        assert host.post(recs).status_code == 202
        acked += [r["feedback_id"] for r in recs]
        boxed = Collector(inbox, pid_namespace=True)  # recovers at start-up
        try:
            # The host collector's open file is still its own.
            assert published(inbox) == []
            statuses = []
            for i in range(3):
                recs = _records(f"h2-{i}", 1)
                statuses.append(host.post(recs).status_code)
                acked += [r["feedback_id"] for r in recs]
            recs = _records("boxed", 2)
            assert boxed.post(recs).status_code == 202
            acked += [r["feedback_id"] for r in recs]
            assert statuses == [202, 202, 202]
        finally:
            boxed.stop()
    finally:
        host.stop()
    ids = [r["feedback_id"] for r in published(inbox)]
    assert sorted(ids) == sorted(acked)


def test_a_written_record_is_not_reported_as_failed_when_its_file_was_taken(tmp_path):
    inbox = tmp_path / "inbox"
    writer = RotatingWriter(inbox, max_records=2)
    writer.write_lines(['{"trace_id": "t1", "rating": "up"}'])
    (current,) = list((inbox / feedback_inbox.INCOMING_DIR).iterdir())
    current.rename(inbox / current.name)  # someone else published it meanwhile
    writer.write_lines(['{"trace_id": "t2", "rating": "up"}'])  # rotation: must not raise
    assert [r["trace_id"] for r in published(inbox)] == ["t1", "t2"]


def test_bearer_scheme_is_case_insensitive():
    app = create_app(settings.feedback_inbox(), TOKEN)
    try:
        with ThreadServer(app) as srv, httpx.Client(timeout=10) as http:
            for scheme in ("bearer", "BEARER", "Bearer"):
                r = http.post(
                    srv.url,
                    json={"trace_id": "t", "rating": "up"},
                    headers={"Authorization": f"{scheme} {TOKEN}"},
                )
                assert r.status_code == 202, (scheme, r.text)
            r = http.post(
                srv.url,
                json={"trace_id": "t", "rating": "up"},
                headers={"Authorization": "Basic x"},
            )
            assert r.status_code == 401
    finally:
        app.state.collector.close()


def test_hostile_json_is_answered_4xx_not_500():
    bodies = {
        "lone surrogate": b'{"trace_id": "t", "rating": "down", "comment": "\\ud800"}',
        "huge integer": b'{"trace_id": "t", "rating": "down", "n": ' + b"9" * 5000 + b"}",
        "deep nesting": b'{"trace_id": "t", "rating": "down", "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        "surrogate key": b'{"trace_id": "t", "rating": "down", "\\udfff": 1}',
    }
    app = create_app(settings.feedback_inbox(), TOKEN)
    try:
        with ThreadServer(app) as srv, httpx.Client(timeout=10) as http:
            for what, body in bodies.items():
                r = http.post(
                    srv.url, content=body, headers={**AUTH, "Content-Type": "application/json"}
                )
                assert r.status_code in (400, 422), (what, r.status_code, r.text)
                assert r.json()["error"], what
            ok = http.post(srv.url, json={"trace_id": "t", "rating": "up"}, headers=AUTH)
            assert ok.status_code == 202
    finally:
        app.state.collector.close()


def _slow_header_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    return socks


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:  # reset by the server
        return True


def test_slow_clients_do_not_hold_the_collector(tmp_path):
    inbox = tmp_path / "inbox"
    srv = Collector(inbox, "--header-timeout", "2", "--body-timeout", "2")
    socks: list[socket.socket] = []
    try:
        socks = _slow_header_sockets(srv.port, 200)
        t0 = time.monotonic()
        r = httpx.get(srv.url + "/healthz", timeout=5)
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 5
        # A body that never finishes is cut off, not waited for.
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(
            b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"tr'
        )
        t0 = time.monotonic()
        answer = s.recv(4096)
        assert time.monotonic() - t0 < 8
        assert answer == b"" or b" 408 " in answer.split(b"\r\n")[0]
        s.close()
        # The connections that never finished their headers were closed by the server.
        deadline = time.monotonic() + 10
        while True:
            still_open = [sock for sock in socks if not _closed_by_server(sock)]
            if not still_open or time.monotonic() > deadline:
                break
            socks = still_open
        assert still_open == []
    finally:
        for sock in socks:
            sock.close()
        srv.stop()


def test_soak_slow_oversize_and_good_clients_at_once(tmp_path):
    inbox = tmp_path / "inbox"
    srv = Collector(inbox, "--header-timeout", "2", "--body-timeout", "2", "--rotate-records", "40")
    acked: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    abuse = {"slow_connections": 0, "oversize_refused": 0}

    def good(worker: int) -> None:
        with httpx.Client(timeout=20) as http:
            for i in range(25):
                recs = [
                    {"trace_id": f"w{worker}", "rating": "down", "feedback_id": uuid.uuid4().hex}
                    for _ in range(1 + i % 3)
                ]
                for _attempt in range(20):
                    try:
                        r = srv.post(recs, http)
                    except httpx.HTTPError as exc:
                        errors.append(f"good client: {exc!r}")
                        break
                    if r.status_code == 503:  # over the concurrency limit: try again later
                        time.sleep(0.2)
                        continue
                    break
                if r.status_code == 202:
                    with lock:
                        acked.extend(x["feedback_id"] for x in recs)
                else:
                    errors.append(f"good client: {r.status_code} {r.text[:100]}")

    def slow() -> None:
        while not stop.is_set():
            socks = _slow_header_sockets(srv.port, 30)
            abuse["slow_connections"] += len(socks)
            stop.wait(1.0)
            for s in socks:
                s.close()

    def oversize() -> None:
        body = b"[" + b",".join([b'{"trace_id": "x", "rating": "up"}'] * 60_000) + b"]"
        with httpx.Client(timeout=20) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    r = http.post(srv.url + "/v1/feedback", content=body, headers=AUTH)
                    if r.status_code not in (413, 503):
                        errors.append(f"oversize body answered {r.status_code}")
                    with lock:
                        abuse["oversize_refused"] += 1

    background = [threading.Thread(target=slow)] + [
        threading.Thread(target=oversize) for _ in range(2)
    ]
    workers = [threading.Thread(target=good, args=(w,)) for w in range(8)]
    t0 = time.monotonic()
    try:
        for t in background + workers:
            t.start()
        for t in workers:
            t.join(120)
        assert time.monotonic() - t0 < 120
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
    finally:
        stop.set()
        for t in background:
            t.join(30)
        out = srv.stop()
    assert not errors, errors[:5]
    ids = [r["feedback_id"] for r in published(inbox)]
    assert len(ids) == len(set(ids)), "a record was published twice"
    assert sorted(ids) == sorted(acked), out[-2000:]
    assert len(acked) == 8 * sum(1 + i % 3 for i in range(25))
    # The abuse really ran alongside.
    assert abuse["slow_connections"] >= 60 and abuse["oversize_refused"] >= 2, abuse
