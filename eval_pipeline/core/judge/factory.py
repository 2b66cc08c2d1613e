"""Which judge configuration asks for: the one place that knows every judge kind."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from eval_pipeline import settings
from eval_pipeline.core.judge.base import HeuristicJudge, Judge
from eval_pipeline.core.judge.llm import OpenAICompatibleJudge
from eval_pipeline.core.judge.llm_config import DEFAULT_API_KEY_ENV, LLMJudgeConfig
from eval_pipeline.core.judge.rule_judge import RuleJudge

JUDGE_KINDS = ("heuristic", "openai")


def judge_from_env(
    env: Mapping[str, str] | None = None,
    *,
    kind: str | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    **explicit: Any,
) -> Judge:
    """The judge that configuration asks for: ``kind``, else $EVAL_JUDGE, else "heuristic".

    Selecting a judge is configuration, not code: the CLI, the demo and the Dagster resource
    all come through here. ``explicit`` settings of the LLM judge (None: not set) win over
    its EVAL_JUDGE_* variables, which win over the defaults (docs/configuration.md).
    """
    env = dict(os.environ if env is None else env)
    kind = settings.resolve(kind, env, "EVAL_JUDGE", "heuristic")
    if kind == "heuristic":
        criteria = settings.resolve(explicit.get("criteria"), env, "EVAL_JUDGE_CRITERIA", "")
        names = tuple(c.strip() for c in criteria.split(",") if c.strip())
        if names in ((), ("quality",)):
            return HeuristicJudge()
        # Rules score what they can see (groundedness, safety, instructions); any other
        # criterion is refused with the reason.
        return RuleJudge(names)
    if kind == "openai":
        config = LLMJudgeConfig.from_env(env, api_key_env=api_key_env, **explicit)
        return OpenAICompatibleJudge(config)
    raise ValueError(f"unknown judge {kind!r} in EVAL_JUDGE (known: {', '.join(JUDGE_KINDS)})")
