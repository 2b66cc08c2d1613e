"""Signals evaluation harness: traffic with known truth, the real signals code, the figures.

For each kind and seed it writes N_DAYS days of traces (~4,000 a day over five segments,
one of them 5% of traffic) into a fresh DuckDB store, then runs, day by day, the real
``core.signals`` computation (``record_day``, SQL over every trace) and drift tests
(``run_tests``, trailing healthy reference, Holm, floors): what the ``trace_signals``
asset does. Clean traffic wobbles like real traffic: weekends carry 30% less traffic, a
different segment mix, shorter answers, lower latency and a higher refusal rate in one
segment, and every segment-day's rates and lengths wobble around their base.

Kinds (the change starts on day EVENT and lasts to the end):
- clean: nothing changes;
- refusal_surge: billing's refusal rate 2% -> 8%;
- cutoffs: billing's cut-off answers 1% -> 6%;
- length_collapse: billing's answers a third of their length;
- latency_spike: billing's latency x2.5;
- share_collapse: the returns segment falls to a fifth of its share.

It prints, per kind and overall: share of regressions paged on their first day (a fired
paging finding on the changed segment, or the overall row, for the expected signal), and
false alarms per 1,000 clean row-days (segments and the overall row, every day from the
first with a possible verdict; for the kinds with a change, every row-day before it and
the unchanged segments' rows after it).

    python -m bench.signals_eval [--seeds 20] [--kinds clean,refusal_surge,...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

import duckdb
import numpy as np
import pandas as pd

from eval_pipeline.core import store
from eval_pipeline.core.signals.compute import ALL, record_day
from eval_pipeline.core.signals.config import SignalsConfig
from eval_pipeline.core.signals.detect import run_tests

START = dt.date(2026, 3, 2)  # a Monday
N_DAYS = 14
EVENT = 12  # ten days of history with a verdict before the change
TRACES_PER_DAY = 4000
SHARES = {"orders": 0.35, "billing": 0.25, "returns": 0.20, "account": 0.15, "gifts": 0.05}
REFUSAL = {"orders": 0.01, "billing": 0.02, "returns": 0.015, "account": 0.03, "gifts": 0.01}
CUTOFF = 0.01
EMPTY = 0.002
WORDS = {"orders": 60, "billing": 80, "returns": 50, "account": 70, "gifts": 40}
LATENCY_MS = 900.0
KINDS = ["clean", "refusal_surge", "cutoffs", "length_collapse", "latency_spike",
         "share_collapse"]  # fmt: skip
EXPECTED = {
    "refusal_surge": ("billing", "refusal_rate"),
    "cutoffs": ("billing", "cutoff_rate"),
    "length_collapse": ("billing", "answer_chars"),
    "latency_spike": ("billing", "latency_ms"),
    "share_collapse": ("returns", "segment_share"),
}


def simulate_day(kind: str, d: int, rng: np.random.Generator) -> pd.DataFrame:
    weekend = (START + dt.timedelta(days=d)).weekday() >= 5
    after = d >= EVENT
    shares = dict(SHARES)
    if weekend:
        shares["billing"] *= 0.8  # fewer billing questions on weekends
        shares["gifts"] *= 1.3
    if kind == "share_collapse" and after:
        shares["returns"] *= 0.2
    n = int(TRACES_PER_DAY * (0.7 if weekend else 1.0) * rng.uniform(0.93, 1.07))
    segs = list(shares)
    p = np.array([shares[s] for s in segs])
    seg = rng.choice(len(segs), size=n, p=p / p.sum())
    frames = []
    for i, name in enumerate(segs):
        k = int((seg == i).sum())
        refusal = max(0.0, REFUSAL[name] * rng.uniform(0.8, 1.2) + (0.005 if weekend else 0))
        cutoff = CUTOFF * rng.uniform(0.8, 1.2)
        words = WORDS[name] * rng.uniform(0.93, 1.07) * (0.92 if weekend else 1.0)
        latency = LATENCY_MS * rng.uniform(0.9, 1.1) * (0.9 if weekend else 1.0)
        if after and name == "billing":
            if kind == "refusal_surge":
                refusal = 0.08
            elif kind == "cutoffs":
                cutoff = 0.06
            elif kind == "length_collapse":
                words /= 3
            elif kind == "latency_spike":
                latency *= 2.5
        u = rng.random(k)
        state = np.where(u < refusal, 1, np.where(u < refusal + cutoff, 2, 0))
        state = np.where(rng.random(k) < EMPTY, 3, state)
        frames.append(
            pd.DataFrame(
                {
                    "segment": name,
                    "state": state,
                    "words": np.maximum(1, rng.lognormal(np.log(words), 0.5, k)).astype(int),
                    "qwords": np.maximum(1, rng.lognormal(np.log(12), 0.4, k)).astype(int),
                    "latency": rng.lognormal(np.log(latency), 0.4, k),
                    "tokens": rng.integers(200, 900, k),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    out["day"] = START + dt.timedelta(days=d)
    out["i"] = np.arange(len(out))
    return out


INSERT = """
INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, assistant_response, segment, model, prompt_version, user_id, metadata, source, source_ref)
SELECT day, 'd' || day || '-' || i, day::TIMESTAMP, repeat('how do I ', (qwords // 3)::INT) || 'this?',
    CASE state
        WHEN 1 THEN 'I''m sorry, but I can''t help with that request.'
        WHEN 2 THEN repeat('word ', (words - 1)::INT) || 'and then'
        WHEN 3 THEN ''
        ELSE repeat('word ', (words - 1)::INT) || 'done.'
    END,
    segment, 'model-a', 'v1', NULL,
    json_object('latency_ms', round(latency, 1), 'prompt_tokens', tokens,
                'completion_tokens', words * 2, 'cost_usd', tokens * 2e-6),
    'jsonl', NULL
FROM frame
"""


def run(kind: str, seed: int, cfg: SignalsConfig) -> dict:
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    conn = duckdb.connect()
    store.migrate(conn)
    for d in range(N_DAYS):
        frame = simulate_day(kind, d, rng)  # noqa: F841 (read by the SQL below)
        conn.execute(INSERT)
    out = {"first_day_paged": None, "clean_rows": 0, "false_alarms": [], "paged_signals": []}
    for d in range(N_DAYS):
        day = START + dt.timedelta(days=d)
        record_day(conn, day, cfg)
        findings = run_tests(conn, day, cfg)
        pages = [f for f in findings if f.fired and f.pages]
        rows = sorted({f.segment for f in findings} | set(SHARES) | {ALL})
        if d < cfg.min_reference_days:
            continue
        expected = EXPECTED.get(kind)
        for row in rows:
            changed = (
                expected is not None
                and d >= EVENT
                and (row == expected[0] or (row == ALL and kind != "share_collapse"))
            )
            row_pages = [
                f for f in pages
                if f.segment == row or (f.signal == "segment_share" and f.key == row)
            ]  # fmt: skip
            if changed:
                continue
            out["clean_rows"] += 1
            if row_pages:
                out["false_alarms"].append((day, row, [f.message for f in row_pages]))
        if expected is not None and d == EVENT:
            seg, signal = expected
            hit = [
                f
                for f in pages
                if f.signal == signal
                and (f.segment in (seg, ALL) or (signal == "segment_share" and f.key == seg))
            ]
            out["first_day_paged"] = bool(hit)
            out["paged_signals"] = sorted({f"{f.segment}:{f.signal}" for f in pages})
    conn.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    cfg = SignalsConfig()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    started = time.monotonic()
    print(
        f"signals evaluation: {args.seeds} seeds per kind, {N_DAYS} days, ~{TRACES_PER_DAY:,} "
        f"traces a weekday, change on day {EVENT}"
    )
    print(f"{'kind':16s} {'paged day 1':>12s} {'clean row-days':>15s} {'false alarms':>13s} "
          f"{'per 1,000':>10s}")  # fmt: skip
    total_rows = total_fa = total_hit = total_reg = 0
    for kind in kinds:
        hits = regs = rows = fa = 0
        for seed in range(args.seeds):
            res = run(kind, seed, cfg)
            rows += res["clean_rows"]
            fa += len(res["false_alarms"])
            if args.verbose:
                for alarm in res["false_alarms"]:
                    print(f"  false alarm {kind} seed {seed}: {alarm}")
            if res["first_day_paged"] is not None:
                regs += 1
                hits += res["first_day_paged"]
                if args.verbose and not res["first_day_paged"]:
                    print(f"  missed {kind} seed {seed}: paged {res['paged_signals']}")
        total_rows += rows
        total_fa += fa
        total_hit += hits
        total_reg += regs
        paged = f"{hits}/{regs}" if regs else "-"
        print(f"{kind:16s} {paged:>12s} {rows:>15,d} {fa:>13d} {1000 * fa / max(rows, 1):>10.2f}")
    paged = f"{total_hit}/{total_reg}" if total_reg else "-"
    print(
        f"{'overall':16s} {paged:>12s} {total_rows:>15,d} {total_fa:>13d} "
        f"{1000 * total_fa / max(total_rows, 1):>10.2f}"
    )
    print(f"aims: every regression paged on its first day; <= 1 false alarm per 1,000 clean "
          f"row-days ({time.monotonic() - started:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
