"""`make demo`: the whole product on bundled demo data, through Dagster, then a summary.

1. Generates the seeded demo traffic into the trace inbox (if missing).
2. Runs the daily drift loop over every demo day as ONE ranged Dagster run (the same thing a
   backfill from the UI does), in the project's Dagster home, so the UI shows it afterwards.
3. Runs the other loops' demo steps (regression gate, A/B test, feedback), when present.
4. Prints what it found and writes it to data/demo/summary.json; exits non-zero if the drift
   loop missed the injected regression or alerted on a clean day, the gate let the regressed
   prompt through, or no feedback candidate is left to review.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import demo_traffic, store

DEMO_STEPS = ["demo_judge", "demo_regression", "demo_ab", "demo_feedback"]


def demo_dir() -> Path:
    return settings.data_dir() / "demo"


def ensure_traffic() -> dict:
    manifest_path = demo_dir() / "manifest.json"
    inbox = settings.trace_inbox()
    first = demo_traffic.START.isoformat()
    if manifest_path.exists() and (inbox / f"{first}.jsonl").exists():
        print(f"demo traffic already in {inbox} (manifest {manifest_path})")
        return json.loads(manifest_path.read_text())
    print(f"generating {demo_traffic.DAYS} days of demo traffic into {inbox} ...", flush=True)
    manifest = demo_traffic.generate(inbox)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def dagster_materialize(
    select: str,
    log_name: str,
    *,
    partition: str | None = None,
    partition_range: str | None = None,
    config: dict | None = None,
) -> tuple[int, float]:
    """`dagster asset materialize` in the project's Dagster home, so the UI shows the run.

    Streams the step results, keeps the full log under data/demo/, and returns
    (exit code, seconds); the caller decides what a failure means for its step.
    """
    args = ["asset", "materialize", "-m", "eval_pipeline.definitions", "--select", select]
    if partition:
        args += ["--partition", partition]
    if partition_range:
        args += ["--partition-range", partition_range]
    shown = " ".join(args)
    if config:
        args += ["--config-json", json.dumps(config)]
        shown += " --config-json '...'"
    log_path = demo_dir() / log_name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ dagster {shown}", flush=True)
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ,
        )
        for line in proc.stdout:
            log.write(line)
            if any(k in line for k in ("STEP_SUCCESS", "STEP_FAILURE", "RUN_FAILURE")):
                print("  " + line.split(" - ")[-1].strip(), flush=True)
        proc.wait()
    seconds = time.monotonic() - started
    print(f"  exit {proc.returncode} in {seconds:.1f} s (log: {log_path})", flush=True)
    return proc.returncode, seconds


def drift_summary(manifest: dict) -> dict:
    first = dt.date.fromisoformat(manifest["first_day"])
    last = dt.date.fromisoformat(manifest["last_day"])
    injected = manifest["injected_regression"]
    start = dt.date.fromisoformat(injected["from_day"])
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        days = conn.execute(
            "SELECT partition_date, n, mean_score, n_failed FROM drift_reports "
            "WHERE segment = '__all__' AND partition_date BETWEEN ? AND ? ORDER BY 1",
            [first, last],
        ).fetchall()
        alerts = conn.execute(
            "SELECT partition_date, segment, delta, p_value, baseline_mean, mean_score "
            "FROM drift_alerts WHERE partition_date BETWEEN ? AND ? ORDER BY 1, 2",
            [first, last],
        ).fetchall()
        ingested = conn.execute(
            "SELECT sum(rows_ingested), sum(rows_rejected) FROM trace_ingests "
            "WHERE partition_date BETWEEN ? AND ?",
            [first, last],
        ).fetchone()
        judge = conn.execute(
            "SELECT any_value(judge_name), any_value(rubric_version) FROM judge_scores "
            "WHERE partition_date BETWEEN ? AND ?",
            [first, last],
        ).fetchone()
    alert_rows = [
        {
            "day": d.isoformat(),
            "segment": seg,
            "delta": round(delta, 3),
            "p_value": p,
            "baseline_mean": round(base, 3),
            "mean_score": round(mean, 3),
        }
        for d, seg, delta, p, base, mean in alerts
    ]
    clean_day_alerts = [a for a in alert_rows if dt.date.fromisoformat(a["day"]) < start]
    detected = [
        a
        for a in alert_rows
        if a["segment"] == injected["segment"]
        and start <= dt.date.fromisoformat(a["day"]) <= start + dt.timedelta(days=2)
    ]
    return {
        "judge": {"name": judge[0], "rubric_version": judge[1]},
        "days_processed": len(days),
        "traces_ingested": int(ingested[0] or 0),
        "rows_rejected": int(ingested[1] or 0),
        "per_day_mean_score": {d.isoformat(): round(m, 3) for d, _, m, _ in days if m is not None},
        "alerts": alert_rows,
        "injected_regression": injected,
        "check": {
            "regression_detected": bool(detected),
            "first_alert_in_segment": detected[0]["day"] if detected else None,
            "days_after_start": (dt.date.fromisoformat(detected[0]["day"]) - start).days
            if detected
            else None,
            "clean_day_alerts": len(clean_day_alerts),
        },
    }


def print_drift(summary: dict) -> None:
    d = summary["drift"]
    print(f"\n=== Drift loop (daily, judge: {d['judge']['name']}) ===")
    print(
        f"days processed: {d['days_processed']}, traces ingested: {d['traces_ingested']}, "
        f"bad rows kept aside: {d['rows_rejected']}"
    )
    print("per-day mean score (all segments):")
    for day, mean in d["per_day_mean_score"].items():
        bar = "#" * int(round((mean - 1) * 10))
        print(f"  {day}  {mean:.2f}  {bar}")
    print(f"alerts raised: {len(d['alerts'])}")
    for a in d["alerts"]:
        print(
            f"  {a['day']}  {a['segment']:<9} delta {a['delta']:+.2f}  "
            f"(mean {a['mean_score']:.2f} vs baseline {a['baseline_mean']:.2f}), p={a['p_value']:.2g}"
        )
    inj, chk = d["injected_regression"], d["check"]
    print(f"injected: {inj['what']} from {inj['from_day']} (segment {inj['segment']})")
    if chk["regression_detected"]:
        print(
            f"  -> detected on {chk['first_alert_in_segment']} "
            f"({chk['days_after_start']} days after it started); "
            f"alerts on clean days: {chk['clean_day_alerts']}"
        )
    else:
        print("  -> NOT detected within two days of its start")


def main() -> int:
    os.environ.setdefault("DAGSTER_HOME", str(settings.data_dir() / "dagster_home"))
    demo_dir().mkdir(parents=True, exist_ok=True)
    manifest = ensure_traffic()
    code, _ = dagster_materialize(
        "group:drift",
        "dagster_drift.log",
        partition_range=f"{manifest['first_day']}...{manifest['last_day']}",
    )
    if code != 0:
        raise SystemExit(f"the drift backfill failed (exit {code}); see {demo_dir()}")
    summary: dict = {"drift": drift_summary(manifest)}
    print_drift(summary)
    for name in DEMO_STEPS:
        try:
            step = importlib.import_module(f"eval_pipeline.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"eval_pipeline.{name}":
                raise
            continue
        step.run(summary)
    out = demo_dir() / "summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nsummary written to {out}")
    print("open the Dagster UI on the same runs and data: make ui  (http://127.0.0.1:3000)")
    problems = demo_problems(summary)
    for problem in problems:
        print(f"DEMO CHECK FAILED: {problem}")
    return 1 if problems else 0


def demo_problems(summary: dict) -> list[str]:
    """What the demo promises and did not deliver (an empty list: everything held)."""
    problems = []
    chk = summary["drift"]["check"]
    if not chk["regression_detected"]:
        problems.append("the drift loop missed the injected regression")
    if chk["clean_day_alerts"]:
        problems.append(f"{chk['clean_day_alerts']} alerts on clean days")
    if "regression" in summary and not summary["regression"].get("gate_blocked_regressed"):
        problems.append("the golden-set gate did not block the regressed prompt")
    if "feedback" in summary and not summary["feedback"].get("pending_candidates"):
        problems.append("no feedback candidates are pending review")
    return problems


if __name__ == "__main__":
    sys.exit(main())
