"""The signals configuration: validation at load, defaults that match what they claim."""

from __future__ import annotations

import json
import re

import duckdb
import pytest

from eval_pipeline.core.signals.config import SignalsConfig, load_config

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I’m sorry, I cannot assist with this request.",
    "I cannot provide that information.",
    "I'm unable to discuss billing matters in this chat.",
    "I can't assist with payment or charges. Is there anything else?",
    "I am not able to answer that.",
    "As an AI language model, I don't have opinions.",
    "I'm not able to share account details.",
    "I must decline to answer.",
    "Lo siento, pero no puedo ayudarte con eso.",
    "No puedo proporcionar esa información.",
    "Je suis désolé, mais je ne peux pas vous aider.",
    "Je ne suis pas en mesure de répondre.",
    "Es tut mir leid, aber ich kann Ihnen dabei nicht helfen.",
    "Ich kann dir dabei nicht helfen.",
    "Desculpe, mas não posso ajudar com isso.",
    "Não posso fornecer essa informação.",
]
NOT_REFUSALS = [
    "Sure! Your order ships tomorrow.",
    "I can help with that: open Settings, then Billing.",
    "Sorry for the wait. Your refund was issued today.",
    "I can't wait to help you plan the trip. Here is a first idea.",
    "Claro, puedo ayudarte con eso.",
    "Je peux vous aider avec votre commande.",
    "Ich kann Ihnen gern helfen.",
    "Posso ajudar com isso.",
]


def matches(pattern: str, text: str) -> bool:
    return duckdb.sql("SELECT regexp_matches(?, ?)", params=[text, pattern]).fetchall()[0][0]


@pytest.mark.parametrize("text", REFUSALS)
def test_default_patterns_catch_common_refusals(text):
    assert matches(SignalsConfig().refusal_regex(), text)


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_default_patterns_leave_ordinary_answers(text):
    assert not matches(SignalsConfig().refusal_regex(), text)


def test_a_bad_regex_is_refused_at_load_with_a_clear_message():
    with pytest.raises(ValueError, match=re.escape("refusal_patterns[1]: '(unclosed'")) as e:
        load_config({"refusal_patterns": ["fine", "(unclosed"]})
    assert "not a valid regular expression" in str(e.value)
    # Python's re accepts lookbehind; DuckDB's RE2 does not, and the SQL runs RE2.
    with pytest.raises(ValueError, match="RE2"):
        load_config({"extra_refusal_patterns": ["(?<=no )way"]})
    with pytest.raises(ValueError, match="cutoff_pattern"):
        load_config({"cutoff_pattern": "[a-"})


def test_other_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="unknown keys"):
        load_config({"psi_flor": 0.5})
    with pytest.raises(ValueError, match="information, never a page"):
        load_config({"pages": ["refusal_rate", "new_model"], "informs": []})
    with pytest.raises(ValueError, match="unknown signals"):
        load_config({"pages": ["refusal_rat"]})
    with pytest.raises(ValueError, match="both page and inform"):
        load_config({"pages": ["cost_usd"]})
    with pytest.raises(ValueError, match="rate_rel_floor must be >= 1"):
        load_config({"rate_rel_floor": 0.5})
    with pytest.raises(ValueError, match="must be a list"):
        load_config({"refusal_patterns": "sorry"})
    with pytest.raises(ValueError, match="not a plain key name"):
        SignalsConfig(metadata_keys={**SignalsConfig().metadata_keys, "latency_ms": "a'b"})


def test_load_from_a_json_file_and_extra_patterns_add_to_the_defaults(tmp_path):
    path = tmp_path / "signals.json"
    path.write_text(json.dumps({"extra_refusal_patterns": ["computer says no"], "alpha": 0.001}))
    cfg = load_config(path)
    assert cfg.alpha == 0.001
    assert cfg.refusal_patterns[-1] == "computer says no"
    assert len(cfg.refusal_patterns) == len(SignalsConfig().refusal_patterns) + 1
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read it as JSON"):
        load_config(tmp_path / "bad.json")
