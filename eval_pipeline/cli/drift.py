"""`eval-pipeline drift`: read the drift history and alerts from the store (read-only)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import store

ALL = "__all__"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="show per-day drift reports and alerts from the store")
    p.add_argument("--db", type=Path, default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.add_argument("--since", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
    p.add_argument(
        "--segment",
        default=ALL,
        help=f"one segment's rows and alerts (default: {ALL}, the overall row and every alert)",
    )
    p.set_defaults(func=run)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    path = args.db or settings.duckdb_path()
    if not path.exists():
        print(f"no store at {path}: run the pipeline first (make demo)")
        return 2
    since = args.since or dt.date(1970, 1, 1)
    with store.connect(path, read_only=True) as conn:
        rows = conn.execute(
            "SELECT partition_date, n, mean_score, baseline_mean, delta, mean_p_adjusted, alert "
            "FROM drift_reports WHERE segment = ? AND partition_date >= ? ORDER BY partition_date",
            [args.segment, since],
        ).fetchall()
        alerts = conn.execute(
            "SELECT partition_date, segment, delta, p_value FROM drift_alerts "
            "WHERE partition_date >= ? AND (? = ? OR segment = ?) ORDER BY 1, 2",
            [since, args.segment, ALL, args.segment],
        ).fetchall()
    print(f"segment: {'all (overall row)' if args.segment == ALL else args.segment}")
    print(f"{'day':<12}{'n':>5}{'mean':>7}{'base':>7}{'delta':>8}{'p(Holm)':>10}  alert")
    for day, n, mean, base, delta, p, alert in rows:
        print(
            f"{day!s:<12}{n:>5}{_fmt(mean, '.2f'):>7}{_fmt(base, '.2f'):>7}"
            f"{_fmt(delta, '+.2f'):>8}{_fmt(p, '.3g'):>10}  {'ALERT' if alert else ''}"
        )
    print(f"\n{len(alerts)} alerts")
    for day, seg, delta, p in alerts:
        print(f"  {day} {seg}: delta {delta:+.2f}, p={p:.3g}")
    return 0
