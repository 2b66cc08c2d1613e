"""Ingest + sample one day of 1 and 5 million traces (10 million with BENCH_INGEST_10M=1), the
same 1 million day from 24 hourly part files, and drift reports over a year of history.

The data is generated once under data/bench/ingest/ and reused. Each measurement runs in its
own forked child so its peak memory (ru_maxrss) is its own. The baseline is a bare DuckDB
read_json of the same files into a file-backed table, measured in the same run: the machine
may be busy, so the ratio is the figure to compare, not the seconds. Each size runs the pair
(bare read, ours) BENCH_INGEST_REPEATS times (default 3), alternated, and reports the median
ratio: on a shared machine one pair can be off by half either way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.drift.report import DriftConfig, report_day
from eval_pipeline.core.drift.sampling import sample_day
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import ingest_day
from eval_pipeline.demo import traffic as demo_traffic

DAY = dt.date(2026, 10, 5)
BAD_EVERY = 100_000  # one malformed line in this many, of three kinds in turn
BAD_LINES = (
    '{"trace_id": "cut off',
    '{"trace_id": "no-answer", "timestamp": "2026-10-05T01:00:00Z", "user_query": "q"}',
    "[1, 2, 3]",
)
WRITE_BATCH = 100_000


def sizes() -> list[int]:
    if os.environ.get("BENCH_TRACES"):
        return [int(n) for n in os.environ["BENCH_TRACES"].split(",")]
    out = [1_000_000, 5_000_000]
    if os.environ.get("BENCH_INGEST_10M") == "1":
        out.append(10_000_000)
    return out


def _templates() -> list[tuple[str, str, int]]:
    """(text before the trace id, text after it, hour) for ~2,000 realistic traces."""
    out = []
    for t in demo_traffic.day_traces(DAY):
        ts = t["timestamp"]
        hour = (
            int(ts[11:13])
            if isinstance(ts, str)
            else dt.datetime.fromtimestamp(ts / 1000, dt.UTC).hour
        )
        before, after = json.dumps({**t, "trace_id": "\x00"}).split('"\\u0000"')
        out.append((before, after, hour))
    return out


def bench_inbox(n: int, parts: bool) -> Path:
    """The inbox folder of an n-trace day: one file, or 24 hourly part files (same lines).

    Reused while the generator's input is unchanged: the marker holds the size and a digest of
    the templates and bad lines, so every size is made of the same traces as the demo's."""
    root = settings.data_dir() / "bench" / "ingest" / f"{n}-{'parts' if parts else 'single'}"
    marker = root / ".complete"  # a dot name: the inbox never reads it
    templates = _templates()
    digest = hashlib.sha256(json.dumps([templates, BAD_LINES, BAD_EVERY]).encode()).hexdigest()[:16]
    if marker.exists() and marker.read_text() == f"{n} {digest}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    folder = root / DAY.isoformat() if parts else root
    folder.mkdir(parents=True)
    layout = "24 hourly part files" if parts else "one file"
    print(f"generating {n:,} traces into {root} ({layout}, once) ...", flush=True)
    rng = random.Random(1)
    if parts:
        handles = [(folder / f"part-{h:04d}.jsonl").open("w") for h in range(24)]
    else:
        handles = [(root / f"{DAY.isoformat()}.jsonl").open("w")]
    batches: list[list[str]] = [[] for _ in handles]
    try:
        for i in range(n):
            before, after, hour = templates[i % len(templates)]
            if i % BAD_EVERY == BAD_EVERY - 1:
                line = BAD_LINES[(i // BAD_EVERY) % len(BAD_LINES)]
            else:
                line = f'{before}"bench-{i:08d}-{rng.getrandbits(32):08x}"{after}'
            batches[hour if parts else 0].append(line)
            if i % WRITE_BATCH == WRITE_BATCH - 1:
                for fh, batch in zip(handles, batches, strict=True):
                    if batch:
                        fh.write("\n".join(batch) + "\n")
                        batch.clear()
        for fh, batch in zip(handles, batches, strict=True):
            if batch:
                fh.write("\n".join(batch) + "\n")
    finally:
        for fh in handles:
            fh.close()
    for part in folder.glob("*.jsonl"):
        if part.stat().st_size == 0:  # an hour with no traffic has no file
            part.unlink()
    marker.write_text(f"{n} {digest}")
    return root


def inbox_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jsonl"))


def in_child(fn) -> tuple[float, float, object]:
    """(wall seconds, peak RSS MiB, result) of fn() run in a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            started = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - started
            message = json.dumps([wall, out])
        except BaseException as exc:  # a forked child's exception is otherwise lost
            message = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            with os.fdopen(write, "w") as fh:
                fh.write(message)
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    _, status, usage = os.wait4(pid, 0)
    result = json.loads(data) if data else None
    if status != 0 or result is None or isinstance(result, dict):
        why = result["error"] if isinstance(result, dict) else f"status {status}"
        raise RuntimeError(f"benchmark child failed: {why}")
    wall, out = result
    return wall, usage.ru_maxrss / 1024, out


def bare_read(files: list[str], db: Path):
    """What DuckDB alone does with the files: parse them into a table in a database file."""
    started = time.perf_counter()
    conn = duckdb.connect(str(db))
    conn.execute(
        "CREATE TABLE t AS SELECT * FROM read_json(?, format = 'newline_delimited', "
        "ignore_errors = true)",
        [files],
    )
    conn.execute("CHECKPOINT")
    seconds = time.perf_counter() - started
    rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    conn.close()
    return {"rows": rows, "seconds": seconds}


def ingest_and_sample(root: Path, db: Path):
    """Validate + ingest + sample through the store, timed without the fingerprints below."""
    started = time.perf_counter()
    with store.connect(db) as conn:
        res = ingest_day(conn, InboxSource(root, settle_seconds=0), DAY)
        sample = sample_day(conn, DAY)
        conn.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        # Fingerprints to compare two layouts of the same day: rows, rejects, sample.
        rows = conn.execute(
            "SELECT bit_xor(hash(trace_id, ts, user_query, assistant_response, segment, model, "
            "prompt_version, user_id, metadata::VARCHAR, context::VARCHAR, "
            "conversation::VARCHAR, tool_calls::VARCHAR)) FROM raw_traces"
        ).fetchone()[0]
        rejects = conn.execute(
            "SELECT bit_xor(hash(reason, excerpt)), count(*) FROM trace_rejects"
        ).fetchone()
        picked = conn.execute(
            "SELECT bit_xor(hash(trace_id, segment, stratum_size, stratum_sample)) "
            "FROM sampled_traces"
        ).fetchone()[0]
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    return {
        "ingested": res.rows_ingested,
        "rejected": res.rows_rejected,
        "sampled": sample.sampled,
        "fingerprint": [str(rows), str(rejects[0]), rejects[1], str(picked)],
        "store_bytes": size,
        "seconds": seconds,
    }


def repeats() -> int:
    """Pairs of (bare read, ours) per size: on a shared machine one pair is noise."""
    return max(1, int(os.environ.get("BENCH_INGEST_REPEATS", "3")))


def measure(root: Path, tmp: Path, label: str) -> dict:
    """Bare read and ours, alternated `repeats()` times; the medians and the median ratio."""
    files = inbox_files(root)
    size = sum(os.path.getsize(f) for f in files)
    # Read the files once untimed: otherwise the first bare read alone pays for the disk
    # (the files of the other sizes may have pushed these out of the page cache).
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    pairs = []
    for _ in range(repeats()):
        _, base_rss, base = in_child(lambda: bare_read(files, tmp / f"bare-{label}.duckdb"))
        _, rss, out = in_child(lambda: ingest_and_sample(root, tmp / f"ours-{label}.duckdb"))
        # Each side's own seconds: the checks that follow (row counts, fingerprints) are the
        # benchmark's, not the work measured.
        base_wall, wall = base["seconds"], out.pop("seconds")
        pairs.append((base_wall, base_rss, wall, rss, out))
        for p in tmp.glob("*.duckdb*"):
            if p.is_file():
                p.unlink()
    outs = [p[4] for p in pairs]
    if any(o["fingerprint"] != outs[0]["fingerprint"] for o in outs):
        raise RuntimeError(f"{label}: repeated runs gave different rows, rejects or samples")
    return {
        "input": size,
        "files": len(files),
        "base": statistics.median(p[0] for p in pairs),
        "base_rss": max(p[1] for p in pairs),
        "wall": statistics.median(p[2] for p in pairs),
        "rss": max(p[3] for p in pairs),
        "ratio": statistics.median(p[2] / p[0] for p in pairs),
        "ratios": [p[2] / p[0] for p in pairs],
        **outs[0],
    }


def year_of_scores(db: Path, days: int = 365) -> dt.date:
    """judge_scores for `days` days (200 a day, five segments) straight into the store."""
    first = dt.date(2025, 11, 1)
    with store.connect(db) as conn:
        conn.execute(
            """
            INSERT INTO judge_scores
            SELECT ?::DATE + (i // 200)::INTEGER, 't' || i, 'seg' || (i % 5), 'k' || i, 'ok',
                   CASE WHEN hash(i) % 10 = 0 THEN 2 ELSE 4 + (hash(i) % 2)::INTEGER END,
                   'heuristic', NULL, 'heuristic-v2', false, 'quality'
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
    load = os.getloadavg()
    limit, _ = store.memory_settings()
    print(
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores; "
        f"store memory_limit {limit}"
    )
    # The stores go next to the data (same disk), not to a possibly small /tmp.
    (settings.data_dir() / "bench").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=settings.data_dir() / "bench"))
    header = (
        f"{'traces':>11} {'layout':>7} {'JSONL':>8} {'bare read':>10} {'ours':>8} {'ratio':>6} "
        f"{'peak mem':>9} {'bare peak':>9} {'store/1M':>9}"
    )
    rows = []
    try:
        for n in sizes():
            layouts = [False, True] if n == 1_000_000 else [False]
            for parts in layouts:
                root = bench_inbox(n, parts)
                label = "parts" if parts else "single"
                r = measure(root, tmp, f"{n}-{label}")
                rows.append((n, label, r))
                line = (
                    f"{n:>11,} {label:>7} {r['input'] / 1e9:>6.2f}GB {r['base']:>9.2f}s "
                    f"{r['wall']:>7.2f}s {r['ratio']:>5.2f}x "
                    f"{r['rss'] / 1024:>6.2f}GiB {r['base_rss'] / 1024:>6.2f}GiB "
                    f"{r['store_bytes'] / (n / 1e6) / 1e6:>7.0f}MB"
                )
                if len(rows) == 1:
                    print(header)
                print(line, flush=True)
                print(
                    f"{'':>11} ({r['files']} files: {r['ingested']:,} ingested, "
                    f"{r['rejected']} rejected, {r['sampled']} sampled; ratio of each of "
                    f"{len(r['ratios'])} runs: {', '.join(f'{x:.2f}' for x in r['ratios'])})",
                    flush=True,
                )
        print(
            "ratio = validate + ingest + sample / bare read_json into a file-backed table "
            f"(aim <= 2x), the median of {repeats()} alternated runs (seconds: medians); "
            "peak mem = max RSS of the process (aim <= 2 GiB)"
        )
        by = {(n, label): r for n, label, r in rows}
        if (1_000_000, "single") in by and (1_000_000, "parts") in by:
            same = (
                by[(1_000_000, "single")]["fingerprint"] == by[(1_000_000, "parts")]["fingerprint"]
            )
            print(
                "1M day from one file vs 24 hourly part files: rows, rejects and sample "
                + ("identical" if same else "DIFFER")
            )
        biggest = rows[-1][2] if rows else None
        if biggest:
            per_day = biggest["store_bytes"] / (rows[-1][0] / 1e6) / 1e6
            print(
                f"store growth: about {per_day:.0f} MB per million traces a day; with the default "
                f"30-day raw retention the raw traces of a 10M-a-day service hold at about "
                f"{per_day * 10 * 30 / 1e3:.0f} GB instead of growing by {per_day * 10 / 1e3:.1f} "
                f"GB every day"
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
