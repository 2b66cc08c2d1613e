"""`make demo` step: the daily drift loop over every demo day as one ranged Dagster run.

Generates the seeded demo traffic into the trace inbox (if missing), materialises the drift
group over all of its days (what a backfill from the UI does), then checks the report
against the traffic's manifest: the injected regression must open one incident on its
first day, stay open while broken, resolve after the fix with prompt_version named as the
cause, with two notifications (open, resolve) posted to a local receiver; clean days must
not page. It judges quality, groundedness and safety with the offline judge (rules for the
last two), so the shipping segment's ungrounded days open a groundedness incident of their
own while the quality story stays the same.
"""

from __future__ import annotations

import datetime as dt
import json

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.drift import history
from eval_pipeline.demo import traffic as demo_traffic
from eval_pipeline.demo.dagster_cli import demo_dir

# What the demo's drift step judges: the heuristic judge's quality and the rule-based
# groundedness and safety (core/judge/rule_judge.py).
DEMO_CRITERIA = "quality,groundedness,safety"


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


def incidents_config(manifest: dict) -> dict:
    """Run config for the drift job. The demo's month is one backfill of days dated in the
    past, told as if it were live: "today" is its last day and every day of it is recent
    enough to notify about (a real backfill of old history keeps the default window of 3
    days, so it does not page). A cause may also name the metadata key ``channel``."""
    days = (
        dt.date.fromisoformat(manifest["last_day"]) - dt.date.fromisoformat(manifest["first_day"])
    ).days
    return {
        "ops": {
            "drift_incidents": {
                "config": {
                    "today": manifest["last_day"],
                    "notify_within_days": days + 1,
                    "metadata_keys": ["channel"],
                }
            }
        }
    }


def drift_summary(manifest: dict, posts: list[dict] | None = None) -> dict:
    first = dt.date.fromisoformat(manifest["first_day"])
    last = dt.date.fromisoformat(manifest["last_day"])
    injected = manifest["injected_regression"]
    start = dt.date.fromisoformat(injected["from_day"])
    fixed = dt.date.fromisoformat(injected["fixed_on"])
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        days = conn.execute(
            "SELECT partition_date, n, mean_score, n_failed FROM drift_reports "
            "WHERE segment = '__all__' AND partition_date BETWEEN ? AND ? ORDER BY 1",
            [first, last],
        ).fetchall()
        billing = conn.execute(
            "SELECT partition_date, mean_score, reference_mean, state, cusum, incident_id "
            "FROM drift_day_states WHERE segment = ? AND partition_date BETWEEN ? AND ? "
            "ORDER BY 1",
            [injected["segment"], first, last],
        ).fetchall()
        incidents = history.incident_rows(conn)
        sent = conn.execute(
            "SELECT incident_id, event, channel, status, day FROM notifications "
            "ORDER BY day, incident_id, event"
        ).fetchall()
        ingested = conn.execute(
            "SELECT sum(rows_ingested), sum(rows_rejected) FROM trace_ingests "
            "WHERE partition_date BETWEEN ? AND ?",
            [first, last],
        ).fetchone()
        judge = conn.execute(
            "SELECT any_value(judge_name), any_value(rubric_version) FROM judge_scores "
            "WHERE partition_date BETWEEN ? AND ? AND criterion = 'quality'",
            [first, last],
        ).fetchone()
        criteria = criteria_summary(conn, manifest, posts)
    in_segment = [i for i in incidents if injected["segment"] in i["segments"]]
    # An incident whose page came before the regression started was a false alarm.
    clean = [i for i in incidents if dt.date.fromisoformat(i["detected_on"][:10]) < start]
    inc = in_segment[0] if in_segment else None

    def day(x):
        return dt.date.fromisoformat(x[:10]) if x else None

    check = {
        "regression_detected": inc is not None,
        "incidents": len(incidents),
        "incident_id": inc and inc["incident_id"],
        "opened_on": inc and inc["opened_on"][:10],
        "first_page": inc and inc["detected_on"][:10],
        "days_after_start": (day(inc["detected_on"]) - start).days if inc else None,
        "resolved_on": inc and (inc["resolved_on"] or "")[:10] or None,
        "resolved_days_after_fix": (day(inc["resolved_on"]) - fixed).days
        if inc and inc["resolved_on"]
        else None,
        "cause_key": inc and inc["cause_key"],
        "cause_names_prompt_version": bool(
            inc and (inc["cause_key"] or "").startswith("prompt_version")
        ),
        # The quality incident's own messages; a criterion's incidents notify too (below).
        "notifications_sent": sum(1 for r in sent if r[3] == "sent" and ":" not in r[0]),
        "notifications_received": sum(1 for p in posts or [] if "LLM quality" in _text(p)),
        "clean_day_alerts": len(clean),
    }
    return {
        "judge": {"name": judge[0], "rubric_version": judge[1]},
        "days_processed": len(days),
        "traces_ingested": int(ingested[0] or 0),
        "rows_rejected": int(ingested[1] or 0),
        "per_day_mean_score": {d.isoformat(): round(m, 3) for d, _, m, _ in days if m is not None},
        "segment_days": [
            {
                "day": d.isoformat(),
                "mean": None if m is None else round(m, 3),
                "reference": None if r is None else round(r, 3),
                "state": st,
                "cusum": None if c is None else round(c, 2),
                "incident_id": iid,
            }
            for d, m, r, st, c, iid in billing
        ],
        "incidents": incidents,
        "notifications": [
            {"incident_id": i, "event": e, "channel": c, "status": s, "day": d.isoformat()}
            for i, e, c, s, d in sent
        ],
        "received": [p.get("text", "") for p in posts or []],
        "injected_regression": injected,
        "check": check,
        "criteria": criteria,
    }


