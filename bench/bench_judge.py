"""LLM judge throughput against the local fake OpenAI server at 200 ms per call.

Figures (all measured in this process, against the same server):
- sequential: one call at a time (concurrency 1, the naive loop). 1,000 calls would take
  ~200 s, so by default it times the first BENCH_JUDGE_SEQUENTIAL_N (50) calls and
  extrapolates; set BENCH_JUDGE_SEQUENTIAL_N=1000 to time them all.
- 1,000 judgments at the default concurrency (16) and at 32: wall time, ratio to the ideal
  n x latency / concurrency, and speed-up over sequential.
- 1,000 judgments through the scoring path (DuckDB cache) at concurrency 32 with 20% of
  calls answered 429 (Retry-After: 1): how many end ok.
- the same day scored again: judge calls made (should be 0).

Run: .venv/bin/python -m bench judge
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from eval_pipeline.core import store
from eval_pipeline.core.judge import cache as scoring
from eval_pipeline.core.judge.base import JudgeRequest
from eval_pipeline.core.judge.llm import OpenAICompatibleJudge
from eval_pipeline.core.judge.llm_config import LLMJudgeConfig
from eval_pipeline_tests.fake_openai import FakeOpenAIServer, Fault

N = 1000
LATENCY = 0.2
DAY = dt.date(2026, 1, 15)


def requests(n: int) -> list[JudgeRequest]:
    return [
        JudgeRequest(f"Question {i}: how do I change setting {i}?", f"Open Settings > {i}.")
        for i in range(n)
    ]


def make_judge(server: FakeOpenAIServer, concurrency: int | None, model: str):
    cfg = LLMJudgeConfig(base_url=server.base_url, model=model, api_key="bench-key")
    if concurrency is not None:
        cfg.concurrency = concurrency
    return OpenAICompatibleJudge(cfg)


def timed(judge, reqs) -> tuple[float, list]:
    started = time.monotonic()
    out = judge.judge_many(reqs)
    return time.monotonic() - started, out


def seed_day(db: Path, n: int) -> None:
    """A day of n sampled traces in a fresh DuckDB file, for the cached scoring path."""
    ts = pd.Timestamp(DAY.isoformat())
    reqs = requests(n)
    raw = pd.DataFrame(
        {
            "partition_date": DAY,
            "trace_id": [f"t{i:05d}" for i in range(n)],
            "ts": ts,
            "user_query": [r.query for r in reqs],
            "assistant_response": [r.response for r in reqs],
            "segment": "bench",
            "source": "bench",
        }
    )
    sampled = pd.DataFrame(
        {
            "partition_date": DAY,
            "trace_id": raw["trace_id"],
            "segment": "bench",
            "stratum_size": n,
            "stratum_sample": n,
        }
    )
    with store.connect(db) as conn:
        cols = ", ".join(raw.columns)
        conn.register("_raw", raw)
        conn.execute(f"INSERT INTO raw_traces ({cols}) SELECT {cols} FROM _raw")
        conn.register("_sampled", sampled)
        conn.execute("INSERT INTO sampled_traces SELECT * FROM _sampled")


def main() -> None:
    seq_n = int(os.environ.get("BENCH_JUDGE_SEQUENTIAL_N", "50"))
    with FakeOpenAIServer(latency=LATENCY) as server, tempfile.TemporaryDirectory() as tmp:
        reqs = requests(N)
        print(f"LLM judge, {N} judgments, fake server latency {LATENCY * 1000:.0f} ms per call")

        seq_time, seq_out = timed(make_judge(server, 1, "bench-seq"), reqs[:seq_n])
        per_call = seq_time / seq_n
        seq_1000 = per_call * N
        label = "measured" if seq_n == N else f"extrapolated from {seq_n} calls"
        print(
            f"  sequential (concurrency 1): {seq_1000:7.1f} s for {N} ({label}; "
            f"{per_call * 1000:.0f} ms per call, ideal {LATENCY * 1000:.0f} ms)"
        )
        assert all(j.state == "ok" for j in seq_out)

        rows = []
        for concurrency, model in ((None, "bench-default"), (32, "bench-c32")):
            judge = make_judge(server, concurrency, model)
            c = judge.config.concurrency
            server.reset()
            wall, out = timed(judge, reqs)
            ok = sum(j.state == "ok" for j in out)
            ideal = N * LATENCY / c
            rows.append((c, wall))
            print(
                f"  concurrency {c:>2}{' (default)' if concurrency is None else '          '}: "
                f"{wall:6.2f} s, ideal {ideal:5.2f} s, ratio to ideal {wall / ideal:4.2f}x, "
                f"{seq_1000 / wall:5.1f}x faster than sequential; {ok}/{N} ok, "
                f"max in flight {server.max_in_flight}, "
                f"{len({r.client for r in server.chat_requests})} connections"
            )

        # 20% of calls answered 429 Retry-After: 1, through the cached scoring path.
        db = Path(tmp) / "bench.duckdb"
        seed_day(db, N)
        server.reset()
        server.add_random_fault(Fault.status(429, retry_after=1), fraction=0.2, seed=42)
        judge = make_judge(server, 32, "bench-429")
        with store.connect(db) as conn:
            started = time.monotonic()
            res = scoring.score_day(conn, judge, DAY)
            wall = time.monotonic() - started
        r429 = sum(r.fault == "status:429" for r in server.chat_requests)
        print(
            f"  20% answered 429 (Retry-After: 1), concurrency 32: {res.states['ok']}/{res.n} ok, "
            f"{res.states['error']} error, {res.states['unparseable']} unparseable; "
            f"{server.calls} calls ({r429} were 429), {wall:.2f} s"
        )

        # The same day again: everything comes from the judgments cache.
        before = server.calls
        with store.connect(db) as conn:
            started = time.monotonic()
            again = scoring.score_day(conn, judge, DAY)
            wall = time.monotonic() - started
        print(
            f"  re-run of the same day: {again.judge_calls} judge calls, "
            f"{server.calls - before} HTTP calls, {again.cache_hits}/{again.n} from cache, "
            f"{wall:.2f} s"
        )
        c32 = dict(rows)[32]
        print(
            f"  aim: concurrency 32 within 1.25x of ideal -> "
            f"{c32 / (N * LATENCY / 32):.2f}x; >= 20x faster than sequential -> "
            f"{seq_1000 / c32:.1f}x"
        )


if __name__ == "__main__":
    main()
