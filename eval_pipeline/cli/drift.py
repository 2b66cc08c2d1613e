"""`eval-pipeline drift`: read the drift history and alerts from the store (read-only)."""

from __future__ import annotations

import argparse
import datetime as dt

from eval_pipeline import settings
from eval_pipeline.core import store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="show per-day drift reports and alerts from the store")
    p.add_argument("--db", default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.add_argument("--since", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
    p.add_argument("--segment", default="__all__", help="segment to show (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.db or settings.duckdb_path()
    if not path.exists() if hasattr(path, "exists") else False:
        print(f"no store at {path}: run the pipeline first (make demo)")
        return 2
    with store.connect(path, read_only=True) as conn:
        rows = conn.execute(
            "SELECT partition_date, n, mean_score, baseline_mean, delta, mean_p_adjusted, alert "
            "FROM drift_reports WHERE segment = ? AND partition_date >= coalesce(?, DATE '1970-01-01') "
            "ORDER BY partition_date",
            [args.segment, args.since],
        ).fetchall()
        alerts = conn.execute(
            "SELECT partition_date, segment, delta, p_value FROM drift_alerts ORDER BY 1, 2"
        ).fetchall()
    print(f"{'day':<12}{'n':>5}{'mean':>7}{'base':>7}{'delta':>8}{'p(Holm)':>10}  alert")
    for day, n, mean, base, delta, p, alert in rows:
        fmt = lambda x, f: "–" if x is None else format(x, f)  # noqa: E731
        print(
            f"{day!s:<12}{n:>5}{fmt(mean, '.2f'):>7}{fmt(base, '.2f'):>7}"
            f"{fmt(delta, '+.2f'):>8}{fmt(p, '.3g'):>10}  {'ALERT' if alert else ''}"
        )
    print(f"\n{len(alerts)} alerts")
    for day, seg, delta, p in alerts:
        print(f"  {day} {seg}: delta {delta:+.2f}, p={p:.3g}")
    return 0
