"""The OpenInference parser on its own: attribute dicts (flattened or nested, chat messages
or input/output values, multimodal parts) to a trace's fields or a reject reason, and which
spans are traces at all."""

from __future__ import annotations

import copy
import json

import pytest

from eval_pipeline.core.sources.openinference import (
    Reject,
    TraceRules,
    parse_attributes,
    skip_reason,
    span_kind,
)
from eval_pipeline_tests.sources.phoenix_samples import load

RULES = TraceRules()


def test_multi_turn_keeps_the_last_user_turn():
    attrs = {
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are a shop assistant.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Where is my order?",
        "llm.input_messages.2.message.role": "assistant",
        "llm.input_messages.2.message.content": "Which order number?",
        "llm.input_messages.3.message.role": "user",
        "llm.input_messages.3.message.content": "It is 1234.",
        # index 10 sorts after 3 numerically, not as text
        "llm.input_messages.10.message.role": "user",
        "llm.input_messages.10.message.content": "Hello? Order 1234.",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Order 1234 ships tomorrow.",
    }
    row = parse_attributes(attrs, RULES)
    assert row.user_query == "Hello? Order 1234."
    assert row.assistant_response == "Order 1234 ships tomorrow."
    assert row.conversation["user_turns"] == 3
    assert row.conversation["input_messages"] == 5


def test_input_value_json_messages_and_chat_completion_output():
    attrs = {
        "input.value": json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "text", "text": "second"}]},
                ]
            }
        ),
        "input.mime_type": "application/json",
        "output.value": json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": "the answer"}}]}
        ),
        "output.mime_type": "application/json",
    }
    row = parse_attributes(attrs, RULES)
    assert (row.user_query, row.assistant_response) == ("second", "the answer")
    assert row.conversation["input_from"] == "input.value"
    assert row.conversation["output_from"] == "output.value"


def test_plain_text_values_and_json_dict_shapes():
    row = parse_attributes({"input.value": "hi", "output.value": "hello."}, RULES)
    assert (row.user_query, row.assistant_response) == ("hi", "hello.")
    attrs = {"input.value": '{"question": "q?"}', "output.value": '{"answer": "a."}'}
    row = parse_attributes(attrs, RULES)
    assert (row.user_query, row.assistant_response) == ("q?", "a.")
    # text that merely starts like JSON stays text
    row = parse_attributes({"input.value": "[draft] hi", "output.value": "{x"}, RULES)
    assert (row.user_query, row.assistant_response) == ("[draft] hi", "{x")


def test_multimodal_contents_keep_the_text_parts():
    attrs = {
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "What is in this photo?",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
        "llm.input_messages.0.message.contents.1.message_content.image.image.url": "data:...",
        "output.value": "A cat.",
    }
    row = parse_attributes(attrs, RULES)
    assert row.user_query == "What is in this photo?"


def test_nested_attributes_parse_like_flattened_ones():
    flat = load("sample_spans.json")[1]
    nested = copy.deepcopy(flat)
    nested["attributes"] = {
        "llm": {
            "input_messages": [
                {"message": {"role": "system", "content": "You are a calculator."}},
                {"message": {"role": "user", "content": "What is 5 + 5?"}},
            ],
            "output_messages": [{"message": {"role": "assistant", "content": "5 + 5 = 10."}}],
            "model_name": "gpt-4o-mini",
        },
        "user": {"id": "user-1"},
    }
    a = parse_attributes(flat["attributes"], RULES)
    b = parse_attributes(nested["attributes"], RULES)
    assert (a.user_query, a.assistant_response, a.model, a.user_id) == (
        b.user_query,
        b.assistant_response,
        b.model,
        b.user_id,
    )


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"input.value": "hi"}, "no output (span has neither output messages nor output.value)"),
        ({"output.value": "x"}, "no user query (no input)"),
        (
            {
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "sys",
                "output.value": "x",
            },
            "no user query (no user message in the input)",
        ),
        (
            {
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.contents.0.message_content.type": "image",
                "output.value": "a cat",
            },
            "non-text content (user turn has image)",
        ),
        (
            {
                "input.value": "book a flight",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "book",
            },
            "non-text content (output has tool_call)",
        ),
        (
            {"input.value": "hi", "output.value": "x" * 101},
            "value too large (answer 101 chars > 100)",
        ),
        (
            {"input.value": "   ", "output.value": "x"},
            "no user query (the last user turn is empty)",
        ),
    ],
)
def test_unusable_spans_are_rejected_with_a_reason(attrs, reason):
    assert parse_attributes(attrs, TraceRules(max_chars=100)) == Reject(reason)


def test_empty_answer_is_kept_for_the_judge():
    row = parse_attributes({"input.value": "hi", "output.value": ""}, RULES)
    assert row.assistant_response == ""


def test_roots_of_wanted_kinds_are_traces_the_rest_are_skipped():
    assert span_kind(None) == "UNKNOWN" and span_kind("llm") == "LLM"
    assert skip_reason("LLM", None, RULES) is None
    assert skip_reason("LLM", "d" * 16, RULES) == "not a root span"
    assert skip_reason("TOOL", None, RULES) == "span kind TOOL"
    children = TraceRules(span_kinds=("LLM", "AGENT"), root_only=False)
    assert skip_reason("AGENT", "d" * 16, children) is None


def test_attributes_that_are_not_an_object_are_a_reject_not_a_crash():
    for raw in (["not", "a", "dict"], "text", None, 3):
        assert parse_attributes(raw, RULES) == Reject(
            "malformed span (attributes is not an object)"
        )


def test_configured_attribute_keys_and_details_are_read():
    attrs = {
        "input.value": "q",
        "output.value": "a",
        "metadata.tier": "gold",
        "metadata.segment": "  ",  # blank: the next key wins
        "llm.prompt_template.version": "v7",
        "session.id": "s-1",
        "tag.tags": ["x", "y"],
    }
    fields = parse_attributes(
        attrs, TraceRules(segment_attrs=("metadata.segment", "metadata.tier"))
    )
    assert (fields.segment, fields.prompt_version, fields.model) == ("gold", "v7", None)
    assert fields.details == {
        "session_id": "s-1",
        "tags": ["x", "y"],
        "metadata": {"tier": "gold", "segment": "  "},
    }
