"""Where Phoenix is and which of its spans are traces: ``PhoenixConfig`` and how it is read
from the environment (explicit keyword values win over the environment, which wins over the
defaults)."""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from eval_pipeline.core.sources.openinference import SPAN_KINDS, TraceRules

SOURCE_NAME = "phoenix"
DEFAULT_URL = "http://127.0.0.1:6006"
DEFAULT_PROJECT = "default"
ANNOTATION_NAME = "eval_pipeline.quality"
MAX_PAGE_SIZE = 1000  # Phoenix's own cap on `limit`


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class PhoenixConfig:
    """Where Phoenix is and which spans are traces. ``from_env`` documents the variables."""

    base_url: str = DEFAULT_URL
    project: str = DEFAULT_PROJECT
    api_key: str | None = field(default=None, repr=False)  # a secret: never logged or stored
    # The trace rules' defaults are TraceRules' own (one place for them).
    span_kinds: tuple[str, ...] = TraceRules.span_kinds
    root_only: bool = TraceRules.root_only
    # Other spans of a trace read for its parts (retrieved documents, tool calls).
    part_kinds: tuple[str, ...] = ("RETRIEVER", "TOOL")
    attribute_filters: tuple[tuple[str, Any], ...] = ()
    segment_attrs: tuple[str, ...] = TraceRules.segment_attrs
    model_attrs: tuple[str, ...] = TraceRules.model_attrs
    prompt_version_attrs: tuple[str, ...] = TraceRules.prompt_version_attrs
    user_id_attrs: tuple[str, ...] = TraceRules.user_id_attrs
    page_size: int = MAX_PAGE_SIZE
    timeout_s: float = 30.0
    retries: int = 3  # attempts after the first one
    backoff_s: float = 0.5
    max_chars: int = TraceRules.max_chars
    annotation_name: str = ANNOTATION_NAME
    annotation_batch: int = 100
    annotation_max_attempts: int = 10

    def __post_init__(self) -> None:
        kinds = tuple(k.upper() for k in self.span_kinds)
        unknown = [k for k in kinds if k not in SPAN_KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown span kinds {unknown} (known: {', '.join(SPAN_KINDS)})")
        object.__setattr__(self, "span_kinds", kinds)
        parts = tuple(k.upper() for k in self.part_kinds)
        if any(k not in ("RETRIEVER", "TOOL") for k in parts):
            raise ValueError(f"part_kinds can be RETRIEVER and TOOL, got {list(parts)}")
        object.__setattr__(self, "part_kinds", parts)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {self.page_size}")
        if any(c in self.project for c in "/?#") or not self.project:
            raise ValueError(f"invalid Phoenix project name {self.project!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> PhoenixConfig:
        """Settings from the environment; keyword overrides that are not None win.

        EVAL_PHOENIX_URL (or PHOENIX_BASE_URL; default http://127.0.0.1:6006),
        EVAL_PHOENIX_PROJECT (or PHOENIX_PROJECT_NAME; default "default"), PHOENIX_API_KEY
        (sent as a Bearer token), EVAL_PHOENIX_SPAN_KINDS (comma list, default LLM),
        EVAL_PHOENIX_ROOT_ONLY (default true), EVAL_PHOENIX_PART_KINDS (the span kinds read
        for a trace's retrieved documents and tool calls: default RETRIEVER,TOOL; "none"
        reads none), EVAL_PHOENIX_FILTERS (JSON object of
        attribute: value, matched by Phoenix), EVAL_PHOENIX_SEGMENT_ATTR / _MODEL_ATTR /
        _PROMPT_VERSION_ATTR / _USER_ID_ATTR (comma lists of attribute keys, first present
        wins), EVAL_PHOENIX_PAGE_SIZE, EVAL_PHOENIX_TIMEOUT (seconds), EVAL_PHOENIX_RETRIES,
        EVAL_PHOENIX_BACKOFF (first retry delay, seconds; doubles), EVAL_PHOENIX_MAX_CHARS,
        EVAL_PHOENIX_ANNOTATION_NAME.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def pick(key: str, *names: str, convert: Callable[[str], Any] = str) -> None:
            for name in names:
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    try:
                        values[key] = convert(raw.strip())
                    except ValueError as exc:
                        raise ValueError(f"bad value in ${name}: {exc}") from None
                    return

        pick("base_url", "EVAL_PHOENIX_URL", "PHOENIX_BASE_URL")
        pick("project", "EVAL_PHOENIX_PROJECT", "PHOENIX_PROJECT_NAME")
        pick("api_key", "EVAL_PHOENIX_API_KEY", "PHOENIX_API_KEY")
        pick("span_kinds", "EVAL_PHOENIX_SPAN_KINDS", convert=_split)
        pick("root_only", "EVAL_PHOENIX_ROOT_ONLY", convert=_bool)
        pick("part_kinds", "EVAL_PHOENIX_PART_KINDS", convert=_kinds_or_none)
        pick("attribute_filters", "EVAL_PHOENIX_FILTERS", convert=_filters_from_json)
        pick("segment_attrs", "EVAL_PHOENIX_SEGMENT_ATTR", convert=_split)
        pick("model_attrs", "EVAL_PHOENIX_MODEL_ATTR", convert=_split)
        pick("prompt_version_attrs", "EVAL_PHOENIX_PROMPT_VERSION_ATTR", convert=_split)
        pick("user_id_attrs", "EVAL_PHOENIX_USER_ID_ATTR", convert=_split)
        pick("page_size", "EVAL_PHOENIX_PAGE_SIZE", convert=int)
        pick("timeout_s", "EVAL_PHOENIX_TIMEOUT", convert=float)
        pick("retries", "EVAL_PHOENIX_RETRIES", convert=int)
        pick("backoff_s", "EVAL_PHOENIX_BACKOFF", convert=float)
        pick("max_chars", "EVAL_PHOENIX_MAX_CHARS", convert=int)
        pick("annotation_name", "EVAL_PHOENIX_ANNOTATION_NAME")
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "attribute_filters" and isinstance(value, Mapping):
                value = tuple(sorted(value.items()))
            elif isinstance(value, list):
                value = tuple(value)
            values[key] = value
        return cls(**values)

    def safe_url(self) -> str:
        """The base URL without any user:password part, for messages."""
        parts = urllib.parse.urlsplit(self.base_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def trace_rules(self) -> TraceRules:
        """The OpenInference parser's rules for this project's spans."""
        # Every TraceRules field has a PhoenixConfig field of the same name.
        return TraceRules(**{f.name: getattr(self, f.name) for f in fields(TraceRules)})


def _kinds_or_none(raw: str) -> tuple[str, ...]:
    return () if raw.lower() == "none" else _split(raw)


def _filters_from_json(raw: str) -> tuple[tuple[str, Any], ...]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("must be a JSON object of attribute: value")
    return tuple(sorted(obj.items()))
