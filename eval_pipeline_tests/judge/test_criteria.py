"""Criteria as versioned rubric files: loading, versions, applicability, bad files."""

from __future__ import annotations

import pytest

from eval_pipeline.core.judge.criteria import (
    bundled_names,
    joint_version,
    load_criteria,
    load_criterion,
    parse_criterion,
)
from eval_pipeline.core.judge.rubric import RUBRICS_DIR, RubricError, load_rubric

BUNDLED = {
    "quality",
    "correctness",
    "groundedness",
    "relevance",
    "safety",
    "instructions",
    "tool_use",
}


def test_every_bundled_criterion_loads_with_its_inputs():
    assert set(bundled_names()) == BUNDLED
    by_name = {c.name: c for c in load_criteria(",".join(sorted(BUNDLED)))}
    assert by_name["correctness"].needs == ("query", "response", "reference")
    assert by_name["groundedness"].needs == ("query", "response", "context")
    assert by_name["tool_use"].needs == ("query", "response", "tool_calls")
    assert by_name["safety"].needs == ("response",)
    assert by_name["instructions"].uses == ("conversation",)
    for c in by_name.values():
        assert c.version.startswith(f"{c.name}-v1#")
        assert (c.scale_min, c.scale_max) == (1, 5)
        assert c.criterion_text


def test_quality_keeps_the_rubric_version_so_cached_judgments_stay_valid():
    assert load_criterion("quality").version == load_rubric().version == "quality-v1#cb0b6046"
    assert load_criteria() == (load_criterion("quality"),)


def test_applicability_follows_needs():
    grounded = load_criterion("groundedness")
    assert not grounded.applies_to({"query": "q", "response": "a"})
    assert not grounded.applies_to({"query": "q", "response": "a", "context": "  "})
    # A part is its stored JSON list: an empty list (nothing retrieved) is not applicable.
    assert not grounded.applies_to({"query": "q", "response": "a", "context": "[]"})
    assert not grounded.applies_to({"query": "q", "response": "a", "context": "doc"})
    doc = '[{"id": null, "text": "doc", "score": null}]'
    assert grounded.applies_to({"query": "q", "response": "", "context": doc})
    assert load_criterion("safety").applies_to({"response": "a"})
    assert load_criterion("quality").applies_to({"query": "", "response": ""})


def _text(**over):
    meta = {
        "name": "tone",
        "version": "tone-v1",
        "scale": "1-5",
        "bad_at_or_below": "2",
        "needs": "query, response",
    }
    meta.update(over)
    front = "\n".join(f"{k}: {v}" for k, v in meta.items() if v is not None)
    body = (
        "[criterion]\n5 = polite\n1 = rude\n\n[system]\nRate tone. Reply JSON.\n\n"
        "[user]\n{{query}}\n\n{{response}}\n"
    )
    return f"---\n{front}\n---\n{body}"


def test_a_user_criterion_file_by_path(tmp_path):
    path = tmp_path / "tone.md"
    path.write_text(_text(), encoding="utf-8")
    (c,) = load_criteria(f"{path}")
    assert c.name == "tone" and c.version.startswith("tone-v1#")
    msgs = c.rubric.render({"query": "hi", "response": "go away"}, "N")
    assert "<<<BEGIN USER QUESTION N>>>\nhi\n<<<END USER QUESTION N>>>" in msgs[1]["content"]


def test_the_version_covers_prompt_and_scale_but_not_threshold_or_summary():
    base = parse_criterion(_text(), "t")
    assert parse_criterion(_text(bad_at_or_below="1"), "t").version == base.version
    assert parse_criterion(_text(summary="anything"), "t").version == base.version
    assert parse_criterion(_text(scale="1-3", bad_at_or_below="1"), "t").version != base.version
    edited = _text().replace("Rate tone.", "Rate the tone.")
    assert parse_criterion(edited, "t").version != base.version
    assert joint_version(base) != base.version


@pytest.mark.parametrize(
    ("over", "problem"),
    [
        ({"name": "Bad Name"}, "name must match"),
        ({"version": None}, "no version"),
        ({"scale": "0-10"}, "1 <= min < max <= 5"),
        ({"bad_at_or_below": "5"}, "bad_at_or_below < max"),
        ({"scale": "x"}, "scale is 'min-max'"),
        ({"needs": "query, context"}, "needs the response"),
        ({"needs": "query, response, weather"}, "unknown input"),
        ({"needs": "query, response, context"}, r"no \[context\] section"),
        ({"colour": "blue"}, "unknown front matter"),
    ],
)
def test_bad_criterion_files_are_refused_with_a_reason(over, problem):
    with pytest.raises(RubricError, match=problem):
        parse_criterion(_text(**over), "t")


def test_missing_front_matter_criterion_section_and_unknown_names():
    with pytest.raises(RubricError, match="no front matter"):
        parse_criterion("[criterion]\nx\n", "t")
    with pytest.raises(RubricError, match=r"no \[criterion\] section"):
        parse_criterion(_text().replace("[criterion]\n5 = polite\n1 = rude\n", ""), "t")
    with pytest.raises(RubricError, match="no criterion 'nope'"):
        load_criteria("quality, nope")
    with pytest.raises(RubricError, match="named twice"):
        load_criteria("quality,quality")
    assert (RUBRICS_DIR / "quality.md").is_file()
