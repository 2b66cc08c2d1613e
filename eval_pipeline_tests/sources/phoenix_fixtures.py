"""A real Arize Phoenix server for integration tests, once per test session.

Phoenix runs from its own virtualenv (.tools/phoenix-venv, built by scripts/setup_phoenix.sh;
$EVAL_PHOENIX_VENV overrides) so its many pinned dependencies never touch the project's.
The server listens on 127.0.0.1 only (HTTP on a free port, gRPC not started; see
scripts/run_phoenix_loopback.py), keeps its SQLite database in a fresh temporary working
directory, makes no outbound connections (PHOENIX_ALLOW_EXTERNAL_RESOURCES=false), and is
stopped by its process id at the end of the session.

Test modules import the fixtures they use: ``from eval_pipeline_tests.sources.phoenix_fixtures import
phoenix_server  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "scripts" / "run_phoenix_loopback.py"
START_TIMEOUT_S = 120.0  # ~7 s on an idle machine; generous for a busy 2-core CI box
INGEST_TIMEOUT_S = 30.0


def phoenix_venv() -> Path:
    return Path(os.environ.get("EVAL_PHOENIX_VENV", ROOT / ".tools" / "phoenix-venv"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PhoenixServer:
    base_url: str
    pid: int
    working_dir: Path
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def phoenix_server(tmp_path_factory) -> PhoenixServer:
    venv = phoenix_venv()
    python = venv / "bin" / "python"
    if not (venv / ".phoenix-ready").is_file() or not python.exists():
        pytest.skip(
            f"Phoenix environment not built ({venv} missing): run scripts/setup_phoenix.sh "
            "(make phoenix-setup) to run the Phoenix integration tests"
        )
    workdir = tmp_path_factory.mktemp("phoenix")
    log_path = workdir / "phoenix.log"
    port = free_port()
    # A clean environment: nothing of the caller's PHOENIX_* settings leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update(
        PHOENIX_WORKING_DIR=str(workdir / "data"),
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(free_port()),  # not opened: the wrapper disables gRPC
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_DISABLE_AGENT_ASSISTANT="true",
        PHOENIX_ALLOWED_SANDBOX_PROVIDERS="NONE",
        PHOENIX_LOG_MIGRATIONS="false",
        PHOENIX_ENABLE_AUTH="false",
    )
    env.pop("EVAL_PHOENIX_GRPC", None)
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(python), str(WRAPPER)],
            env=env,
            cwd=str(workdir),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"Phoenix exited with {proc.returncode} during startup:\n{_log_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Phoenix not healthy after {START_TIMEOUT_S:.0f} s:\n{_log_tail(log_path)}"
                )
            time.sleep(0.25)
        yield PhoenixServer(base_url, proc.pid, workdir, log_path)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM by PID, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


# --- seeding spans over REST (no OTel SDK needed) -----------------------------------------


def span_ids() -> tuple[str, str]:
    """(trace id, span id) in OTel's hex form."""
    return secrets.token_hex(16), secrets.token_hex(8)


def make_span(
    start: str,
    attributes: dict,
    *,
    kind: str = "LLM",
    name: str = "ChatCompletion",
    trace_id: str | None = None,
    span_id: str | None = None,
    parent_id: str | None = None,
    status: str = "OK",
    status_message: str = "",
    duration_ms: int = 800,
    events: list | None = None,
) -> dict:
    """A span in the shape GET /v1/projects/{p}/spans returns (POST takes the same)."""
    import datetime as dt

    t0 = dt.datetime.fromisoformat(start)
    if t0.tzinfo is None:
        t0 = t0.replace(tzinfo=dt.UTC)
    tid, sid = span_ids()
    return {
        "name": name,
        "context": {"trace_id": trace_id or tid, "span_id": span_id or sid},
        "span_kind": kind,
        "parent_id": parent_id,
        "start_time": t0.isoformat(),
        "end_time": (t0 + dt.timedelta(milliseconds=duration_ms)).isoformat(),
        "status_code": status,
        "status_message": status_message,
        "attributes": attributes,
        "events": events or [],
    }


def seed_spans(server: PhoenixServer, project: str, spans: list[dict]) -> None:
    """POST the spans and wait (bounded) until Phoenix has ingested every one of them."""
    wanted = {s["context"]["span_id"] for s in spans}
    with server.client() as client:
        for start in range(0, len(spans), 100):
            resp = client.post(
                f"/v1/projects/{project}/spans", json={"data": spans[start : start + 100]}
            )
            assert resp.status_code == 202, resp.text
        deadline = time.monotonic() + INGEST_TIMEOUT_S
        while True:
            seen: set[str] = set()
            cursor = None
            resp = None
            while True:
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                resp = client.get(f"/v1/projects/{project}/spans", params=params)
                if resp.status_code != 200:  # 404 until the project's first span lands
                    break
                body = resp.json()
                seen.update(s["context"]["span_id"] for s in body["data"])
                cursor = body.get("next_cursor")
                if not cursor:
                    break
            if wanted <= seen:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Phoenix ingested {len(wanted & seen)}/{len(wanted)} spans within "
                    f"{INGEST_TIMEOUT_S:.0f} s (last status {resp.status_code if resp else None})"
                )
            time.sleep(0.2)


def span_annotations(server: PhoenixServer, project: str, span_ids_: list[str]) -> list[dict]:
    """Every span annotation Phoenix holds for these spans (all pages)."""
    out: list[dict] = []
    cursor = None
    with server.client() as client:
        while True:
            params: list[tuple[str, str | int]] = [("span_ids", s) for s in span_ids_]
            params.append(("limit", 1000))
            if cursor:
                params.append(("cursor", cursor))
            resp = client.get(f"/v1/projects/{project}/span_annotations", params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            out.extend(body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return out


__all__ = [
    "PhoenixServer",
    "free_port",
    "make_span",
    "phoenix_server",
    "seed_spans",
    "span_annotations",
]
