"""`eval-pipeline health`: the heartbeat a monitoring system can poll.

Prints the last day with a drift report and the run that made it, and exits 1 when the
pipeline is stale (a day due by the freshness deadline has no report), 0 when it is fresh,
2 when it cannot tell (no Dagster home). It reads the Dagster instance (what the UI shows),
so it answers even when the daemon is down, which is the point: the watcher is watched from
outside. ``eval-pipeline health serve`` answers the same on http://127.0.0.1:PORT/health
(200 fresh, 503 stale) for monitors that poll HTTP.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.health import freshness
from eval_pipeline.core.health import incidents as health

REPORT_ASSET = "drift_report"
FIRST_PARTITION = dt.date(2026, 1, 1)  # the daily partitions' start (defs/partitions.py)


class NoInstance(RuntimeError):
    """No Dagster home to read: the heartbeat cannot tell."""


def _utc(value: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "health", help="heartbeat: the last day with a drift report; exit 1 when stale"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--now",
        type=_utc,
        default=None,
        help="judge freshness as of this UTC time (ISO), e.g. to check the rule",
    )
    p.set_defaults(func=check_cmd)
    acts = p.add_subparsers(dest="health_action", metavar="ACTION")
    serve = acts.add_parser("serve", help="answer the heartbeat over HTTP on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.set_defaults(func=serve_cmd)


def _reported(now: dt.datetime) -> tuple[set[dt.date], tuple[str, dt.datetime] | None]:
    """Days with a drift report in the Dagster instance, and (run, when) of the newest."""
    if not os.environ.get("DAGSTER_HOME"):
        raise NoInstance("DAGSTER_HOME is not set: no Dagster instance to read")
    import dagster as dg  # only here: every other command starts without loading Dagster

    key = dg.AssetKey(REPORT_ASSET)
    with dg.DagsterInstance.get() as instance:
        days = set()
        for partition in instance.get_materialized_partitions(key):
            try:
                days.add(dt.date.fromisoformat(partition))
            except ValueError:
                continue
        if not days:
            return days, None
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[max(days).isoformat()]),
            limit=1,
        )
    if not result.records:
        return days, None
    record = result.records[0]
    when = dt.datetime.fromtimestamp(record.timestamp, dt.UTC).replace(tzinfo=None)
    return days, (record.run_id, when)


def _open_incidents() -> int | None:
    """Open health incidents, or None when the store cannot be read (busy or absent)."""
    path = settings.duckdb_path()
    if not path.exists():
        return None
    try:
        # No waiting on a writer's lock: the heartbeat answers now, "unknown" if busy.
        with store.connect(path, read_only=True, lock_wait=0) as conn:
            if not health.table_exists(conn):
                return 0
            return len(health.open_incidents(conn))
    except Exception:  # a locked or older store: the heartbeat still answers
        return None


def heartbeat(now: dt.datetime | None = None) -> freshness.Heartbeat:
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rule = freshness.FreshnessRule.from_env(first_day=FIRST_PARTITION)
    days, last_run = _reported(now)
    return freshness.heartbeat(rule, now, days, last_run, _open_incidents())


def check_cmd(args: argparse.Namespace) -> int:
    try:
        beat = heartbeat(args.now)
    except (NoInstance, ValueError) as exc:
        print(f"health: cannot tell: {exc}")
        return 2
    print(json.dumps(beat.as_json(), indent=2) if args.json else beat.text())
    return 1 if beat.stale else 0


def make_server(port: int) -> ThreadingHTTPServer:
    """The heartbeat over HTTP, bound to 127.0.0.1 only: GET /health (or /)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.split("?")[0] not in ("/", "/health"):
                self._answer(404, {"error": "not found; try /health"})
                return
            try:
                beat = heartbeat()
            except (NoInstance, ValueError) as exc:
                self._answer(500, {"status": "unknown", "error": str(exc)})
                return
            self._answer(503 if beat.stale else 200, beat.as_json())

        def _answer(self, status: int, body: dict) -> None:
            raw = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve_cmd(args: argparse.Namespace) -> int:
    server = make_server(args.port)
    print(f"heartbeat on http://127.0.0.1:{server.server_address[1]}/health (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
