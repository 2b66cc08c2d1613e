"""`make demo` step: the daily drift loop over every demo day as one ranged Dagster run.

Generates the seeded demo traffic into the trace inbox (if missing), materialises the drift
group over all of its days (what a backfill from the UI does), then checks the report
against the traffic's manifest: the injected regression must be found, clean days must not
alert.
"""

from __future__ import annotations

import datetime as dt
import json

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline.demo.dagster_cli import demo_dir


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
