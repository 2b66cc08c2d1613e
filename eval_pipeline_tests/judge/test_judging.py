from __future__ import annotations

import pytest

from eval_pipeline.core.judge.base import HeuristicJudge, JudgeRequest, Judgment, judgment_key

J = HeuristicJudge()


def score(q: str, a: str) -> int:
    return J.judge_one(JudgeRequest(q, a)).score


def test_heuristic_rules():
    q = "How do I update the credit card on my account?"
    good = "You can update your card under Account > Billing: click Add card, then save it."
    assert score(q, good) == 5
    assert score(q, "") == 1
    assert score(q, "I'm sorry, but I can't help with billing questions.") == 1
    assert score(q, "You can update your card under Account > Billing: click Add") == 3
    assert score(q, "The weather today is lovely and sunny across the whole region.") <= 2
    assert score(q, "Update the card in Account settings.") == 3  # short, no next step


def test_unicode_and_whitespace_do_not_break_the_judge():
    j = J.judge_many([JudgeRequest("¿Dónde está mi pedido?", "   \n\t "), JudgeRequest("", "✓.")])
    assert [x.state for x in j] == ["ok", "ok"]


def test_judgment_states_are_exclusive():
    with pytest.raises(ValueError):
        Judgment("ok", None, "no score")
    with pytest.raises(ValueError):
        Judgment("error", 3, "score on an error")
    with pytest.raises(ValueError):
        Judgment("ok", 6, "out of range")


def test_judgment_key_changes_with_every_part():
    base = judgment_key(J, JudgeRequest("q", "a"))
    assert base == judgment_key(HeuristicJudge(), JudgeRequest("q", "a"))
    assert base != judgment_key(J, JudgeRequest("q", "a", reference="r"))
    assert base != judgment_key(
        HeuristicJudge(rubric_version="heuristic-v3"), JudgeRequest("q", "a")
    )
    # Field boundaries are length-prefixed, so moving text between fields changes the key.
    assert judgment_key(J, JudgeRequest("qa", "")) != judgment_key(J, JudgeRequest("q", "a"))


def test_quoted_words_still_count_as_shared_words():
    q = "Where do I click 'Reset password'?"
    a = "Open the login page and click 'Reset password', then follow the emailed link."
    assert score(q, a) == 5
