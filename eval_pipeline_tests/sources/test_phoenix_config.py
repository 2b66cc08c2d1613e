"""PhoenixConfig: the environment, explicit overrides, validation, secrets kept out."""

from __future__ import annotations

import pytest

from eval_pipeline.core.sources.openinference import TraceRules
from eval_pipeline.core.sources.phoenix.config import DEFAULT_URL, PhoenixConfig


def test_config_from_env_and_overrides():
    env = {
        "PHOENIX_BASE_URL": "http://phx:6006/",
        "EVAL_PHOENIX_PROJECT": "shop",
        "PHOENIX_API_KEY": "sekret",
        "EVAL_PHOENIX_SPAN_KINDS": "llm, agent",
        "EVAL_PHOENIX_ROOT_ONLY": "false",
        "EVAL_PHOENIX_FILTERS": '{"metadata.tier": "prod", "llm.model_name": "m"}',
        "EVAL_PHOENIX_SEGMENT_ATTR": "metadata.segment,metadata.tier",
    }
    cfg = PhoenixConfig.from_env(env)
    assert cfg.base_url == "http://phx:6006"
    assert cfg.project == "shop"
    assert cfg.span_kinds == ("LLM", "AGENT")
    assert cfg.root_only is False
    assert cfg.attribute_filters == (("llm.model_name", "m"), ("metadata.tier", "prod"))
    assert cfg.segment_attrs == ("metadata.segment", "metadata.tier")
    assert "sekret" not in repr(cfg)
    env["EVAL_PHOENIX_URL"] = "http://other:1"
    over = PhoenixConfig.from_env(env, project="p2", root_only=True, span_kinds=None)
    assert (over.base_url, over.project, over.root_only) == ("http://other:1", "p2", True)
    assert over.span_kinds == ("LLM", "AGENT")
    assert PhoenixConfig.from_env({}).base_url == DEFAULT_URL
    with pytest.raises(ValueError, match="unknown span kinds"):
        PhoenixConfig.from_env({"EVAL_PHOENIX_SPAN_KINDS": "LLM,SPOON"})
    with pytest.raises(ValueError, match="EVAL_PHOENIX_ROOT_ONLY"):
        PhoenixConfig.from_env({"EVAL_PHOENIX_ROOT_ONLY": "maybe"})
    assert PhoenixConfig(base_url="http://u:pw@h:1/x").safe_url() == "http://h:1/x"


def test_trace_rules_carry_the_configured_parsing_settings():
    assert PhoenixConfig().trace_rules() == TraceRules()
    cfg = PhoenixConfig(span_kinds=("agent",), root_only=False, model_attrs=("m",), max_chars=9)
    rules = cfg.trace_rules()
    assert (rules.span_kinds, rules.root_only, rules.model_attrs, rules.max_chars) == (
        ("AGENT",),
        False,
        ("m",),
        9,
    )
