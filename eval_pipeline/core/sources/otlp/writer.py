"""Durable before acknowledged: inbox records through locked write-ahead files.

Records are appended to a write-ahead file per UTC day in ``<inbox>/.otlp-wal/``
(``<day>--otlp-<stamp>-<random>.wal``; the inbox source reads only ``*.jsonl`` /
``*.parquet``, so it never sees one). ``write`` returns after the lines are written and
``fdatasync``-ed: only then does the receiver answer 2xx. A file is *published* (fsynced,
renamed to ``<inbox>/<day>/otlp-<stamp>-<random>.jsonl``, directory fsynced) when it
reaches a size, a record count or an age, and on shutdown. A rename is atomic, so a file
only ever appears in the inbox complete.

Ownership is an ``fcntl.flock`` held on the open write-ahead file for as long as it is
being written, not a process id: in a container the receiver is PID 1 on every start, and a
PID says nothing about a file on a volume shared by several hosts' processes. The kernel
drops the lock when the owner dies, however it dies (kill -9 included). Recovery takes the
lock without waiting; a file whose lock it gets is abandoned, so it is published (a
torn last line, which was never acknowledged, is cut off first). A file whose lock is held
belongs to a live writer and is left alone. The lock is released only after the rename, so
a file is never published twice.

Exactly once: exporters retry a request whose answer they did not get, which happens when
the receiver dies between the write and the answer. Each record has a key (trace id and
span id); keys already written are not written again: those of this process (the last
``dedup_max``, 1,000,000 by default, ~100 MB), of the files recovered, and of the files
published in the last ``dedup_window_s`` seconds (5 minutes: longer than an OTLP
exporter's retries) when the writer starts. The retried request is answered 2xx and the
inbox holds each span once.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from eval_pipeline.core.sources.otlp.mapping import Record

log = logging.getLogger(__name__)

WAL_DIR = ".otlp-wal"
_WAL_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})--(otlp-[\w.-]+)\.wal$")
# Keys are read back from published lines without parsing them: each line has exactly one
# unescaped ``"span_id": "`` and ``"otel_trace_id": "`` before any user metadata
# (mapping.py writes them first in ``metadata``; JSON escapes quotes inside strings).
_KEY_RE = re.compile(rb'"span_id": "([0-9a-f]{16})", "otel_trace_id": "([0-9a-f]{32})"')


class WriteFailed(OSError):
    """The records could not be made durable (disk full, I/O error); nothing was kept."""


@dataclass
class _Open:
    path: Path
    fd: int
    records: int = 0
    size: int = 0
    opened: float = 0.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _final_path(inbox: Path, day: str, stem: str) -> Path:
    return inbox / day / f"{stem}.jsonl"


def _key_bytes(key: str) -> bytes:
    """``<trace hex>:<span hex>`` as 24 raw bytes: a third of the memory of the text."""
    trace, _, span = key.partition(":")
    try:
        return bytes.fromhex(trace + span)
    except ValueError:
        return key.encode()


def keys_in(data: bytes) -> list[str]:
    return [f"{t.decode()}:{s.decode()}" for s, t in _KEY_RE.findall(data)]


def recover(inbox: Path) -> list[Path]:
    """Publish write-ahead files whose writer is gone (their lock can be taken)."""
    wal_dir = Path(inbox) / WAL_DIR
    published: list[Path] = []
    if not wal_dir.is_dir():
        return published
    for path in sorted(wal_dir.iterdir()):
        match = _WAL_NAME.match(path.name)
        if not match:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # published by its owner meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # renamed into the inbox between our open and our lock
                continue
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
            keep = data.rfind(b"\n") + 1  # a torn last line was never acknowledged
            if keep == 0:
                os.unlink(path)
                continue
            if keep < size:
                os.ftruncate(fd, keep)
            os.fsync(fd)
            dest = _final_path(Path(inbox), match.group(1), match.group(2))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
            _fsync_dir(dest.parent)
            _fsync_dir(wal_dir)
            published.append(dest)
        finally:
            os.close(fd)
    return published


class InboxWriter:
    """Thread-safe: one lock serialises writes, the duplicate check and publishing."""

    def __init__(
        self,
        inbox: Path,
        *,
        max_file_records: int = 100_000,
        max_file_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 5.0,
        fsync: bool = True,
        dedup_window_s: float = 300.0,
        dedup_max: int = 1_000_000,
    ) -> None:
        self.inbox = Path(inbox)
        self.wal_dir = self.inbox / WAL_DIR
        self.max_file_records = max_file_records
        self.max_file_bytes = max_file_bytes
        self.max_age_s = max_age_s
        self.fsync = fsync
        self.dedup_window_s = dedup_window_s
        self.dedup_max = dedup_max
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        # Raw ids (24 bytes), insertion-ordered so the oldest go first when it is full.
        self._seen: dict[bytes, None] = {}
        self.records_written = 0
        self.duplicates = 0
        self.files_published = 0
        self.wal_dir.mkdir(parents=True, exist_ok=True)

    # --- start-up --------------------------------------------------------------------------

    def start(self) -> list[Path]:
        """Recover abandoned files, then remember the keys of recently published files."""
        recovered = self.recover_abandoned()
        cutoff = time.time() - self.dedup_window_s
        recent = []
        for path in self.inbox.glob("*/otlp-*.jsonl"):
            try:
                if path.stat().st_mtime >= cutoff:
                    recent.append(path)
            except FileNotFoundError:
                continue
        self._remember_files(sorted(set(recent) - set(recovered)))
        return recovered

    def recover_abandoned(self) -> list[Path]:
        """Publish abandoned write-ahead files (``recover``) and remember their keys."""
        recovered = recover(self.inbox)
        if recovered:
            log.warning("published %d write-ahead files left by stopped receivers", len(recovered))
            self._remember_files(recovered)
        return recovered

    def _remember_files(self, paths: Iterable[Path]) -> None:
        for path in paths:
            try:
                keys = keys_in(path.read_bytes())
            except FileNotFoundError:
                continue
            with self._lock:
                for key in keys:
                    self._remember(_key_bytes(key))

    def _remember(self, key: bytes) -> None:
        self._seen[key] = None
        if len(self._seen) > self.dedup_max:
            del self._seen[next(iter(self._seen))]

    # --- writing ---------------------------------------------------------------------------

    def _open_file(self, day: str) -> _Open:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        stem = f"otlp-{stamp}-{secrets.token_hex(4)}"
        path = self.wal_dir / f"{day}--{stem}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        # Held until the file is published; never blocks: the name is new.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self.fsync:
            _fsync_dir(self.wal_dir)  # the file's name survives a power cut too
        opened = _Open(path, fd, opened=time.monotonic())
        self._open[day] = opened
        return opened

    def write(self, records: Iterable[Record]) -> tuple[int, int]:
        """Make the records durable. Returns (written, duplicates skipped).

        Raises ``WriteFailed`` when the disk refuses (nothing of this call is kept: a
        partly written file is cut back to where it was).
        """
        with self._lock:
            by_day: dict[str, list[bytes]] = {}
            keys: list[bytes] = []
            batch: set[bytes] = set()
            dups = 0
            for rec in records:
                key = _key_bytes(rec.key)
                if key in self._seen or key in batch:
                    dups += 1
                    continue
                batch.add(key)
                keys.append(key)
                by_day.setdefault(rec.day.isoformat(), []).append(rec.line.encode() + b"\n")
            done: list[tuple[_Open, int, int]] = []  # (file, size before, records)
            try:
                for day, lines in by_day.items():
                    f = self._open.get(day) or self._open_file(day)
                    payload = b"".join(lines)
                    done.append((f, f.size, len(lines)))
                    view = memoryview(payload)
                    while view:
                        n = os.write(f.fd, view)
                        view = view[n:]
                    f.size += len(payload)
                    f.records += len(lines)
                if self.fsync:
                    for f, _, _ in done:
                        os.fdatasync(f.fd)
            except OSError as exc:
                for f, before, n in done:
                    try:
                        os.ftruncate(f.fd, before)
                    except OSError:
                        # Cannot cut it back: publish what was acknowledged before (the
                        # torn tail is cut by recovery) by abandoning the file.
                        self._abandon(f)
                        continue
                    f.size, f.records = before, f.records - n
                raise WriteFailed(
                    exc.errno or errno.EIO, f"could not write the inbox: {exc}"
                ) from exc
            for key in keys:
                self._remember(key)
            self.records_written += len(keys)
            self.duplicates += dups
            for f, _, _ in done:
                if f.records >= self.max_file_records or f.size >= self.max_file_bytes:
                    self._publish_locked(f)
            return len(keys), dups

    def _abandon(self, f: _Open) -> None:
        for day, g in list(self._open.items()):
            if g is f:
                del self._open[day]
        os.close(f.fd)  # releases the lock: the next recovery publishes it

    def _publish_locked(self, f: _Open) -> None:
        for day, g in list(self._open.items()):
            if g is f:
                del self._open[day]
        try:
            if f.records == 0:
                os.unlink(f.path)
                return
            os.fsync(f.fd)
            match = _WAL_NAME.match(f.path.name)
            assert match is not None
            dest = _final_path(self.inbox, match.group(1), match.group(2))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f.path, dest)
            _fsync_dir(dest.parent)
            _fsync_dir(self.wal_dir)
            self.files_published += 1
        finally:
            os.close(f.fd)  # after the rename: recovery never sees an unlocked complete file

    def publish_old(self) -> int:
        """Publish files older than ``max_age_s``. Returns how many."""
        now = time.monotonic()
        with self._lock:
            old = [f for f in self._open.values() if now - f.opened >= self.max_age_s]
            for f in old:
                self._publish_locked(f)
        return len(old)

    def close(self, timeout: float = -1) -> bool:
        """Publish every open file. False when the lock was not free within ``timeout``."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            for f in list(self._open.values()):
                self._publish_locked(f)
        finally:
            self._lock.release()
        return True

    def pending(self) -> int:
        with self._lock:
            return sum(f.records for f in self._open.values())