def _text(post: dict) -> str:
    return str(post.get("text", ""))


def criteria_summary(conn, manifest: dict, posts: list[dict] | None = None) -> dict:
    """The criteria other than quality: their incidents, and the injected groundedness
    regression's segment day by day with the incident it opened (if any)."""
    injected = manifest.get("injected_groundedness_regression")
    judged = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT criterion FROM judge_scores WHERE criterion <> 'quality' ORDER BY 1"
        ).fetchall()
    ]
    cols = ("criterion", "incident_id", "status", "segments", "opened_on", "detected_on")
    cols += ("last_degraded_on", "resolved_on", "detector", "peak_drop")
    incidents = [
        dict(zip(cols, r, strict=True))
        for r in conn.execute(
            f"SELECT {', '.join(cols)} FROM drift_incidents_criteria ORDER BY opened_on, 1, 2"
        ).fetchall()
    ]
    for inc in incidents:
        for key in ("opened_on", "detected_on", "last_degraded_on", "resolved_on"):
            inc[key] = inc[key] and inc[key].isoformat()
        inc["segments"] = list(inc["segments"])
        inc["peak_drop"] = round(inc["peak_drop"], 3)
    out: dict = {"judged": judged, "incidents": incidents}
    if not injected or "groundedness" not in judged:
        return out
    seg, start = injected["segment"], dt.date.fromisoformat(injected["from_day"])
    end = dt.date.fromisoformat(injected["last_day"])
    days = conn.execute(
        "SELECT partition_date, mean_score, reference_mean, state, incident_id "
        "FROM drift_day_states_criteria WHERE criterion = 'groundedness' AND segment = ? "
        "ORDER BY 1",
        [seg],
    ).fetchall()
    mine = [i for i in incidents if i["criterion"] == "groundedness" and seg in i["segments"]]
    inc = mine[0] if mine else None
    out["groundedness_days"] = [
        {
            "day": d.isoformat(),
            "mean": None if m is None else round(m, 3),
            "reference": None if r is None else round(r, 3),
            "state": st,
            "incident_id": iid,
        }
        for d, m, r, st, iid in days
    ]
    out["injected"] = injected
    out["check"] = {
        "detected": inc is not None,
        "incident_id": inc and inc["incident_id"],
        "opened_on": inc and inc["opened_on"],
        "detected_on": inc and inc["detected_on"],
        "days_after_start": inc and (dt.date.fromisoformat(inc["detected_on"]) - start).days,
        "resolved_on": inc and inc["resolved_on"],
        "resolved_after_end": bool(
            inc and inc["resolved_on"] and dt.date.fromisoformat(inc["resolved_on"]) > end
        ),
        # Any other criterion incident (another segment, another criterion) is a false alarm.
        "other_incidents": len(incidents) - (1 if inc else 0),
        "notified": [
            e
            for i, e in conn.execute(
                "SELECT incident_id, event FROM notifications WHERE status = 'sent' "
                "ORDER BY day, event DESC"
            ).fetchall()
            if inc and i == inc["incident_id"]
        ],
        "notifications_received": sum(1 for p in posts or [] if "LLM groundedness" in _text(p)),
    }
    return out


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
    inj, chk = d["injected_regression"], d["check"]
    print(f"{inj['segment']} day by day (mean vs healthy-days reference, state, incident):")
    for row in d["segment_days"]:
        ref = "–" if row["reference"] is None else f"{row['reference']:.2f}"
        mean = "–" if row["mean"] is None else f"{row['mean']:.2f}"
        print(f"  {row['day']}  {mean} vs {ref}  {row['state']:<11} {row['incident_id'] or ''}")
    print(f"incidents: {len(d['incidents'])}")
    for i in d["incidents"]:
        print(
            f"  {i['incident_id']} {i['status']} {', '.join(i['segments'])}: opened "
            f"{i['opened_on'][:10]}, paged {i['detected_on'][:10]}, resolved "
            f"{(i['resolved_on'] or 'not yet')[:10]} ({i['detector']}); cause: {i['cause']}"
        )
    print(
        f"notifications received by the demo's local Slack-compatible receiver: {len(d['received'])}"
    )
    for text in d["received"]:
        print(f"  > {text[:300]}")
    print(
        f"injected: {inj['what']} from {inj['from_day']}, fixed on {inj['fixed_on']} "
        f"(segment {inj['segment']})"
    )
    if chk["regression_detected"]:
        print(
            f"  -> detected on {chk['first_page']} ({chk['days_after_start']} days after it "
            f"started), incident opened on {chk['opened_on']}, resolved on "
            f"{chk['resolved_on'] or 'not yet'}; cause: {chk['cause_key'] or 'none named'}; "
            f"incidents paged on clean days: {chk['clean_day_alerts']}"
        )
    else:
        print("  -> NOT detected")
    print_criteria(d.get("criteria") or {})


