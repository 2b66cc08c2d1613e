"""Resources: thin, configurable handles on the store, the trace source, the judge.

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
from eval_pipeline.core.judge.base import Judge
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import TraceSource
from eval_pipeline.core.sources.phoenix.config import PhoenixConfig
from eval_pipeline.core.sources.phoenix.source import PhoenixSource


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
    """Where traces come from. kind=jsonl reads the inbox folder ($EVAL_TRACE_INBOX);
    kind=phoenix reads spans from an Arize Phoenix project ($EVAL_PHOENIX_URL,
    $EVAL_PHOENIX_PROJECT, $PHOENIX_API_KEY; see eval_pipeline.core.sources.phoenix.config).
    Like every setting: a field that is set wins, then the environment ($EVAL_TRACE_SOURCE
    for kind, $EVAL_TRACE_INBOX, the EVAL_PHOENIX_* variables), then the default."""

    kind: str | None = None  # None: $EVAL_TRACE_SOURCE, else "jsonl"
    inbox: str | None = None
    phoenix_url: str | None = None
    phoenix_project: str | None = None
    phoenix_span_kinds: list[str] | None = None
    phoenix_root_only: bool | None = None
    phoenix_part_kinds: list[str] | None = None  # [] reads no retriever or tool spans
    phoenix_attribute_filters: dict[str, str] | None = None
    # Only the variable's name is configuration: the key itself is a secret, read at run time.
    phoenix_api_key_env: str = "PHOENIX_API_KEY"

    def resolved_kind(self) -> str:
        return settings.resolve(self.kind, os.environ, "EVAL_TRACE_SOURCE", "jsonl")

    def phoenix_config(self) -> PhoenixConfig:
        return PhoenixConfig.from_env(
            os.environ,
            base_url=self.phoenix_url,
            project=self.phoenix_project,
            api_key=os.environ.get(self.phoenix_api_key_env) or None,
            span_kinds=self.phoenix_span_kinds,
            root_only=self.phoenix_root_only,
            part_kinds=self.phoenix_part_kinds,
            attribute_filters=self.phoenix_attribute_filters,
        )

    def build(self) -> TraceSource:
        kind = self.resolved_kind()
        if kind == "jsonl":
            root = Path(self.inbox) if self.inbox else settings.trace_inbox()
            return InboxSource(root=root)
        if kind == "phoenix":
            return PhoenixSource(self.phoenix_config())
        raise ValueError(f"unknown trace source kind {kind!r} (known: jsonl, phoenix)")


class JudgeResource(dg.ConfigurableResource):
    """Which judge scores traces. kind=heuristic needs no model (the demo default);
    kind=openai calls any OpenAI-compatible endpoint (the EVAL_JUDGE_* variables are listed
    in docs/configuration.md).

    A field that is set wins, then its EVAL_JUDGE_* variable, then the default. The API key
    is never config: only the *name* of the variable that holds it is, so the UI never
    shows the secret.
    """

    kind: str | None = None  # None: $EVAL_JUDGE, else "heuristic"
    base_url: str | None = None  # EVAL_JUDGE_BASE_URL
    model: str | None = None  # EVAL_JUDGE_MODEL
    api_key_env: str = "EVAL_JUDGE_API_KEY"
    concurrency: int | None = None  # EVAL_JUDGE_CONCURRENCY (16)
    connect_timeout: float | None = None  # EVAL_JUDGE_CONNECT_TIMEOUT (5 s)
    read_timeout: float | None = None  # EVAL_JUDGE_READ_TIMEOUT (60 s)
    deadline: float | None = None  # EVAL_JUDGE_DEADLINE (180 s per judgment)
    max_retries: int | None = None  # EVAL_JUDGE_MAX_RETRIES (6)
    structured_output: bool | None = None  # EVAL_JUDGE_STRUCTURED_OUTPUT (true)
    price_prompt_per_1k: float | None = None  # EVAL_JUDGE_PRICE_PROMPT_PER_1K
    price_completion_per_1k: float | None = None  # EVAL_JUDGE_PRICE_COMPLETION_PER_1K
    rubric: str | None = None  # EVAL_JUDGE_RUBRIC (bundled name or file path; quality-v1)
    criteria: str | None = None  # EVAL_JUDGE_CRITERIA (comma-separated; quality)
    criteria_mode: str | None = None  # EVAL_JUDGE_CRITERIA_MODE (per-criterion | one-call)

    def build(self) -> Judge:
        # Typed fields go straight into the config: explicit, then environment, then default.
        explicit = {
            name: getattr(self, name)
            for name in (
                "base_url",
                "model",
                "concurrency",
                "connect_timeout",
                "read_timeout",
                "deadline",
                "max_retries",
                "structured_output",
                "price_prompt_per_1k",
                "price_completion_per_1k",
                "rubric",
                "criteria",
                "criteria_mode",
            )
        }
        return judge_from_env(os.environ, kind=self.kind, api_key_env=self.api_key_env, **explicit)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "store": EvalStore(),
            "trace_source": TraceSourceResource(),
            "judge": JudgeResource(),
        }
    )
