"""Regression gate throughput: 500 golden cases against the local fake OpenAI endpoint at
200 ms latency per call, sequential (concurrency 1) vs the default concurrency.

Sequential at 200 ms is ~100 s for 500 cases, too long for the default bench run, so by
default the sequential baseline is measured on the first 50 cases and its per-case time
scaled to 500 (it is linear: one call after another). BENCH_REGRESS_FULL=1 measures the
full 500 sequentially too. Both runs go through the same code as `eval-pipeline regress`
(load + validate the file, HTTP runner, graders).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from eval_pipeline.core.regression import cases, runners
from eval_pipeline.core.regression import gate as regression
from eval_pipeline_tests.fake_openai import FakeOpenAIServer

N_CASES = 500
LATENCY = 0.2
SEQUENTIAL_SAMPLE = 50


def _golden(folder: Path) -> Path:
    path = folder / "bench_golden.jsonl"
    with path.open("w") as fh:
        for i in range(N_CASES):
            case = {
                "id": f"b{i:03d}",
                "input": f"question {i}",
                "expected": f"answer {i}",
                "grader": "contains",
            }
            fh.write(json.dumps(case) + "\n")
    return path


def _run(server: FakeOpenAIServer, golden: list, concurrency: int) -> tuple[float, float]:
    runner = runners.HttpChatRunner(server.base_url, "bench", concurrency=concurrency)
    start = time.perf_counter()
    run = regression.execute(golden, runner, golden_version="bench")
    elapsed = time.perf_counter() - start
    if run.passed != len(golden):
        raise RuntimeError(f"bench run was not clean: {run.failed} failed, {run.errors} errors")
    return elapsed, run.pass_rate


def main() -> None:
    full = os.environ.get("BENCH_REGRESS_FULL") == "1"
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(latency=LATENCY) as server:
        server.responder = lambda body: "answer " + body["messages"][-1]["content"].split()[-1]
        golden = cases.load_cases(_golden(Path(tmp)))
        conc = runners.DEFAULT_CONCURRENCY
        t_conc, _ = _run(server, golden, conc)
        sample = golden if full else golden[:SEQUENTIAL_SAMPLE]
        t_seq_sample, _ = _run(server, sample, 1)
        t_seq = t_seq_sample * len(golden) / len(sample)
    how = "measured" if full else f"measured on {len(sample)} cases, scaled to {N_CASES}"
    print(f"regress: {N_CASES} cases, fake endpoint latency {LATENCY * 1000:.0f} ms per call")
    print(f"  sequential (concurrency 1): {t_seq:7.1f} s  ({how})")
    print(f"  default concurrency {conc}:    {t_conc:7.1f} s  (measured)")
    print(f"  speed-up: {t_seq / t_conc:.1f}x  (ideal {conc}x)")


if __name__ == "__main__":
    main()
