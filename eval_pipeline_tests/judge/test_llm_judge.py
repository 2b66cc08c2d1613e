"""The LLM judge against a real HTTP server on 127.0.0.1 (the fake OpenAI server): every
fault ends in the right state with the right reason, and the throughput machinery works."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from eval_pipeline.core.judge.base import JudgeRequest
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline.core.judge.llm import OpenAICompatibleJudge
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline.core.judge.llm_parse import InvalidJudgment, parse_judgment
from eval_pipeline_tests.fake_openai import Fault, fake_openai  # noqa: F401

SECRET = "sk-test-0123456789abcdef"
REQ = JudgeRequest("How do I reset my password?", "Open Settings > Security > Reset.")


class Recorder:
    """Stands in for asyncio.sleep: records the back-off waits, waits only briefly."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def make_judge(server, sleeper=None, **overrides) -> OpenAICompatibleJudge:
    cfg = dict(
        base_url=server.base_url,
        model="judge-model",
        api_key=SECRET,
        concurrency=4,
        read_timeout=5.0,
        max_retries=3,
    )
    cfg.update(overrides)
    return OpenAICompatibleJudge(LLMJudgeConfig(**cfg), sleep=sleeper or Recorder())


def judge_one(judge, req=REQ):
    [judgment] = judge.judge_many([req])
    return judgment


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "score", "reason"),
    [
        ('{"score": 5, "reason": "great"}', 5, "great"),
        ('```json\n{"score": 2, "reason": "vague"}\n```', 2, "vague"),
        ('Sure! Here it is: {"score": 3, "reason": "ok"} Hope that helps.', 3, "ok"),
        ('{"note": "x"} then {"score": 1, "reason": "bad"}', 1, "bad"),
        ('{"score": 4.0, "reason": "fine"}', 4, "fine"),
        ('{"score": 4}', 4, "(the judge gave no reason)"),
    ],
)
def test_parse_judgment_is_tolerant_about_where_the_object_is(text, score, reason):
    assert parse_judgment(text) == (score, reason)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"score": 7, "reason": "x"}', "score 7 is outside 1-5"),
        ('{"score": 0, "reason": "x"}', "score 0 is outside 1-5"),
        ('{"score": "4", "reason": "x"}', "score must be an integer 1-5, got '4'"),
        ('{"score": 4.5, "reason": "x"}', "got 4.5"),
        ('{"score": true, "reason": "x"}', "got True"),
        ('{"rating": 4}', 'no "score" field'),
        ("I would rate this a 4 out of 5.", "no JSON object"),
        ("", "empty answer"),
        (None, "empty answer"),
    ],
)
def test_parse_judgment_never_coerces_a_bad_answer_to_a_score(text, problem):
    with pytest.raises(InvalidJudgment, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_judgment(text)


# --- faults end in the right state -----------------------------------------------------------


def test_ok_judgment_records_tokens_latency_attempts_and_sends_the_key(fake_openai):  # noqa: F811
    judgment = judge_one(make_judge(fake_openai))
    assert (judgment.state, judgment.score) == ("ok", 4)
    assert judgment.attempts == 1
    assert judgment.prompt_tokens > 50 and judgment.completion_tokens > 0
    assert judgment.latency_ms is not None and judgment.latency_ms >= 0
    sent = fake_openai.requests[0]
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.json["model"] == "judge-model"
    assert sent.json["response_format"]["type"] == "json_schema"
    user = sent.json["messages"][1]["content"]
    fence = re.search(r"<<<BEGIN USER QUESTION (\w+)>>>\n(.*)\n<<<END USER QUESTION \1>>>", user)
    assert fence and fence.group(2) == "How do I reset my password?"


def test_429_with_retry_after_is_retried_after_at_least_that_long(fake_openai):  # noqa: F811
    sleeper = Recorder()
    fake_openai.script(Fault.status(429, retry_after=1), "ok")
    judgment = judge_one(make_judge(fake_openai, sleeper))
    assert (judgment.state, judgment.attempts) == ("ok", 2)
    assert len(sleeper.waits) == 1 and sleeper.waits[0] >= 1.0


def test_429_until_the_budget_is_spent_is_an_error_with_the_reason(fake_openai):  # noqa: F811
    fake_openai.add_random_fault(Fault.status(429, retry_after=1), fraction=1.0)
    judgment = judge_one(make_judge(fake_openai, max_retries=2))
    assert judgment.state == "error" and judgment.score is None
    assert judgment.reason.startswith("rate_limited: HTTP 429, Retry-After 1s")
    assert "gave up after 3 attempt(s)" in judgment.reason
    assert judgment.attempts == 3 == fake_openai.calls


def test_5xx_are_retried_with_exponential_backoff(fake_openai):  # noqa: F811
    sleeper = Recorder()
    fake_openai.script(Fault.status(500), Fault.status(503), "ok")
    judge = make_judge(fake_openai, sleeper, backoff_base=1.0)
    judgment = judge_one(judge)
    assert (judgment.state, judgment.attempts) == ("ok", 3)
    # Full jitter: the n-th wait is drawn from [0, base * 2**(n-1)].
    assert 0 <= sleeper.waits[0] <= 1.0 and 0 <= sleeper.waits[1] <= 2.0


def test_persistent_503_ends_as_error(fake_openai):  # noqa: F811
    fake_openai.add_random_fault(Fault.status(503), fraction=1.0)
    judgment = judge_one(make_judge(fake_openai, max_retries=1))
    assert judgment.state == "error"
    assert judgment.reason.startswith("server_error: HTTP 503")


def test_a_hang_past_the_read_timeout_is_retried_then_an_error(fake_openai):  # noqa: F811
    fake_openai.script(Fault.hang(30), "ok")
    judgment = judge_one(make_judge(fake_openai, read_timeout=1.0, max_retries=1))
    assert (judgment.state, judgment.attempts) == ("ok", 2)
    fake_openai.script(Fault.hang(30), Fault.hang(30))
    judgment = judge_one(make_judge(fake_openai, read_timeout=1.0, max_retries=1))
    assert judgment.state == "error"
    assert judgment.reason.startswith("timeout: ReadTimeout")
    assert judgment.attempts == 2


def test_the_overall_deadline_stops_a_judgment_that_would_hang(fake_openai):  # noqa: F811
    fake_openai.script(Fault.hang(30))
    judgment = judge_one(make_judge(fake_openai, read_timeout=20, deadline=0.5))
    assert judgment.state == "error"
    assert judgment.reason.startswith("deadline: no answer within 0.5s after 1 attempt(s)")


def test_a_retry_that_would_pass_the_deadline_is_not_waited_for(fake_openai):  # noqa: F811
    fake_openai.script(Fault.status(429, retry_after=30))
    judgment = judge_one(make_judge(fake_openai, deadline=5))
    assert judgment.state == "error"
    assert judgment.reason.startswith("rate_limited: HTTP 429, Retry-After 30s")
    assert "would pass the 5s deadline" in judgment.reason


def test_non_json_body_is_an_error_with_an_excerpt(fake_openai):  # noqa: F811
    fake_openai.add_random_fault(Fault.body("<html>Bad gateway</html>"), fraction=1.0)
    judgment = judge_one(make_judge(fake_openai, max_retries=1))
    assert judgment.state == "error"
    assert judgment.reason.startswith("bad_response: HTTP 200 body is not JSON: '<html>Bad")


def test_json_without_choices_is_an_error(fake_openai):  # noqa: F811
    fake_openai.add_random_fault(Fault.json({"object": "error", "detail": "x"}), fraction=1.0)
    judgment = judge_one(make_judge(fake_openai, max_retries=0))
    assert judgment.state == "error"
    assert "bad_response: no choices[0].message.content" in judgment.reason
    assert judgment.attempts == 1


def test_a_dropped_connection_is_retried(fake_openai):  # noqa: F811
    fake_openai.script(Fault.drop(), "ok")
    judgment = judge_one(make_judge(fake_openai))
    assert (judgment.state, judgment.attempts) == ("ok", 2)


def test_nothing_listening_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = LLMJudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1)
    judgment = judge_one(OpenAICompatibleJudge(config, sleep=Recorder()))
    assert judgment.state == "error"
    assert judgment.reason.startswith("connection: ConnectError")


