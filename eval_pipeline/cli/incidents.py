"""`eval-pipeline incidents`: list, show, acknowledge and resolve drift incidents.

Acknowledgements and hand resolutions are recorded in ``incident_actions`` (who, when,
why) and applied to the incident row at once; the drift_incidents asset replays them on
every run, so they survive re-runs and backfills. A hand resolution takes effect on the
latest day the store has a verdict for (or --day); the resolve notification goes out on
the next run of the asset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.drift.history import incident_rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incidents", help="list, show, acknowledge or resolve drift incidents")
    p.add_argument("--db", type=Path, default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.set_defaults(func=list_cmd, status="all", json=False)
    acts = p.add_subparsers(dest="incidents_action", metavar="ACTION")
    ls = acts.add_parser("list", help="open and recent incidents (default)")
    ls.add_argument("--status", choices=["open", "resolved", "all"], default="all")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=list_cmd)
    show = acts.add_parser("show", help="one incident with its day-by-day verdicts")
    show.add_argument("incident_id")
    show.set_defaults(func=show_cmd)
    for name, helptext in (("ack", "acknowledge"), ("resolve", "resolve by hand")):
        a = acts.add_parser(name, help=helptext)
        a.add_argument("incident_id")
        a.add_argument("--by", default=None, help="who (default: the OS user)")
        a.add_argument("--reason", default="", help="why (required to resolve)")
        a.add_argument("--day", type=dt.date.fromisoformat, default=None)
        a.set_defaults(func=act_cmd, action_name=name)


def _path(args) -> Path | None:
    path = args.db or settings.duckdb_path()
    if not path.exists():
        print(f"no store at {path}: run the pipeline first (make demo)")
        return None
    return path


def list_cmd(args: argparse.Namespace) -> int:
    path = _path(args)
    if path is None:
        return 2
    with store.connect(path, read_only=True) as conn:
        rows = incident_rows(conn, None if args.status == "all" else args.status)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no incidents")
        return 0
    print(
        f"{'incident':<17}{'status':<9}{'opened':<12}{'resolved':<12}{'drop':>6}  segments / cause"
    )
    for r in rows:
        segs = ", ".join(r["segments"])
        ack = f" [ack {r['acknowledged_by']}]" if r["acknowledged_by"] else ""
        print(
            f"{r['incident_id']:<17}{r['status']:<9}{r['opened_on'][:10]:<12}"
            f"{(r['resolved_on'] or 'open')[:10]:<12}{r['peak_drop']:>6.2f}  {segs}{ack}"
        )
        print(f"{'':<17}{r['cause']}")
    return 0


def show_cmd(args: argparse.Namespace) -> int:
    path = _path(args)
    if path is None:
        return 2
    with store.connect(path, read_only=True) as conn:
        row = next((r for r in incident_rows(conn) if r["incident_id"] == args.incident_id), None)
        if row is None:
            print(f"no incident {args.incident_id!r}")
            return 1
        days = conn.execute(
            "SELECT partition_date, segment, state, n, mean_score, reference_mean, drop_points, "
            "z, cusum FROM drift_day_states WHERE incident_id = ? ORDER BY 1, 2",
            [args.incident_id],
        ).fetchall()
        actions = conn.execute(
            "SELECT action, day, actor, reason, acted_at FROM incident_actions "
            "WHERE incident_id = ? ORDER BY acted_at",
            [args.incident_id],
        ).fetchall()
        sent = conn.execute(
            "SELECT event, channel, status, coalesce(reason, last_error, '') FROM notifications "
            "WHERE incident_id = ? ORDER BY day, event, channel",
            [args.incident_id],
        ).fetchall()
    for key in (
        "incident_id", "status", "segments", "opened_on", "detected_on", "last_degraded_on",
        "resolved_on", "resolution", "resolved_by", "detector", "reference_mean",
        "current_mean", "peak_drop", "current_drop", "cause", "acknowledged_by",
        "acknowledged_at",
    ):  # fmt: skip
        print(f"{key:<17}{row[key]}")
    print("\nday         segment    state        n   mean    ref   drop      z  CUSUM")
    for day, seg, state, n, mean, ref, drop, z, cusum in days:
        f = lambda x, s=".2f": "–" if x is None else format(x, s)  # noqa: E731
        print(
            f"{day!s:<12}{seg:<11}{state:<11}{n:>4}{f(mean):>7}{f(ref):>7}{f(drop, '+.2f'):>7}"
            f"{f(z):>7}{f(cusum, '.1f'):>7}"
        )
    for action, day, actor, reason, at in actions:
        print(f"action: {action} on {day} by {actor} at {at}: {reason}")
    for event, channel, status, why in sent:
        print(f"notification: {event} via {channel}: {status} {why}")
    return 0


def act_cmd(args: argparse.Namespace) -> int:
    path = _path(args)
    if path is None:
        return 2
    by = args.by or getpass.getuser()
    reason = args.reason.strip()
    if args.action_name == "resolve" and not reason:
        print("resolving by hand needs a reason (--reason)")
        return 2
    with store.connect(path) as conn:
        row = conn.execute(
            "SELECT status, opened_on FROM drift_incidents WHERE incident_id = ?",
            [args.incident_id],
        ).fetchone()
        if row is None:
            print(f"no incident {args.incident_id!r}")
            return 1
        status, opened_on = row
        if args.action_name == "resolve" and status == "resolved":
            print(f"{args.incident_id} is already resolved")
            return 1
        day = (
            args.day
            or conn.execute("SELECT max(partition_date) FROM drift_day_states").fetchone()[0]
        )
        if day < opened_on:
            print(f"--day {day} is before the incident opened ({opened_on})")
            return 2
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        conn.execute(
            "INSERT INTO incident_actions VALUES (?, ?, ?, ?, ?, ?)",
            [args.incident_id, args.action_name, day, by, reason, now],
        )
        if args.action_name == "ack":
            conn.execute(
                "UPDATE drift_incidents SET acknowledged_by = coalesce(acknowledged_by, ?), "
                "acknowledged_at = coalesce(acknowledged_at, ?) WHERE incident_id = ?",
                [by, now, args.incident_id],
            )
        else:
            conn.execute(
                "UPDATE drift_incidents SET status = 'resolved', resolved_on = ?, "
                "resolution = 'manual', resolved_by = ? WHERE incident_id = ?",
                [day, by, args.incident_id],
            )
    print(f"{args.incident_id}: {args.action_name} recorded on {day} by {by}")
    return 0
