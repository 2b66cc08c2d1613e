"""Demo step: users thumb down the regressed billing answers; the feedback goes through the
inbox sensor and the ingestion job, so after `make demo` there are candidates to review.

Runs after the drift backfill (it reads trace ids of the injected regression from
raw_traces). It writes one feedback file into the inbox - thumbs-downs on billing traces from
the regression (prompt v2, refusals and cut-off answers), some thumbs-ups, one thumbs-down on
a trace the store does not have, a repeated record and one of each kind of bad line - then
evaluates the real inbox sensor against the project's Dagster instance and launches the run
it requests with `dagster job execute` (DAGSTER_HOME from the environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.feedback import candidates
from eval_pipeline.defs.feedback import feedback_inbox_sensor
from eval_pipeline.demo.traffic import REGRESSED_SEGMENT, REGRESSION_START

FILE_NAME = "demo-feedback-2026-10-30.jsonl"
DOWNS = 12
UPS = 6
COMMENTS = {
    "refusal": [
        "It refused to answer a simple billing question.",
        "Why can't the bot talk about my invoice anymore?",
        "Useless - told me to contact support.",
    ],
    "truncated": ["The answer just stops mid-sentence.", "Cut off before telling me what to do."],
}


def _pick_traces(db: Path) -> tuple[list[tuple], list[tuple]]:
    with store.connect(db, read_only=True) as conn:
        flawed = conn.execute(
            "SELECT trace_id, ts, json_extract_string(metadata, '$.flaw') AS flaw, user_id "
            "FROM raw_traces WHERE segment = ? AND prompt_version = 'v2' "
            "AND partition_date >= ? "
            "AND json_extract_string(metadata, '$.flaw') IN ('refusal', 'truncated') "
            "ORDER BY trace_id LIMIT ?",
            [REGRESSED_SEGMENT, REGRESSION_START, DOWNS],
        ).fetchall()
        good = conn.execute(
            "SELECT trace_id, ts, 'none', user_id FROM raw_traces "
            "WHERE json_extract_string(metadata, '$.flaw') = 'none' "
            "ORDER BY trace_id LIMIT ?",
            [UPS],
        ).fetchall()
    return flawed, good


def build_file(flawed: list[tuple], good: list[tuple]) -> tuple[bytes, dict]:
    lines: list[bytes] = []
    for i, (tid, ts, flaw, user) in enumerate(flawed):
        rec = {
            "trace_id": tid,
            "rating": "down",
            "user_id": user,
            "comment": COMMENTS[flaw][i % len(COMMENTS[flaw])],
            "ts": (ts.isoformat() + "Z") if ts else None,
        }
        lines.append(json.dumps(rec).encode())
    for tid, ts, _, user in good:
        lines.append(
            json.dumps(
                {
                    "trace_id": tid,
                    "rating": "up",
                    "user_id": user,
                    "ts": (ts.isoformat() + "Z") if ts else None,
                }
            ).encode()
        )
    # The seed's simple format, on a trace the store has never seen: kept and flagged.
    lines.append(
        json.dumps(
            {
                "trace_id": "trace-not-in-store",
                "rating": "down",
                "comment": "Wrong price quoted",
                "ts": "2026-10-29T12:00:00Z",
            }
        ).encode()
    )
    if lines:
        lines.append(lines[0])  # a client retry: lands once
    bad = [
        b'{"trace_id": "cut-off-mid-write", "rat',
        json.dumps({"rating": "down", "comment": "which answer?"}).encode(),
        json.dumps({"trace_id": "x", "rating": "meh"}).encode(),
        json.dumps({"trace_id": "x", "rating": "down", "comment": "!" * 20_000}).encode(),
        b'{"trace_id": "\xff\xfe", "rating": "down"}',
    ]
    for j, b in enumerate(bad):  # spread through the file
        lines.insert(min(len(lines), 3 + 4 * j), b)
    expected = {
        "thumbs_down": len(flawed) + 1,
        "thumbs_up": len(good),
        "bad_lines": len(bad),
        "repeated": 1,
    }
    return b"\n".join(lines) + b"\n", expected


def _execute(request, cwd: Path) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        json.dump(request.run_config, fh)  # JSON is YAML
        cfg = fh.name
    tags = {**request.tags, "dagster/run_key": request.run_key}
    try:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "dagster",
                "job",
                "execute",
                "-m",
                "eval_pipeline.definitions",
                "-j",
                "feedback_ingestion_job",
                "-c",
                cfg,
                "--tags",
                json.dumps(tags),
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            timeout=600,
        )
    finally:
        os.unlink(cfg)


def run(summary: dict) -> None:
    db = settings.duckdb_path()
    inbox = settings.feedback_inbox()
    out: dict = {"inbox": str(inbox)}
    summary["feedback"] = out
    print("\n== Feedback: thumbs-downs -> candidates for review ==")
    if not db.exists():
        out["error"] = f"no store at {db}: the drift backfill must run first"
        print(out["error"])
        return
    flawed, good = _pick_traces(db)
    if not flawed:
        out["error"] = "no regressed billing traces in raw_traces"
        print(out["error"])
        return
    data, expected = build_file(flawed, good)
    out.update(file=FILE_NAME, **expected)
    target = inbox / FILE_NAME
    archived = inbox / "processed" / FILE_NAME
    if not (archived.exists() and archived.read_bytes() == data):
        inbox.mkdir(parents=True, exist_ok=True)
        tmp = inbox / f".{FILE_NAME}.tmp"  # invisible to the sensor until renamed
        tmp.write_bytes(data)
        tmp.replace(target)

    # Two sensor ticks, as the daemon would do them: the file is complete once unchanged.
    runs = []
    with dg.DagsterInstance.get() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        first = feedback_inbox_sensor(ctx)
        requests = list(first.run_requests or [])
        if not requests:
            second = feedback_inbox_sensor(
                dg.build_sensor_context(instance=instance, cursor=first.cursor)
            )
            requests = list(second.run_requests or [])
            if not requests and second.skip_reason:
                print(f"sensor: {second.skip_reason.skip_message}")
    for req in requests:
        proc = _execute(req, settings.PROJECT_ROOT)
        runs.append({"run_key": req.run_key, "ok": proc.returncode == 0})
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
    out["runs"] = runs

    with store.connect(db, read_only=True) as conn:
        rows = conn.execute(
            "SELECT line_no, reason FROM feedback_rejects WHERE file_name = ? ORDER BY line_no",
            [FILE_NAME],
        ).fetchall()
        stored = conn.execute("SELECT rating, count(*) FROM feedback GROUP BY rating").fetchall()
        counts = candidates.counts(conn)
        no_trace = conn.execute(
            "SELECT count(*) FROM eval_candidates WHERE status = 'pending' AND NOT trace_found"
        ).fetchall()[0][0]
    out["records_stored"] = dict(stored)
    out["rejected_lines"] = [{"line": n, "reason": r} for n, r in rows]
    out["candidates"] = counts
    out["pending_candidates"] = counts["pending"]
    out["pending_without_trace"] = int(no_trace)
    print(
        f"feedback file {FILE_NAME}: {expected['thumbs_down']} thumbs-down, "
        f"{expected['thumbs_up']} thumbs-up, {expected['repeated']} repeated record, "
        f"{expected['bad_lines']} bad lines"
    )
    print(
        f"ingestion runs launched by the inbox sensor: {len(runs)} "
        f"({sum(r['ok'] for r in runs)} succeeded)"
    )
    print(f"records stored: {dict(stored)}; rejected lines: {len(rows)}")
    for n, r in rows:
        print(f"  line {n}: {r}")
    print(
        f"candidates pending review: {counts['pending']} "
        f"({no_trace} with no trace in the store, flagged)"
    )
    print("review them with: .venv/bin/eval-pipeline review   (or --export FILE / --import FILE)")


if __name__ == "__main__":
    s: dict = {}
    run(s)
    print(json.dumps(s, indent=2, default=str))