def test_401_is_not_retried_and_the_echoed_key_is_scrubbed(fake_openai):  # noqa: F811
    body = {"error": {"message": f"Incorrect API key provided: {SECRET}", "code": 401}}
    fake_openai.script(Fault.status(401, body=body))
    judge = make_judge(fake_openai)
    judgment = judge_one(judge)
    assert judgment.state == "error" and judgment.attempts == 1
    assert judgment.reason.startswith("http_error: HTTP 401: Incorrect API key provided")
    assert SECRET not in judgment.reason and "[redacted]" in judgment.reason
    assert SECRET not in repr(judge) and SECRET not in repr(judge.config)


def test_an_out_of_range_score_gets_one_repair_turn(fake_openai):  # noqa: F811
    fake_openai.script(Fault.content('{"score": 7, "reason": "superb"}'), "ok")
    judgment = judge_one(make_judge(fake_openai))
    assert (judgment.state, judgment.score, judgment.attempts) == ("ok", 4, 2)
    repair = fake_openai.requests[1].json["messages"]
    assert repair[2] == {"role": "assistant", "content": '{"score": 7, "reason": "superb"}'}
    assert "score 7 is outside 1-5" in repair[3]["content"]
    assert '{"score": 7' in judgment.raw_output


def test_still_invalid_after_the_repair_is_unparseable_with_raw_text(fake_openai):  # noqa: F811
    fake_openai.script(Fault.content('{"score": 9, "reason": "x"}'), Fault.content("I'd say four."))
    judgment = judge_one(make_judge(fake_openai))
    assert judgment.state == "unparseable" and judgment.score is None
    assert judgment.reason == (
        "invalid_output: score 9 is outside 1-5; after one repair attempt: "
        "no JSON object in the answer"
    )
    assert '{"score": 9' in judgment.raw_output and "I'd say four." in judgment.raw_output
    assert judgment.prompt_tokens > 0 and judgment.attempts == 2