def print_criteria(c: dict) -> None:
    if not c.get("judged"):
        return
    print(f"\nother criteria judged: {', '.join(c['judged'])} (rule-based, offline)")
    print(f"criterion incidents: {len(c['incidents'])}")
    for i in c["incidents"]:
        print(
            f"  {i['incident_id']} {i['status']} {', '.join(i['segments'])}: opened "
            f"{i['opened_on']}, detected {i['detected_on']}, resolved "
            f"{i['resolved_on'] or 'not yet'} ({i['detector']})"
        )
    inj, chk = c.get("injected"), c.get("check")
    if not inj or not chk:
        return
    print(f"{inj['segment']} groundedness day by day (mean vs reference, state, incident):")
    for row in c["groundedness_days"]:
        ref = "–" if row["reference"] is None else f"{row['reference']:.2f}"
        mean = "–" if row["mean"] is None else f"{row['mean']:.2f}"
        print(f"  {row['day']}  {mean} vs {ref}  {row['state']:<11} {row['incident_id'] or ''}")
    print(f"injected: {inj['what']} from {inj['from_day']} to {inj['last_day']}")
    if chk["detected"]:
        print(
            f"  -> groundedness incident {chk['incident_id']} on {inj['segment']}: opened "
            f"{chk['opened_on']}, detected {chk['detected_on']} ({chk['days_after_start']} "
            f"days after it started), resolved {chk['resolved_on'] or 'not yet'}; notified: "
            f"{', '.join(chk['notified']) or 'nothing'}; other criterion incidents: "
            f"{chk['other_incidents']}"
        )
    else:
        print("  -> groundedness regression NOT detected")
