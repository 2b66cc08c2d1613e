"""The collector's spool: accepted lines appended to a file in ``<inbox>/.incoming/``,
published into the inbox by an atomic rename, and recovery of files left by dead writers.

A file is rotated (closed, fsynced, renamed into the inbox) when it reaches a size, a record
count or an age, and on shutdown. A rename is atomic, so a file only ever appears in the
inbox complete. A line is in the file (flushed to the OS) before ``write_lines`` returns, so
it reaches the inbox even if the process is killed: leftover files of dead writers are
moved into the inbox when a collector next starts (``recover_incoming``).

Whose file is it? The writer holds an exclusive ``flock`` on its current file for the file's
whole life; the kernel drops it when the process dies, however it dies. Recovery publishes
only files whose lock it can take. A process id would not do: in a container the collector
is PID 1 on every start, and collectors in different PID namespaces sharing an inbox cannot
see each other's ids. A file is created under a hidden name, locked, then renamed to its
visible ``feedback-*.jsonl`` name, so recovery never sees a writer's file before its lock.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import itertools
import logging
import os
import threading
import time
import uuid
from pathlib import Path

from eval_pipeline.core.feedback.inbox import INCOMING_DIR

log = logging.getLogger(__name__)


class RotatingWriter:
    """Appends lines to a file in ``incoming`` and renames it into ``inbox`` when full.

    Thread-safe: one lock serialises writes and rotation, so lines never interleave and a
    file is never renamed while a line is being written to it.
    """

    def __init__(
        self,
        inbox: Path,
        max_bytes: int = 1_000_000,
        max_records: int = 10_000,
        max_age_seconds: float = 60.0,
    ) -> None:
        self.inbox = Path(inbox)
        self.incoming = self.inbox / INCOMING_DIR
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.max_age_seconds = max_age_seconds
        self._lock = threading.Lock()
        self._fh = None
        self._path: Path | None = None
        self._bytes = 0
        self._records = 0
        self._opened = 0.0
        self._seq = itertools.count(1)
        self.files_published = 0
        # Set once shutdown has begun: every later write is published at once, so requests
        # still finishing while the server drains do not stay in .incoming/.
        self.draining = False
        self.incoming.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        # A random part: pids repeat across containers (PID 1 everywhere) sharing an inbox.
        name = f"feedback-{stamp}-{uuid.uuid4().hex[:12]}-{next(self._seq)}.jsonl"
        hidden = self.incoming / f".{name}.new"
        fh = open(hidden, "ab")  # noqa: SIM115 - kept open across requests
        try:
            # Held until the file is published: the proof, for recovery, that its writer
            # lives. Taken before the visible name exists, so there is no unlocked moment.
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, self.incoming / name)
        except BaseException:
            fh.close()
            hidden.unlink(missing_ok=True)
            raise
        self._fh, self._path = fh, self.incoming / name
        self._bytes = self._records = 0
        self._opened = time.monotonic()

    def write_lines(self, lines: list[str]) -> None:
        """Append lines (one record each) atomically with respect to rotation."""
        payload = "".join(line + "\n" for line in lines).encode("utf-8")
        with self._lock:
            if self._fh is None:
                self._open()
            self._fh.write(payload)
            self._fh.flush()
            self._bytes += len(payload)
            self._records += len(lines)
            if self.draining or self._bytes >= self.max_bytes or self._records >= self.max_records:
                self._publish_locked()

    def rotate_if_old(self) -> bool:
        with self._lock:
            if self._fh is not None and time.monotonic() - self._opened >= self.max_age_seconds:
                self._publish_locked()
                return True
        return False

    def close(self, timeout: float = -1) -> bool:
        """Publish the current file and drain from now on. With a timeout (from a signal
        handler, which may interrupt the thread holding the lock) it can give up: False."""
        self.draining = True
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._publish_locked()
        finally:
            self._lock.release()
        return True

    def _publish_locked(self) -> None:
        if self._fh is None:
            return
        fh, path = self._fh, self._path
        self._fh = self._path = None
        try:
            fh.flush()
            os.fsync(fh.fileno())
            # Renamed while still locked (the lock follows the file): no recovery can take
            # it between the rename and the close.
            if self._records == 0:
                path.unlink(missing_ok=True)
                return
            try:
                os.replace(path, self.inbox / path.name)
            except FileNotFoundError:
                # Someone moved it already (a collector that does not honour the lock). The
                # lines went to the file itself, wherever it is now; the records that were
                # acknowledged are not lost, and this write must not be answered 500.
                log.warning("feedback collector: %s was moved by another process", path.name)
                return
            self.files_published += 1
        finally:
            fh.close()  # releases the lock


def recover_incoming(inbox: Path) -> list[Path]:
    """Publish files left in .incoming by writers that are no longer running: the files
    whose lock can be taken (a live writer holds its file's lock until it publishes it).

    Their last line may be cut off by the crash; ingestion rejects it with a reason.
    """
    incoming = Path(inbox) / INCOMING_DIR
    moved: list[Path] = []
    if not incoming.is_dir():
        return moved
    for path in sorted(incoming.glob("feedback-*.jsonl")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below, after the move
        except FileNotFoundError:  # published meanwhile
            continue
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue  # its writer is alive
                raise
            # Holding the lock: a second recovering collector waits for it, then finds the
            # file gone. Moved while locked, so nobody takes it half way.
            try:
                if os.fstat(fh.fileno()).st_size == 0:
                    path.unlink()
                    continue
                dest = Path(inbox) / path.name
                os.replace(path, dest)
            except FileNotFoundError:
                continue
            moved.append(dest)
    return moved