def test_prose_around_the_json_is_accepted_without_a_repair(fake_openai):  # noqa: F811
    fake_openai.script(Fault.content('Here you go:\n{"score": 2, "reason": "vague"}\nThanks!'))
    judgment = judge_one(make_judge(fake_openai))
    assert (judgment.state, judgment.score, judgment.reason) == ("ok", 2, "vague")
    assert fake_openai.calls == 1


def test_a_failed_repair_call_is_an_error_not_a_score(fake_openai):  # noqa: F811
    fake_openai.script(Fault.content("no idea"), Fault.status(503))
    judgment = judge_one(make_judge(fake_openai, max_retries=0))
    assert judgment.state == "error"
    assert judgment.reason.endswith("(during the repair turn)")
    assert judgment.raw_output == "no idea"


# --- structured output ---------------------------------------------------------------------


def test_rejected_response_format_falls_back_and_is_remembered(fake_openai):  # noqa: F811
    fake_openai.reject_response_format = True
    judge = make_judge(fake_openai, max_retries=0)
    assert judge_one(judge).state == "ok"
    kinds = [(r.json.get("response_format") or {}).get("type") for r in fake_openai.requests]
    assert kinds == ["json_schema", "json_object", None]
    assert judge.response_format == "none"
    fake_openai.requests.clear()
    results = judge.judge_many([REQ] * 5)
    assert all(j.state == "ok" for j in results)
    assert all("response_format" not in r.json for r in fake_openai.requests)
    assert fake_openai.calls == 5


def test_json_schema_rejected_with_a_500_naming_it_steps_down_to_json_object(fake_openai):  # noqa: F811
    # What llama-cpp-python's server does with {"type": "json_schema"}.
    error = {"error": {"message": "validation error: ('body', 'response_format', 'type')"}}
    fake_openai.script(Fault.status(500, body=error))
    judge = make_judge(fake_openai, max_retries=0)
    judgment = judge_one(judge)
    assert (judgment.state, judge.response_format) == ("ok", "json_object")
    assert fake_openai.requests[1].json["response_format"]["schema"]["required"] == [
        "score",
        "reason",
    ]


def test_structured_output_can_be_switched_off(fake_openai):  # noqa: F811
    judge_one(make_judge(fake_openai, structured_output=False))
    assert "response_format" not in fake_openai.requests[0].json


# --- throughput --------------------------------------------------------------------------------


