"""How the LLM judge is configured: ``LLMJudgeConfig`` and where each value comes from.

Every value follows the one precedence rule (``settings.resolve``): an explicit value (a
Dagster resource field, a keyword argument) wins, then the ``EVAL_JUDGE_*`` environment
variable, then the default below. The API key is read from a variable (by default
``EVAL_JUDGE_API_KEY``); only the variable's name is ever configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from eval_pipeline import settings
from eval_pipeline.core.http import RetryPolicy

DEFAULT_API_KEY_ENV = "EVAL_JUDGE_API_KEY"


@dataclass
class LLMJudgeConfig:
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 16
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    deadline: float = 180.0  # seconds for one judgment, all attempts and waits included
    max_retries: int = 6  # extra attempts after the first, per judgment
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    max_retry_after: float = 60.0  # a longer Retry-After is capped (and the deadline rules)
    temperature: float = 0.0
    max_tokens: int = 256
    structured_output: bool = True
    price_prompt_per_1k: float | None = None
    price_completion_per_1k: float | None = None
    rubric: str | None = None  # bundled rubric name or a file path; None = quality-v1
    # Criteria judged per trace: comma-separated bundled names or .md paths; None = quality
    # (judged with ``rubric``). Several are judged one call each, or all in one call.
    criteria: str | None = None
    criteria_mode: str = "per-criterion"  # or "one-call"

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("the LLM judge needs a base URL (EVAL_JUDGE_BASE_URL)")
        if not self.model:
            raise ValueError("the LLM judge needs a model name (EVAL_JUDGE_MODEL)")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.criteria_mode not in ("per-criterion", "one-call"):
            raise ValueError(
                f"criteria_mode must be per-criterion or one-call, got {self.criteria_mode!r}"
            )
        for name in ("connect_timeout", "read_timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def retry_policy(self) -> RetryPolicy:
        """Retries of one chat call; the judgment's deadline is enforced by the judge."""
        return RetryPolicy(
            max_attempts=self.max_retries + 1,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            max_retry_after=self.max_retry_after,
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        **explicit: Any,
    ) -> LLMJudgeConfig:
        """The config from explicit values (None means "not set"), then EVAL_JUDGE_*
        variables (docs/configuration.md has the list), then the defaults."""
        unknown = set(explicit) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown LLM judge settings: {', '.join(sorted(unknown))}")
        defaults = {f.name: f.default for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, cast in _FROM_ENV.items():
            default = defaults[name] if name not in ("base_url", "model") else ""
            values[name] = settings.resolve(
                explicit.get(name), env, f"EVAL_JUDGE_{name.upper()}", default, cast
            )
        values["api_key"] = explicit.get("api_key") or env.get(api_key_env) or None
        if explicit.get("max_retry_after") is not None:  # no variable: explicit or default
            values["max_retry_after"] = explicit["max_retry_after"]
        return cls(**values)


# The settings read from EVAL_JUDGE_<NAME> and how each is parsed.
_FROM_ENV: dict[str, Callable[[str], Any]] = {
    "base_url": str,
    "model": str,
    "concurrency": int,
    "connect_timeout": float,
    "read_timeout": float,
    "deadline": float,
    "max_retries": int,
    "backoff_base": float,
    "backoff_max": float,
    "temperature": float,
    "max_tokens": int,
    "structured_output": settings.flag,
    "price_prompt_per_1k": float,
    "price_completion_per_1k": float,
    "rubric": str,
    "criteria": str,
    "criteria_mode": str,
}
