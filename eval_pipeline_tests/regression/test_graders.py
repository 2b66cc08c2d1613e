"""Each built-in grader, with its edge cases, and custom grader registration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eval_pipeline.core.judge.base import HeuristicJudge, Judgment
from eval_pipeline.core.regression import graders
from eval_pipeline.core.regression.cases import parse_case


def case(grader, expected=None, input="q?"):
    return parse_case({"id": "c", "input": input, "expected": expected, "grader": grader})


def outcome(grader, expected, output, **kw):
    return graders.grade(case(grader, expected, **kw), output)


# --- exact -------------------------------------------------------------------------------


def test_exact_strips_by_default_but_is_otherwise_exact():
    assert outcome("exact", "Paris", "  Paris\n").passed
    assert not outcome("exact", "Paris", "paris").passed
    assert not outcome("exact", "New York", "New  York").passed
    g = outcome("exact", "Paris", "Lyon")
    assert g.outcome == "fail" and "expected exactly Paris, got Lyon" in g.reason


def test_exact_normalisation_options():
    ws = {"type": "exact", "normalize": ["whitespace"]}
    assert outcome(ws, "New York", " New \t\n York ").passed
    assert outcome({"type": "exact", "normalize": ["case"]}, "Straße", "STRASSE").passed
    uni = {"type": "exact", "normalize": ["unicode"]}
    assert outcome(uni, "café 12", "café １２").passed  # full-width digits, combining accent
    assert not outcome("exact", "café 12", "café １２").passed
    assert outcome(
        {"type": "exact", "normalize": {"whitespace": True, "case": True}}, "A b", "a  B"
    ).passed
    assert not outcome({"type": "exact", "normalize": []}, "x", "x\n").passed


def test_exact_rejects_bad_params_at_load():
    with pytest.raises(ValueError, match="normalize"):
        case({"type": "exact", "normalize": ["soundex"]}, "x")
    with pytest.raises(ValueError, match="expected must be a string"):
        case("exact", None)
    with pytest.raises(ValueError, match="unknown parameter"):
        case({"type": "exact", "strict": True}, "x")


# --- contains ----------------------------------------------------------------------------


def test_contains_all_any_and_case():
    g = {"type": "contains", "values": ["30 days", "label"]}
    assert outcome(g, None, "Return within 30 DAYS with the Label.").passed
    miss = outcome(g, None, "Return within 30 days.")
    assert miss.outcome == "fail" and "label" in miss.reason
    assert outcome(dict(g, mode="any"), None, "Return within 30 days.").passed
    assert not outcome(dict(g, mode="any"), None, "No idea.").passed
    sensitive = {"type": "contains", "values": ["Label"], "case_sensitive": True}
    assert not outcome(sensitive, None, "print the label").passed
    assert outcome(sensitive, None, "print the Label").passed


def test_contains_uses_expected_and_unicode_normalisation():
    assert outcome("contains", "size chart", "See the SIZE CHART").passed
    assert outcome("contains", ["a", "b"], "a and b").passed
    assert outcome("contains", "ﬁne", "that is fine").passed  # the "fi" ligature, NFKC
    with pytest.raises(ValueError, match="values"):
        case("contains", None)
    with pytest.raises(ValueError, match="mode"):
        case({"type": "contains", "mode": "most"}, "x")


# --- regex -------------------------------------------------------------------------------


def test_regex_search_flags_and_fullmatch():
    assert outcome({"type": "regex", "pattern": r"\b3-5 days\b"}, None, "It takes 3-5 days.").passed
    assert not outcome({"type": "regex", "pattern": "orders"}, None, "Go to Orders").passed
    assert outcome(
        {"type": "regex", "pattern": "orders", "flags": "i"}, None, "Go to Orders"
    ).passed
    full = {"type": "regex", "pattern": r"\d+", "fullmatch": True}
    assert outcome(full, None, " 42 ").passed
    assert not outcome(full, None, "42 days").passed
    assert outcome(
        "regex", r"^\w+@acme\.example$", "help@acme.example"
    ).passed  # expected as pattern


def test_invalid_regex_and_flags_are_refused_at_load():
    with pytest.raises(ValueError, match="invalid pattern"):
        case({"type": "regex", "pattern": "(unclosed"})
    with pytest.raises(ValueError, match="flags"):
        case({"type": "regex", "pattern": "x", "flags": "q"})


# --- json --------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["topic", "answer"],
    "properties": {"topic": {"enum": ["billing", "shipping"]}, "answer": {"type": "string"}},
}


def test_json_parses_validates_and_compares_fields():
    g = {"type": "json", "schema": SCHEMA, "fields": {"topic": "billing"}}
    assert outcome(g, None, '{"topic": "billing", "answer": "ok"}').passed
    assert outcome(g, None, '```json\n{"topic": "billing", "answer": "ok"}\n```').passed
    bad = outcome(g, None, "Sure! here it is: {")
    assert bad.outcome == "fail" and "not valid JSON" in bad.reason


def test_json_that_parses_but_fails_the_schema():
    g = {"type": "json", "schema": SCHEMA}
    res = outcome(g, None, '{"topic": "weather", "answer": "sunny"}')
    assert res.outcome == "fail"
    assert "does not match the schema at topic" in res.reason
    missing = outcome(g, None, '{"topic": "billing"}')
    assert "'answer' is a required property" in missing.reason
    assert not outcome(g, None, "[1, 2]").passed


def test_json_field_mismatch_and_expected_object_as_fields():
    res = outcome({"type": "json", "fields": {"escalate": False}}, None, '{"escalate": true}')
    assert res.outcome == "fail" and "escalate: expected false, got true" in res.reason
    assert outcome("json", {"a": 1}, '{"a": 1, "b": 2}').passed
    assert not outcome("json", {"a": 1}, '{"b": 2}').passed
    assert not outcome("json", {"a": 1}, '"a string"').passed
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        case({"type": "json", "schema": {"type": "nonsense"}})


# --- numeric -----------------------------------------------------------------------------


def test_numeric_tolerance_modes_and_extraction():
    assert outcome("numeric", 30, "30").passed
    assert outcome("numeric", 30, "You have 30 days.").passed
    assert outcome("numeric", 1234.5, "$1,234.50").passed
    assert outcome("numeric", 0.3, str(0.1 + 0.2)).passed
    assert not outcome("numeric", 30, "31").passed
    assert outcome({"type": "numeric", "tolerance": 1}, 30, "31").passed
    rel = {"type": "numeric", "tolerance": 0.05, "mode": "rel"}
    assert outcome(rel, 200, "209").passed
    assert not outcome(rel, 200, "211").passed
    assert outcome("numeric", "50", "50").passed  # numeric string expected
    assert outcome("numeric", 30, "３０").passed  # full-width digits


def test_numeric_refuses_to_guess_between_several_numbers():
    res = outcome("numeric", 5, "Between 3 and 5 days")
    assert res.outcome == "fail" and "several numbers" in res.reason
    assert outcome({"type": "numeric", "pick": "last"}, 5, "Between 3 and 5 days").passed
    assert outcome({"type": "numeric", "pick": "first"}, 3, "Between 3 and 5 days").passed
    assert "no number" in outcome("numeric", 5, "a few days").reason
    with pytest.raises(ValueError, match="expected must be a number"):
        case("numeric", "many")
    with pytest.raises(ValueError, match="tolerance"):
        case({"type": "numeric", "tolerance": -1}, 3)


# --- judge -------------------------------------------------------------------------------


def test_judge_uses_the_reference_and_threshold():
    ctx = graders.GradingContext(HeuristicJudge)
    c = case("judge", "Go to Orders > Return item.", input="How do I return my boots?")
    good = "You can return your boots within 30 days: go to Orders > Return item."
    res = graders.grade_many([(c, good)], ctx)[0]
    assert res.outcome == "pass" and res.score == 5
    refusal = graders.grade_many([(c, "I'm sorry, but I can't help with that.")], ctx)[0]
    assert refusal.outcome == "fail" and refusal.score == 1 and "< 4" in refusal.reason
    low = case({"type": "judge", "threshold": 1}, "x", input="How do I return my boots?")
    assert graders.grade_many([(low, "I'm sorry, but I can't help with that.")], ctx)[0].passed
    with pytest.raises(ValueError, match="threshold"):
        case({"type": "judge", "threshold": 9}, "x")


@dataclass
class RecordingJudge:
    name: str = "recording"
    model: str | None = None
    rubric_version: str = "v"

    def __post_init__(self):
        self.seen = []

    def judge_many(self, requests, progress=None):
        self.seen.extend(requests)
        return [Judgment("error", None, "judge endpoint down") for _ in requests]


def test_judge_failure_is_an_error_not_a_wrong_answer():
    judge = RecordingJudge()
    c = case("judge", {"answer": 42}, input=[{"role": "user", "content": "life?"}])
    res = graders.grade_many([(c, "42")], graders.GradingContext(lambda: judge))[0]
    assert res.outcome == "error" and "judge endpoint down" in res.reason
    assert judge.seen[0].query == "life?"
    assert judge.seen[0].reference == '{"answer": 42}'


def test_the_default_judge_comes_from_the_environment():
    ctx = graders.GradingContext()
    assert ctx.judge.name == "heuristic"


# --- custom graders ----------------------------------------------------------------------


@pytest.fixture
def polite_grader():
    @graders.register_grader("polite_test")
    def polite(c, output, params):
        word = params.get("word", "please")
        return (word in output.lower(), f"no {word!r}")

    @graders.register_grader("boom_test")
    def boom(c, output, params):
        raise RuntimeError("grader bug")

    yield
    graders.unregister_grader("polite_test")
    graders.unregister_grader("boom_test")


def test_custom_graders_register_by_name(polite_grader):
    assert "polite_test" in graders.grader_types()
    c = case({"type": "polite_test", "word": "thanks"}, None)
    assert graders.grade(c, "Thanks!").passed
    res = graders.grade(c, "no")
    assert res.outcome == "fail" and res.reason == "no 'thanks'"
    boom = graders.grade(case("boom_test", None), "x")
    assert boom.outcome == "error" and "grader bug" in boom.reason
    with pytest.raises(ValueError, match="already registered"):
        graders.register_grader("polite_test")(lambda c, o, p: True)


def test_unregistered_grader_is_refused_at_load():
    with pytest.raises(ValueError, match="unknown grader type 'polite_test'"):
        case("polite_test", None)