def test_concurrency_is_bounded_and_connections_are_reused(fake_openai):  # noqa: F811
    fake_openai.latency = 0.05
    requests = [JudgeRequest(f"question {i}", f"answer {i}") for i in range(40)]
    judgments = make_judge(fake_openai, concurrency=4).judge_many(requests)
    assert [j.state for j in judgments] == ["ok"] * 40
    assert fake_openai.max_in_flight <= 4
    ports = {r.client for r in fake_openai.chat_requests}
    assert 1 <= len(ports) <= 4  # one pool: at most one connection per slot


def test_results_come_back_in_request_order_with_progress(fake_openai):  # noqa: F811
    def responder(body):
        user = body["messages"][1]["content"]
        score = int(user.split("question ")[1][0]) % 5 + 1
        return f'{{"score": {score}, "reason": "r"}}'

    fake_openai.responder = responder
    seen = []
    requests = [JudgeRequest(f"question {i}", "a") for i in range(10)]
    judgments = make_judge(fake_openai).judge_many(requests, progress=lambda i, n: seen.append(i))
    assert [j.score for j in judgments] == [i % 5 + 1 for i in range(10)]
    assert seen[-1] == 10


def test_judge_many_works_inside_a_running_event_loop(fake_openai):  # noqa: F811
    judge = make_judge(fake_openai)

    async def caller():
        return judge.judge_many([REQ, REQ])

    assert [j.state for j in asyncio.run(caller())] == ["ok", "ok"]


# --- configuration ---------------------------------------------------------------------------


def test_judge_from_env_builds_the_openai_judge(fake_openai):  # noqa: F811
    judge = judge_from_env(
        {
            "EVAL_JUDGE": "openai",
            "EVAL_JUDGE_BASE_URL": fake_openai.base_url,
            "EVAL_JUDGE_MODEL": "m1",
            "EVAL_JUDGE_API_KEY": SECRET,
            "EVAL_JUDGE_CONCURRENCY": "8",
            "EVAL_JUDGE_READ_TIMEOUT": "2.5",
            "EVAL_JUDGE_BACKOFF_BASE": "0.1",
            "EVAL_JUDGE_STRUCTURED_OUTPUT": "false",
            "EVAL_JUDGE_PRICE_PROMPT_PER_1K": "0.5",
            "EVAL_JUDGE_PRICE_COMPLETION_PER_1K": "1.5",
        }
    )
    assert isinstance(judge, OpenAICompatibleJudge)
    assert (judge.name, judge.model) == ("openai", "m1")
    assert judge.config.concurrency == 8 and judge.config.read_timeout == 2.5
    assert judge.config.backoff_base == 0.1
    assert judge.response_format == "none"
    assert judge.cost_estimate(2000, 1000) == pytest.approx(2.5)
    assert judge.rubric_version.startswith("quality-v1#")
    assert judge_one(judge).state == "ok"
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EVAL_JUDGE_MODEL": "m"}, "EVAL_JUDGE_BASE_URL"),
        ({"EVAL_JUDGE_BASE_URL": "http://127.0.0.1:1/v1"}, "EVAL_JUDGE_MODEL"),
        (
            {
                "EVAL_JUDGE_BASE_URL": "http://x/v1",
                "EVAL_JUDGE_MODEL": "m",
                "EVAL_JUDGE_CONCURRENCY": "many",
            },
            "EVAL_JUDGE_CONCURRENCY='many'",
        ),
        (
            {
                "EVAL_JUDGE_BASE_URL": "http://x/v1",
                "EVAL_JUDGE_MODEL": "m",
                "EVAL_JUDGE_CONCURRENCY": "0",
            },
            "concurrency must be >= 1",
        ),
        (
            {
                "EVAL_JUDGE_BASE_URL": "http://x/v1",
                "EVAL_JUDGE_MODEL": "m",
                "EVAL_JUDGE_RUBRIC": "nope",
            },
            "no rubric 'nope'",
        ),
    ],
)
def test_bad_configuration_fails_clearly(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        judge_from_env({"EVAL_JUDGE": "openai", **env})


def test_no_price_means_no_cost_estimate(fake_openai):  # noqa: F811
    assert make_judge(fake_openai).cost_estimate(1000, 1000) is None
