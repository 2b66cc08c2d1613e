"""Durability of the OTLP receiver: kill -9 under load, a restart in a fresh PID namespace
(the receiver is PID 1 both times, as in a container), and every span acknowledged with
2xx in the inbox exactly once. Plus the write-ahead files' lock-based recovery on its own."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from eval_pipeline import settings
from eval_pipeline.core.sources.otlp.mapping import Record
from eval_pipeline.core.sources.otlp.writer import WAL_DIR, InboxWriter, WriteFailed, recover
from eval_pipeline_tests.sources.otlp_receiver import Receiver, inbox_lines
from eval_pipeline_tests.sources.otlp_requests import llm_attrs, request, span


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    return done.returncode == 0


def _pid_in_namespace(host_pid: int) -> int:
    """The innermost PID of a process (NSpid's last field)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


class Load:
    """Clients that send batches of 25 spans and retry a batch until it is acknowledged
    (as an OTLP exporter does); every acknowledged span's query is recorded."""

    def __init__(self, receiver: Receiver, clients: int = 4) -> None:
        self.receiver = receiver
        self.acked: list[str] = []
        self.sent_batches = 0
        self.failures = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def _run(self, n: int) -> None:
        headers = {**self.receiver.headers, "Content-Type": "application/x-protobuf"}
        j = 0
        while not self.stop.is_set():
            queries = [f"c{n}-b{j}-s{k}" for k in range(25)]
            body = request(*[span(llm_attrs(q, "a")) for q in queries]).SerializeToString()
            while True:  # the same request again until a 2xx, like an exporter's retries
                try:
                    r = httpx.post(self.receiver.url, content=body, headers=headers, timeout=5)
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                with self._lock:
                    self.failures += 1
                time.sleep(0.05)
            with self._lock:
                self.acked.extend(queries)
                self.sent_batches += 1
            j += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.mark.slow
def test_kill_9_under_load_then_restart_keeps_every_acknowledged_span_once(tmp_path):
    namespace = _unshare_works()  # else a plain restart (the same checks, no PID 1)
    inbox = settings.trace_inbox()
    log = tmp_path / "receiver.log"
    receiver = Receiver(inbox, "--publish-seconds", "30", pid_namespace=namespace, log_path=log)
    receiver.start()
    try:
        first_pid = _pid_in_namespace(receiver.receiver_pid())
        with Load(receiver) as load:
            time.sleep(2.0)
            acked_before_kill = len(load.acked)
            receiver.kill()  # SIGKILL: write-ahead files left behind, unpublished
            left = list((inbox / WAL_DIR).glob("*.wal"))
            time.sleep(0.5)
            receiver.start()  # same port: the clients' retries reach the new receiver
            second_pid = _pid_in_namespace(receiver.receiver_pid())
            time.sleep(2.0)
        receiver.stop()
    finally:
        receiver.kill()
    assert acked_before_kill > 100 and left, (acked_before_kill, left)
    assert load.failures > 0  # some requests were in flight at the kill and retried
    if namespace:
        assert first_pid == second_pid == 1
    queries = [json.loads(line)["user_query"] for line in inbox_lines(inbox)]
    print(
        f"pid namespace: {namespace}; receiver PIDs {first_pid}, {second_pid}; "
        f"{acked_before_kill} spans acked before the kill, {len(left)} write-ahead files "
        f"left by it; {len(load.acked)} acked in all, {load.failures} failed tries; "
        f"{len(queries)} lines in the inbox"
    )
    assert len(queries) == len(set(queries)), "a span was written twice"
    assert set(load.acked) <= set(queries), "an acknowledged span is missing"
    # Spans written but not acknowledged before the kill were resent and not duplicated;
    # nothing else is in the inbox.
    assert set(queries) == set(load.acked)
    assert list((inbox / WAL_DIR).glob("*.wal")) == []


def _record(i: int, day: dt.date = dt.date(2026, 11, 1)) -> Record:
    trace, sid = f"{i:032x}", f"{i:016x}"
    line = json.dumps(
        {
            "trace_id": trace,
            "timestamp": f"{day}T10:00:00+00:00",
            "user_query": f"q{i}",
            "assistant_response": "a",
            "metadata": {"span_id": sid, "otel_trace_id": trace},
        }
    )
    return Record(day, f"{trace}:{sid}", line)


def test_recovery_takes_only_files_whose_lock_is_free(tmp_path):
    inbox = tmp_path / "inbox"
    live = InboxWriter(inbox, max_age_s=3600)
    live.write([_record(1)])
    dead = InboxWriter(inbox, max_age_s=3600)
    dead.write([_record(2), _record(3)])
    dead_file = next(iter(dead._open.values()))
    os.write(dead_file.fd, b'{"trace_id": "torn')  # a crash mid-line: never acknowledged
    os.close(dead_file.fd)  # the process died: the kernel dropped its lock
    dead._open.clear()
    # Same PID, same process: a PID check would call both files alive (or both dead).
    published = recover(inbox)
    assert len(published) == 1
    assert [json.loads(x)["user_query"] for x in published[0].read_text().splitlines()] == [
        "q2",
        "q3",
    ]
    assert published[0].parent.name == "2026-11-01" and published[0].suffix == ".jsonl"
    assert len(list((inbox / WAL_DIR).glob("*.wal"))) == 1  # the live writer's, untouched
    live.close()
    assert sorted(json.loads(x)["user_query"] for x in inbox_lines(inbox)) == ["q1", "q2", "q3"]


def test_a_lock_held_by_another_process_is_respected(tmp_path):
    inbox = tmp_path / "inbox"
    w = InboxWriter(inbox, max_age_s=3600)
    w.write([_record(1)])
    f = w._open.pop("2026-11-01")
    os.close(f.fd)  # this writer is gone; another process holds the file's lock below
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(f.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert recover(inbox) == [] and f.path.exists()
    finally:
        holder.kill()
        holder.wait()
    assert len(recover(inbox)) == 1 and not f.path.exists()


def test_restarted_writer_skips_spans_already_published(tmp_path):
    inbox = tmp_path / "inbox"
    first = InboxWriter(inbox)
    assert first.write([_record(1), _record(2)]) == (2, 0)
    first.close()
    again = InboxWriter(inbox)
    again.start()
    assert again.write([_record(2), _record(3), _record(3)]) == (1, 2)
    again.close()
    assert sorted(json.loads(x)["user_query"] for x in inbox_lines(inbox)) == ["q1", "q2", "q3"]


def test_a_failed_write_keeps_nothing_of_its_request_and_the_next_one_works(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    w = InboxWriter(inbox)
    w.write([_record(1)])
    real = os.fdatasync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", disk_full)
    with pytest.raises(WriteFailed):
        w.write([_record(2)])
    monkeypatch.setattr(os, "fdatasync", real)
    assert w.write([_record(2), _record(3)]) == (2, 0)  # the failed span was not remembered
    w.close()
    assert [json.loads(x)["user_query"] for x in inbox_lines(inbox)] == ["q1", "q2", "q3"]
