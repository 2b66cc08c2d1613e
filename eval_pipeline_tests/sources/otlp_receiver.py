"""The OTLP receiver as a real process (`eval-pipeline otlp serve`) for tests and the bench:
started on a free 127.0.0.1 port, waited for, and stopped or killed by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "test-otlp-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(
        self,
        inbox: Path,
        *extra: str,
        token: str = TOKEN,
        pid_namespace: bool = False,
        log_path: Path | None = None,
    ) -> None:
        self.inbox = Path(inbox)
        self.extra = list(extra)
        self.token = token
        self.pid_namespace = pid_namespace
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from eval_pipeline.cli import main; sys.exit(main())",
            "otlp",
            "serve",
            "--port",
            str(self.port),
            "--inbox",
            str(self.inbox),
            *self.extra,
        ]
        if self.pid_namespace:
            # A fresh PID namespace: the receiver is PID 1 there, on every start, as in a
            # container. If unshare dies, the receiver is sent SIGTERM (--kill-child).
            cmd = ["unshare", "--pid", "--fork", "--kill-child=SIGTERM", *cmd]
        return cmd

    def start(self, timeout: float = 30.0) -> Receiver:
        env = {**os.environ, "EVAL_OTLP_TOKEN": self.token}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.command(), env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("receiver did not become healthy")

    def health(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).json()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (every write-ahead file is published), then SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            # To the receiver itself: under unshare, unshare exits when it has.
            with contextlib.suppress(ProcessLookupError, FileNotFoundError, IndexError):
                os.kill(self.receiver_pid(), signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def receiver_pid(self) -> int:
        """The receiver's PID as seen from here (under unshare: unshare's only child)."""
        assert self.proc is not None
        if not self.pid_namespace:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def kill(self) -> None:
        """kill -9 of the receiver itself; under unshare, unshare then exits too."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError, IndexError):
                os.kill(self.receiver_pid(), signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def inbox_lines(inbox: Path) -> list[str]:
    """Every line of every published inbox file."""
    lines: list[str] = []
    for path in sorted(Path(inbox).glob("*/*.jsonl")):
        lines.extend(line for line in path.read_text().splitlines() if line.strip())
    return lines
