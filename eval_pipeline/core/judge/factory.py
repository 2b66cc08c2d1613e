"""Which judge configuration asks for: the one place that knows every judge kind."""

from __future__ import annotations

import os

from eval_pipeline.core.judge.base import HeuristicJudge, Judge
from eval_pipeline.core.judge.llm import OpenAICompatibleJudge


def judge_from_env(env: dict[str, str] | None = None) -> Judge:
    """The judge that configuration asks for: $EVAL_JUDGE (default "heuristic").

    Selecting a judge is configuration, not code: the CLI, the demo and the Dagster resource
    all come through here.
    """
    env = dict(os.environ if env is None else env)
    kind = env.get("EVAL_JUDGE", "heuristic")
    if kind == "heuristic":
        return HeuristicJudge()
    if kind == "openai":
        # Any OpenAI-compatible endpoint, configured by EVAL_JUDGE_* variables (docs/judge.md).
        return OpenAICompatibleJudge.from_env(env)
    raise ValueError(f"unknown judge {kind!r} in EVAL_JUDGE (known: heuristic, openai)")
