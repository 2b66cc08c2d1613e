"""Where things live, and the one precedence rule for every setting (:func:`resolve`).

Every path comes from an environment variable with a default under data/.

Plain functions (not module constants) so tests can point a process at a temporary folder
by setting the variables before calling them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

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


def resolve(
    explicit: T | None,
    env: Mapping[str, str],
    name: str,
    default: T,
    cast: Callable[[str], T] = str,  # type: ignore[assignment]
) -> T:
    """The one precedence rule for configuration: an explicit value (not None) wins, then the
    environment variable ``name`` (blank counts as unset), then ``default``.

    Explicit configuration (a Dagster resource field, a CLI flag) is what someone chose for
    this run; the environment is the deployment's default. A variable that does not parse
    is an error that names it, never a silent fallback.
    """
    if explicit is not None:
        return explicit
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid value") from None


def flag(raw: str) -> bool:
    """A boolean setting: 1/true/yes/on or 0/false/no/off (any case)."""
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def person(explicit: str | None = None) -> str:
    """Who is at the terminal (a reviewer, a labeller): the explicit name, else $USER /
    $USERNAME, else the login name; empty when none can be found."""
    if explicit:
        return explicit
    name = os.environ.get("USER") or os.environ.get("USERNAME")
    if not name:
        with contextlib.suppress(Exception):
            name = getpass.getuser()
    return name or ""
