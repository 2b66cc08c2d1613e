"""Resources: thin, configurable handles on the store, the trace source, the judge, alerts.

Defaults come from environment variables read when a run starts (not at import), so the
UI, the CLI and tests can point the same code at different folders.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.judging import Judge, judge_from_env
from eval_pipeline.core.traces import InboxSource, TraceSource


class EvalStore(dg.ConfigurableResource):
    """The DuckDB file (default: $EVAL_DUCKDB_PATH or data/eval.duckdb)."""

    path: str | None = None

    def resolved_path(self) -> str:
        return self.path or str(settings.duckdb_path())

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with store.connect(self.resolved_path(), read_only=read_only) as conn:
            yield conn


class TraceSourceResource(dg.ConfigurableResource):
    """Where traces come from. kind=jsonl reads the inbox folder ($EVAL_TRACE_INBOX)."""

    kind: str = "jsonl"
    inbox: str | None = None

    def build(self) -> TraceSource:
        kind = os.environ.get("EVAL_TRACE_SOURCE", self.kind)
        if kind == "jsonl":
            root = Path(self.inbox) if self.inbox else settings.trace_inbox()
            return InboxSource(root=root)
        raise ValueError(f"unknown trace source kind {kind!r} (known: jsonl)")


class JudgeResource(dg.ConfigurableResource):
    """Which judge scores traces. kind=heuristic needs no model (the demo default)."""

    kind: str | None = None  # None: $EVAL_JUDGE, else "heuristic"

    def build(self) -> Judge:
        env = dict(os.environ)
        if self.kind:
            env["EVAL_JUDGE"] = self.kind
        return judge_from_env(env)


class AlertSink(dg.ConfigurableResource):
    """Posts alerts to the Slack-compatible webhook named by an environment variable.

    Only the variable's *name* is configuration; the URL itself is a secret read at send
    time and never shown in the UI, logs or the store.
    """

    webhook_url_env: str = "EVAL_ALERT_WEBHOOK_URL"

    def webhook_url(self) -> str | None:
        return os.environ.get(self.webhook_url_env) or None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "store": EvalStore(),
            "trace_source": TraceSourceResource(),
            "judge": JudgeResource(),
            "alert_sink": AlertSink(),
        }
    )
