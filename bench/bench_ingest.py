"""Ingest + sample one day of 1,000,000 traces (~500 MB of JSONL), and drift reports over a
year of history.

Each measurement runs in its own forked child so its peak memory (ru_maxrss) is its own.
The baseline is a bare DuckDB read_json of the same file into a table, in the same run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.drift.report import DriftConfig, report_day
from eval_pipeline.core.drift.sampling import sample_day
from eval_pipeline.core.sources.inbox import InboxSource, ingest_day
from eval_pipeline.demo import traffic as demo_traffic

N_TRACES = int(os.environ.get("BENCH_TRACES", 1_000_000))
DAY = dt.date(2026, 10, 5)


def bench_file() -> Path:
    path = settings.data_dir() / "bench" / "inbox" / f"{DAY.isoformat()}.jsonl"
    count = path.with_suffix(".count")
    if path.exists() and count.exists() and int(count.read_text()) == N_TRACES:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating {N_TRACES:,} traces into {path} (once) ...", flush=True)
    pool = demo_traffic.day_traces(DAY)  # ~2,000 realistic traces, reused with new ids
    rng = random.Random(1)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(N_TRACES):
            t = dict(pool[i % len(pool)])
            t["trace_id"] = f"bench-{i:08d}-{rng.getrandbits(32):08x}"
            fh.write(json.dumps(t) + "\n")
    path.with_suffix(".count").write_text(str(N_TRACES))
    return path


def in_child(fn) -> tuple[float, float, object]:
    """(wall seconds, peak RSS MiB, result) of fn() run in a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        started = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - started
        with os.fdopen(write, "w") as fh:
            fh.write(json.dumps([wall, out]))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    _, status, usage = os.wait4(pid, 0)
    if status != 0 or not data:
        raise RuntimeError(f"benchmark child failed with status {status}")
    wall, out = json.loads(data)
    return wall, usage.ru_maxrss / 1024, out


def bare_read(path: Path):
    import duckdb

    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE t AS SELECT * FROM read_json(?, format = 'newline_delimited')", [str(path)]
    )
    return conn.execute("SELECT count(*) FROM t").fetchone()[0]


def ingest_and_sample(path: Path, db: Path):
    with store.connect(db) as conn:
        res = ingest_day(conn, InboxSource(path.parent), DAY)
        sample = sample_day(conn, DAY)
    return [res.rows_ingested, res.rows_rejected, sample.sampled]


def year_of_scores(db: Path, days: int = 365) -> dt.date:
    """judge_scores for `days` days (200 a day, five segments) straight into the store."""
    first = dt.date(2025, 11, 1)
    with store.connect(db) as conn:
        conn.execute(
            """
            INSERT INTO judge_scores
            SELECT ?::DATE + (i // 200)::INTEGER, 't' || i, 'seg' || (i % 5), 'k' || i, 'ok',
                   CASE WHEN hash(i) % 10 = 0 THEN 2 ELSE 4 + (hash(i) % 2)::INTEGER END,
                   'heuristic', NULL, 'heuristic-v2', false
            FROM range(?) r(i)
            """,
            [first, days * 200],
        )
    return first


def drift_year(db: Path, first: dt.date, days: int, baseline_days: int):
    with store.connect(db) as conn:
        for i in range(days):
            report_day(conn, first + dt.timedelta(days=i), DriftConfig(baseline_days=baseline_days))
    return days


def main() -> None:
    path = bench_file()
    size_mb = path.stat().st_size / 1e6
    print(f"input: {N_TRACES:,} traces, {size_mb:.0f} MB of JSONL")
    base_wall, base_rss, rows = in_child(lambda: bare_read(path))
    print(
        f"baseline  DuckDB read_json into a table: {base_wall:6.2f} s, peak {base_rss:6.0f} MiB ({rows:,} rows)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        wall, rss, (ok, bad, sampled) = in_child(lambda: ingest_and_sample(path, tmp / "b.duckdb"))
        print(
            f"ours      validate+ingest+sample:       {wall:6.2f} s, peak {rss:6.0f} MiB "
            f"({ok:,} ingested, {bad} rejected, {sampled} sampled)"
        )
        print(
            f"ratio     ingest+sample / bare read_json: {wall / base_wall:.2f}x  (aim <= 3x); "
            f"peak memory {rss / 1024:.2f} GiB (aim <= 2 GiB)"
        )
        first = year_of_scores(tmp / "d.duckdb")
        last = first + dt.timedelta(days=364)
        wall1, _, _ = in_child(lambda: drift_year(tmp / "d.duckdb", last, 1, 365))
        print(f"drift report for one day against 365 days of history: {wall1:.2f} s (aim <= 2 s)")
        wall365, _, _ = in_child(lambda: drift_year(tmp / "d.duckdb", first, 365, 7))
        print(
            f"drift reports for all 365 days (7-day baselines, a year's backfill): {wall365:.2f} s "
            f"({wall365 / 365 * 1000:.0f} ms a day)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
