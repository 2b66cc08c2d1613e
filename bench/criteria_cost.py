"""What judging several criteria costs in each mode, measured on the local fake OpenAI server.

For N traces carrying every input (reference, retrieved context, conversation, tool calls)
and two criteria sets (the three that need only the question and answer, and all seven
bundled ones), it judges once per criterion (``per-criterion``) and once per trace
(``one-call``) and prints HTTP requests, prompt and completion tokens and wall time at
200 ms per call and concurrency 16. The fake server counts a token per 4 characters, so
token figures are relative sizes of the prompts, not any tokenizer's counts; its replies
are short fixed judgments, as a model's would be with a one-sentence reason.

Run: .venv/bin/python -m bench.criteria_cost
"""

from __future__ import annotations

import os
import time

from eval_pipeline.core.judge.llm import OpenAICompatibleJudge
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline_tests.fake_openai import FakeOpenAIServer
from eval_pipeline_tests.judge.criteria_fixtures import RichRequest, responder

N = int(os.environ.get("BENCH_CRITERIA_N", "100"))
SETS = {
    "3 criteria (quality, relevance, safety)": "quality,relevance,safety",
    "all 7 bundled": "quality,correctness,groundedness,relevance,safety,instructions,tool_use",
}


def traces(n: int) -> list[RichRequest]:
    return [
        RichRequest(
            query=f"How do I change notification setting {i}? Keep it short.",
            response=f"Open Settings > Notifications, pick setting {i} and switch it off.",
            reference=f"Settings > Notifications > setting {i}: toggle off.",
            context=[
                {
                    "text": f"Help article {i}: notification settings live under Settings > "
                    "Notifications; each can be switched on or off."
                }
            ],
            conversation=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
            ],
            tool_calls=[
                {
                    "name": "search_help",
                    "arguments": {"query": f"notification setting {i}"},
                    "result": "Settings > Notifications",
                }
            ],
        )
        for i in range(n)
    ]


def measure(server: FakeOpenAIServer, criteria: str, mode: str) -> dict:
    server.reset()
    server.responder = responder(4)
    judge = OpenAICompatibleJudge(
        LLMJudgeConfig(
            base_url=server.base_url,
            model="fake-model",
            criteria=criteria,
            criteria_mode=mode,
            concurrency=16,
        )
    )
    names = tuple(c.name for c in judge.criteria)
    started = time.monotonic()
    got = judge.judge_criteria([(t, names) for t in traces(N)])
    wall = time.monotonic() - started
    judgments = [j for judged in got for j in judged.values()]
    assert all(j.state == "ok" for j in judgments), "the fake judge's answers must parse"
    return {
        "requests": server.calls,
        "prompt": sum(j.prompt_tokens or 0 for j in judgments),
        "completion": sum(j.completion_tokens or 0 for j in judgments),
        "wall": wall,
        "judgments": len(judgments),
    }


def main() -> None:
    print(f"{N} traces, fake server at 200 ms per call, concurrency 16")
    print(
        f"{'criteria':<42}{'mode':<15}{'requests':>9}{'prompt tok':>12}{'compl tok':>11}"
        f"{'wall s':>8}"
    )
    with FakeOpenAIServer(latency=0.2) as server:
        for label, criteria in SETS.items():
            for mode in ("per-criterion", "one-call"):
                m = measure(server, criteria, mode)
                print(
                    f"{label:<42}{mode:<15}{m['requests']:>9}{m['prompt']:>12}"
                    f"{m['completion']:>11}{m['wall']:>8.1f}"
                )


if __name__ == "__main__":
    main()
