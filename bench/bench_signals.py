"""Signals for one day of 1,000,000 traces, as a ratio to the bare DuckDB read of the same
file measured in the same run, and the peak memory.

The day's JSONL (demo traffic reused with new ids, plus latency, tokens and cost in
``metadata``) is loaded into a store once, untimed. Then, each in its own forked child so
its peak memory (ru_maxrss) is its own: the baseline, a bare ``read_json`` of the file
into a file-backed table; and ours, ``record_day`` (every signal over every trace, written to
``trace_signals``) plus ``run_tests`` (the drift tests against the reference) on the
stored day. ``BENCH_SIGNALS_TRACES`` sets the size (a smoke test uses 10,000).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from bench.bench_ingest import bare_read, in_child
from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.signals.compute import record_day
from eval_pipeline.core.signals.detect import run_tests
from eval_pipeline.demo import traffic as demo_traffic

N_TRACES = int(os.environ.get("BENCH_SIGNALS_TRACES", 1_000_000))
DAY = dt.date(2026, 10, 5)


def bench_file(n: int) -> Path:
    path = settings.data_dir() / "bench" / "signals" / f"{DAY.isoformat()}.jsonl"
    count = path.with_suffix(".count")
    if path.exists() and count.exists() and int(count.read_text()) == n:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating {n:,} traces into {path} (once) ...", flush=True)
    pool = demo_traffic.day_traces(DAY)
    rng = random.Random(1)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            t = dict(pool[i % len(pool)])
            t["trace_id"] = f"bench-{i:08d}-{rng.getrandbits(32):08x}"
            t["metadata"] = {
                **t.get("metadata", {}),
                "latency_ms": round(rng.lognormvariate(6.8, 0.4), 1),
                "prompt_tokens": rng.randint(200, 900),
                "completion_tokens": rng.randint(20, 400),
                "cost_usd": round(rng.uniform(1e-4, 3e-3), 6),
            }
            fh.write(json.dumps(t) + "\n")
    count.write_text(str(n))
    return path


def load(path: Path, db: Path) -> int:
    """The file straight into raw_traces (setup, not timed: ingestion has its own bench)."""
    with store.connect(db) as conn:
        conn.execute(
            """
            INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, assistant_response, segment, model, prompt_version, user_id, metadata, source, source_ref)
            SELECT ?, trace_id, TIMESTAMP '2026-10-05 12:00', user_query, assistant_response,
                   segment, model, prompt_version, user_id, metadata::JSON, 'jsonl', NULL
            FROM read_json(?, format = 'newline_delimited', columns = {
                trace_id: 'VARCHAR', user_query: 'VARCHAR', assistant_response: 'VARCHAR',
                segment: 'VARCHAR', model: 'VARCHAR', prompt_version: 'VARCHAR',
                user_id: 'VARCHAR', metadata: 'JSON'})
            """,
            [DAY, str(path)],
        )
        return conn.execute("SELECT count(*) FROM raw_traces").fetchone()[0]


def signals(db: Path):
    with store.connect(db) as conn:
        res = record_day(conn, DAY)
        findings = run_tests(conn, DAY)
    return [res.n_traces, len(res.rows), len(findings)]


def main() -> None:
    path = bench_file(N_TRACES)
    print(f"input: {N_TRACES:,} traces, {path.stat().st_size / 1e6:.0f} MB of JSONL")
    tmp = Path(tempfile.mkdtemp(prefix="bench_signals_"))
    try:
        db = tmp / "s.duckdb"
        loaded = load(path, db)
        _, base_rss, bare = in_child(lambda: bare_read([str(path)], tmp / "bare.duckdb"))
        base_wall, rows = bare["seconds"], bare["rows"]
        print(
            f"baseline  DuckDB read_json into a file-backed table: {base_wall:6.2f} s, peak {base_rss:6.0f} MiB "
            f"({rows:,} rows)"
        )
        wall, rss, (n, n_rows, n_tests) = in_child(lambda: signals(db))
        print(
            f"ours      signals (record_day + run_tests): {wall:6.2f} s, peak {rss:6.0f} MiB "
            f"({n:,} traces of {loaded:,}, {n_rows} signal rows, {n_tests} tests)"
        )
        print(
            f"ratio     signals / bare read_json: {wall / base_wall:.2f}x  (aim <= 1.5x); "
            f"peak memory {rss / 1024:.2f} GiB"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
