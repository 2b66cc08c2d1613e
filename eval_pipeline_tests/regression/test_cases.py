"""The golden case format: loading, validation errors (every bad line named), versions."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from eval_pipeline import settings
from eval_pipeline.core.regression import cases
from eval_pipeline.core.regression.cases import GoldenFileError, load_cases

GOOD = {"id": "c1", "input": "How long is shipping?", "expected": "3-5", "grader": "contains"}


def write(tmp_path, lines, name="golden.jsonl"):
    path = tmp_path / name
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def test_loads_valid_cases_and_normalises_the_grader_shorthand(tmp_path):
    path = write(
        tmp_path,
        [
            GOOD,
            "",
            {
                "id": "c2",
                "input": [{"role": "user", "content": "hi"}],
                "expected": None,
                "grader": {"type": "regex", "pattern": "h(i|ello)", "flags": "i"},
                "tags": ["account"],
                "provenance": {"source_trace_id": "t-1", "reviewer": "ana"},
                "x_custom": 7,
            },
        ],
    )
    loaded = load_cases(path)
    assert [c.id for c in loaded] == ["c1", "c2"]
    assert loaded[0].grader == {"type": "contains"}
    assert loaded[1].tags == ("account",)
    assert loaded[1].provenance["reviewer"] == "ana"
    assert loaded[1].extra == {"x_custom": 7}
    assert loaded[1].source.endswith("golden.jsonl:3")


def test_every_bad_line_is_named_with_file_and_line(tmp_path):
    path = write(
        tmp_path,
        [
            GOOD,  # 1 ok
            "{not json",  # 2
            {"id": "c3", "input": "x", "expected": "y"},  # 3 no grader
            {"id": "c4", "input": "x", "expected": "y", "grader": "telepathy"},  # 4
            {
                "id": "c5",
                "input": "x",
                "expected": None,
                "grader": {"type": "regex", "pattern": "(["},
            },
            {
                "id": "c6",
                "input": [{"role": "robot", "content": "x"}],
                "expected": "y",
                "grader": "exact",
            },
            dict(GOOD),  # 7 duplicate of c1
            {"id": "c8", "input": "x", "expected": True, "grader": "exact"},  # 8 bool expected
            {"id": "c9", "input": "", "expected": "y", "grader": "exact"},  # 9 empty input
            {
                "id": "c10",
                "input": "x",
                "expected": "y",
                "grader": {"type": "json", "schema": {"type": 5}},
            },
        ],
    )
    with pytest.raises(GoldenFileError) as info:
        load_cases(path)
    problems = info.value.problems
    assert [line for _, line, _ in problems] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert all(p == str(path) for p, _, _ in problems)
    text = str(info.value)
    assert f"{path}:2: not valid JSON" in text
    assert "missing required field(s): grader" in text
    assert "unknown grader type 'telepathy'" in text
    assert "invalid pattern" in text  # invalid regex refused at load
    assert "role must be one of" in text
    assert "duplicate id 'c1' (first on line 1)" in text
    assert "expected must be" in text
    assert "empty string" in text
    assert "invalid JSON Schema" in text


def test_invalid_utf8_and_missing_and_empty_files(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe{}\n")
    with pytest.raises(GoldenFileError, match=r"bad.jsonl:2: not valid UTF-8"):
        load_cases(path)
    with pytest.raises(GoldenFileError, match="cannot read"):
        load_cases(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(GoldenFileError, match="no cases"):
        load_cases(tmp_path / "empty.jsonl")


def test_case_to_json_is_stable_one_line_and_round_trips(tmp_path):
    obj = {
        "x_extra": {"b": 1},
        "tags": ["t"],
        "grader": {"values": ["a"], "type": "contains", "mode": "any"},
        "expected": "é",
        "input": "line1\nline2",
        "id": "c1",
    }
    case = cases.parse_case(obj)
    line = cases.case_to_json(case)
    assert "\n" not in line
    assert list(json.loads(line)) == ["id", "input", "expected", "grader", "tags", "x_extra"]
    assert list(json.loads(line)["grader"]) == ["type", "mode", "values"]
    assert "é" in line
    again = cases.parse_case(json.loads(line))
    assert cases.case_to_json(again) == line
    path = tmp_path / "out.jsonl"
    cases.write_cases(path, [case])
    assert [c.id for c in load_cases(path)] == ["c1"]


def test_golden_version_ignores_formatting_and_order_but_not_content(tmp_path):
    a = {"id": "a", "input": "q1", "expected": "x", "grader": "exact"}
    b = {"id": "b", "input": "q2", "expected": "y", "grader": {"type": "exact"}}
    v1 = cases.golden_version(write(tmp_path, [a, b], "1.jsonl"))
    p2 = tmp_path / "2.jsonl"
    p2.write_text(json.dumps(b, indent=None, separators=(",", ":")) + "\n\n" + json.dumps(a) + "\n")
    assert cases.golden_version(p2) == v1
    assert cases.golden_version(load_cases(p2)) == v1
    changed = dict(b, expected="z")
    assert cases.golden_version(write(tmp_path, [a, changed], "3.jsonl")) != v1
    assert len(v1) == 16


def test_normalise_input_folds_case_whitespace_and_unicode():
    assert cases.normalise_input("  Where IS\tmy   order? ") == "where is my order?"
    assert cases.normalise_input("ＷＨＥＲＥ is my order？") == "where is my order?"
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "  Second  QUESTION "},
    ]
    assert cases.normalise_input(msgs) == "second question"
    assert cases.normalise_input([{"role": "assistant", "content": "Only Bot"}]) == "only bot"
    assert cases.input_text(msgs) == "  Second  QUESTION "


def test_the_demo_golden_set_is_valid_and_mixes_graders():
    path = settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl"
    loaded = load_cases(path)
    assert 25 <= len(loaded) <= 40
    kinds = Counter(c.grader_type for c in loaded)
    assert set(kinds) == {"exact", "contains", "regex", "json", "numeric", "judge"}
    topics = {c.tags[0] for c in loaded}
    assert topics == {"billing", "shipping", "returns", "account", "product"}
    assert any(isinstance(c.input, list) for c in loaded)
