"""One way to run the real model server for tests: llama-cpp-python's OpenAI-compatible
server on 127.0.0.1 serving SmolLM2-135M-Instruct, set up by `make llm-setup`
(scripts/setup_llm_server.sh) into .tools/. Skips with the make target's name when the
set-up is absent; the server is stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("EVAL_TOOLS_DIR", ROOT / ".tools"))
PYTHON = TOOLS / "llm-venv" / "bin" / "python"
START_TIMEOUT = 120.0


def model_file() -> Path | None:
    models = sorted((TOOLS / "models").glob("*.gguf"))
    return models[0] if models else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:]


@contextlib.contextmanager
def llama_server(log_dir: Path, n_ctx: int = 2048, env: dict | None = None) -> Iterator[str]:
    """Start the server, wait until it answers /v1/models, yield its base URL."""
    model = model_file()
    if not PYTHON.exists() or model is None:
        pytest.skip(
            f"llm server set-up absent ({PYTHON} or {TOOLS / 'models'}/*.gguf missing): "
            "run `make llm-setup` (scripts/setup_llm_server.sh)"
        )
    check = subprocess.run(
        [str(PYTHON), "-c", "import llama_cpp.server"], capture_output=True, text=True
    )
    if check.returncode != 0:
        pytest.skip(f"llama_cpp.server does not import in {PYTHON}: {check.stderr[-300:]}")
    port = free_port()
    log_path = log_dir / "server.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
        + ["--port", str(port), "--n_ctx", str(n_ctx)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}): {_tail(log_path)}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in {START_TIMEOUT:g}s: {_tail(log_path)}")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
