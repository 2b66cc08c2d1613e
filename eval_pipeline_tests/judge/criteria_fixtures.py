"""Shared by the criteria tests: a judge over the fake OpenAI server, a responder that
answers both prompt shapes, a request with the inputs the trace-content work adds, and a
store with a sampled day."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from eval_pipeline.core import store
from eval_pipeline.core.drift.sampling import SamplingConfig, sample_day
from eval_pipeline.core.judge.base import JudgeRequest
from eval_pipeline.core.judge.llm import OpenAICompatibleJudge
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import ingest_day

DAY = dt.date(2026, 10, 5)
_NAMES = re.compile(r"on each criterion: ([a-z_, ]+)\.")


# A request carrying every part (retrieved documents, earlier turns, tool calls): parts are
# lists or their stored JSON text.
RichRequest = JudgeRequest


def one_call_names(body: dict) -> list[str]:
    """The criteria a one-call prompt asks for ([] for a per-criterion prompt)."""
    m = _NAMES.search(body["messages"][1]["content"])
    return [n.strip() for n in m.group(1).split(",")] if m else []


def responder(score: int = 4, drop: str | None = None):
    """Answers a per-criterion prompt with one score and a one-call prompt with an entry
    per criterion (``drop``: leave that criterion out)."""

    def answer(body: dict) -> str:
        names = one_call_names(body)
        if not names:
            return json.dumps({"score": score, "reason": "fine"})
        return json.dumps({n: {"score": score, "reason": f"{n} fine"} for n in names if n != drop})

    return answer


def make_judge(server, criteria: str, mode: str = "per-criterion", **kw) -> OpenAICompatibleJudge:
    config = LLMJudgeConfig(
        base_url=server.base_url,
        model="fake-model",
        criteria=criteria,
        criteria_mode=mode,
        max_retries=kw.pop("max_retries", 0),
        **kw,
    )
    return OpenAICompatibleJudge(config)


def sampled_store(tmp_path: Path, n: int = 6) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = [
        {
            "trace_id": f"t{i:03d}",
            "timestamp": "2026-10-05T10:00:00Z",
            "user_query": f"How do I reset password number {i}?",
            "assistant_response": f"Go to settings and click reset ({i}).",
            "segment": "billing" if i % 2 else "auth",
        }
        for i in range(n)
    ]
    (inbox / "2026-10-05.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    db = tmp_path / "t.duckdb"
    with store.connect(db) as conn:
        ingest_day(conn, InboxSource(inbox), DAY)
        sample_day(conn, DAY, SamplingConfig(sample_size=n))
    return db
