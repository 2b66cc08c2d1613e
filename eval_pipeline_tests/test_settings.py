"""One precedence rule for every setting: explicit configuration, then the environment, then
the default. The helper itself, and the judge and trace source resources that follow it."""

from __future__ import annotations

import pytest

from eval_pipeline import settings
from eval_pipeline.core.judge.base import HeuristicJudge
from eval_pipeline.core.judge.llm import OpenAICompatibleJudge
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.defs.resources import JudgeResource, TraceSourceResource


def test_explicit_then_environment_then_default():
    env = {"X": "7"}
    assert settings.resolve(3, env, "X", 1, int) == 3
    assert settings.resolve(None, env, "X", 1, int) == 7
    assert settings.resolve(None, {}, "X", 1, int) == 1
    assert settings.resolve(None, {"X": "  "}, "X", 1, int) == 1  # blank is unset
    # An explicit False or 0 is a choice, not "unset".
    assert settings.resolve(False, {"X": "true"}, "X", True, settings.flag) is False
    assert settings.resolve(0, env, "X", 1, int) == 0
    with pytest.raises(ValueError, match="X='many' is not a valid value"):
        settings.resolve(None, {"X": "many"}, "X", 1, int)


def test_the_llm_judge_config_follows_the_rule():
    env = {
        "EVAL_JUDGE_BASE_URL": "http://env/v1",
        "EVAL_JUDGE_MODEL": "env-model",
        "EVAL_JUDGE_CONCURRENCY": "3",
        "EVAL_JUDGE_STRUCTURED_OUTPUT": "true",
        "EVAL_JUDGE_API_KEY": "sk-from-env-000",
    }
    cfg = LLMJudgeConfig.from_env(env, model="explicit-model", structured_output=False)
    assert (cfg.base_url, cfg.model, cfg.concurrency) == ("http://env/v1", "explicit-model", 3)
    assert cfg.structured_output is False and cfg.read_timeout == 60.0  # the default
    assert cfg.api_key == "sk-from-env-000"
    # The key comes from the variable the configuration names, and only from it.
    other = LLMJudgeConfig.from_env(env, api_key_env="MY_JUDGE_KEY")
    assert other.api_key is None
    with pytest.raises(TypeError, match="unknown LLM judge settings: colour"):
        LLMJudgeConfig.from_env(env, colour="red")


def test_judge_resource_fields_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.setenv("EVAL_JUDGE_BASE_URL", "http://env/v1")
    monkeypatch.setenv("EVAL_JUDGE_MODEL", "env-model")
    monkeypatch.setenv("EVAL_JUDGE_MAX_RETRIES", "2")
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-named-variable-1")
    judge = JudgeResource(model="field-model", structured_output=False).build()
    assert isinstance(judge, OpenAICompatibleJudge)
    assert (judge.config.model, judge.config.base_url) == ("field-model", "http://env/v1")
    assert judge.config.max_retries == 2 and judge.response_format == "none"
    assert JudgeResource().build().config.model == "env-model"
    named = JudgeResource(api_key_env="MY_JUDGE_KEY").build()
    assert named.config.api_key == "sk-named-variable-1"
    # kind: the field, then $EVAL_JUDGE, then heuristic.
    assert isinstance(JudgeResource(kind="heuristic").build(), HeuristicJudge)
    monkeypatch.delenv("EVAL_JUDGE")
    assert isinstance(JudgeResource().build(), HeuristicJudge)


def test_trace_source_fields_win_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EVAL_TRACE_SOURCE", "phoenix")
    monkeypatch.setenv("EVAL_PHOENIX_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("EVAL_PHOENIX_PROJECT", "env-project")
    assert TraceSourceResource().resolved_kind() == "phoenix"
    explicit = TraceSourceResource(kind="jsonl", inbox=str(tmp_path))
    assert explicit.resolved_kind() == "jsonl"
    assert isinstance(explicit.build(), InboxSource)
    cfg = TraceSourceResource(phoenix_project="field-project").phoenix_config()
    assert (cfg.project, cfg.base_url) == ("field-project", "http://127.0.0.1:1")
    monkeypatch.delenv("EVAL_TRACE_SOURCE")
    assert TraceSourceResource().resolved_kind() == "jsonl"
