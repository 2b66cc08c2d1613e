"""The A/B pairwise option with the LLM judge: it reads both answers side by side, in both
orders, over real HTTP; a position-biased judge shows up as inconsistent verdicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from eval_pipeline.core.ab.run import ABSpec, compare_variants
from eval_pipeline.core.ab.variants import variants_from_prompts
from eval_pipeline.core.judge.base import PairRequest
from eval_pipeline.core.judge.llm import OpenAICompatibleJudge
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline.core.judge.llm_parse import parse_pick
from eval_pipeline.core.regression import cases
from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "eval_pipeline" / "demo" / "app" / "prompt_good.txt"
REGRESSED = ROOT / "eval_pipeline" / "demo" / "app" / "prompt_regressed.txt"
REFUSAL = re.compile(r"sorry|can't help|cannot help|unable", re.IGNORECASE)


def _fenced(text: str, label: str) -> str:
    found = re.search(rf"<<<BEGIN {label} (\w+)>>>\n(.*?)\n<<<END {label} \1>>>", text, re.S)
    assert found, f"no {label} fence in the prompt"
    return found.group(2)


def fair_responder(body: dict) -> str:
    """A judge that prefers the answer that does not refuse, whatever its position."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "You compare TWO answers" not in system:
        return json.dumps({"score": 4, "reason": "fine"})
    first, second = _fenced(user, "FIRST ANSWER"), _fenced(user, "SECOND ANSWER")
    bad_first, bad_second = bool(REFUSAL.search(first)), bool(REFUSAL.search(second))
    winner = "tie" if bad_first == bad_second else ("second" if bad_first else "first")
    return json.dumps({"winner": winner, "reason": "the other one refuses"})


def judge_for(server: FakeOpenAIServer, **config) -> OpenAICompatibleJudge:
    return OpenAICompatibleJudge(
        LLMJudgeConfig(base_url=server.base_url, model="fake-judge", backoff_base=0.01, **config)
    )


def billing_cases(tmp_path: Path) -> list[cases.Case]:
    rows = [
        {"id": f"c{i}", "input": q, "expected": None, "grader": "judge"}
        for i, q in enumerate(
            [
                "Why was I charged twice for my order?",
                "How do I get a refund for my subscription?",
                "Can I get an invoice for March?",
                "Where is my package?",
                "How do I reset my password?",
                "What does the charge on my card mean?",
            ]
        )
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return cases.load_cases(path)


def test_the_llm_judge_compares_both_orders_over_http(tmp_path):
    with FakeOpenAIServer() as server:
        server.responder = fair_responder
        variants = variants_from_prompts("eval_pipeline.demo.app:answer", [GOOD, REGRESSED])
        res = compare_variants(
            billing_cases(tmp_path), variants, judge_for(server), ABSpec(pairwise=True)
        )
        pairwise_bodies = [
            r.json for r in server.requests if "You compare TWO" in r.json["messages"][0]["content"]
        ]
    w = res.reports[0].pairwise
    assert res.pairwise_judge == "openai:fake-judge (pairwise-v2)"
    assert w.n_valid == 6 and w.n_failed == 0
    assert len(pairwise_bodies) == 12  # every case asked in both orders
    assert w.inconsistent == 0 and w.consistency_rate == 1.0
    assert w.wins_a > 0 and w.wins_b == 0  # the regressed prompt refuses billing questions
    # The untrusted answers are fenced, and structured output asks for the verdict schema.
    user = pairwise_bodies[0]["messages"][-1]["content"]
    assert _fenced(user, "FIRST ANSWER") and _fenced(user, "SECOND ANSWER")
    assert pairwise_bodies[0]["response_format"]["json_schema"]["name"] == "pairwise_verdict"


def test_a_position_biased_judge_is_inconsistent_not_a_winner(tmp_path):
    with FakeOpenAIServer() as server:
        server.responder = lambda body: (
            json.dumps({"winner": "first", "reason": "the first one"})
            if "You compare TWO" in body["messages"][0]["content"]
            else json.dumps({"score": 4, "reason": "fine"})
        )
        variants = variants_from_prompts("eval_pipeline.demo.app:answer", [GOOD, REGRESSED])
        res = compare_variants(
            billing_cases(tmp_path), variants, judge_for(server), ABSpec(pairwise=True)
        )
    w = res.reports[0].pairwise
    assert w.inconsistent == w.n_valid == 6
    assert w.consistency_rate == 0.0 and w.ties == 6 and w.wins_a == w.wins_b == 0


def test_failed_and_unparseable_comparisons_are_picks_of_none(tmp_path):
    with FakeOpenAIServer() as server:
        judge = judge_for(server, max_retries=2)
        server.script(Fault.content("I like the first one better."), Fault.content("no idea"))
        [unparseable] = judge.compare_many([PairRequest("q", "a", "b")])
        server.script(Fault.status(503), Fault.status(503), Fault.status(503))
        [failed] = judge.compare_many([PairRequest("q", "a", "b")])
    assert unparseable.pick is None and unparseable.reason.startswith("invalid_output:")
    assert failed.pick is None and failed.reason.startswith("server_error: HTTP 503")


def test_parse_pick_is_tolerant_about_where_and_strict_about_what():
    assert parse_pick('Sure! ```json\n{"winner": "Second", "reason": "clearer"}\n```') == (
        "second",
        "clearer",
    )
    for bad in ('{"winner": "both"}', '{"score": 3}', "first"):
        try:
            parse_pick(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
