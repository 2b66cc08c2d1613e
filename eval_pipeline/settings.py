"""Where things live. Every path comes from an environment variable with a default under data/.

Plain functions (not module constants) so tests can point a process at a temporary folder
by setting the variables before calling them.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("EVAL_DATA_DIR", PROJECT_ROOT / "data"))


def duckdb_path() -> Path:
    return Path(os.environ.get("EVAL_DUCKDB_PATH", data_dir() / "eval.duckdb"))


def trace_inbox() -> Path:
    return Path(os.environ.get("EVAL_TRACE_INBOX", data_dir() / "inbox" / "traces"))


def feedback_inbox() -> Path:
    return Path(os.environ.get("EVAL_FEEDBACK_INBOX", data_dir() / "feedback_inbox"))


def golden_path() -> Path:
    return Path(os.environ.get("EVAL_GOLDEN_PATH", data_dir() / "golden" / "golden.jsonl"))
