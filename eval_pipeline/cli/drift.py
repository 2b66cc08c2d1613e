"""`eval-pipeline drift`: the drift history and its incidents from the store (read-only);
`eval-pipeline drift rebaseline`: accept a segment's new normal, recorded with who and why."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core import store

ALL = "__all__"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="show per-day drift reports and incidents from the store")
    p.add_argument("--db", type=Path, default=None, help="DuckDB file (default: $EVAL_DUCKDB_PATH)")
    p.add_argument("--since", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
    p.add_argument(
        "--segment",
        default=ALL,
        help=f"one segment's rows and incidents (default: {ALL}, the overall row and every "
        "incident)",
    )
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="drift_action", metavar="ACTION")
    rb = actions.add_parser(
        "rebaseline",
        help="accept a segment's new normal: its reference restarts on --from (recorded)",
    )
    rb.add_argument("--segment", dest="rb_segment", required=True, help="segment (or __all__)")
    rb.add_argument("--from", dest="from_day", type=dt.date.fromisoformat, required=True)
    rb.add_argument("--reason", required=True, help="why this is the new normal")
    rb.add_argument("--by", default=None, help="who decided (default: the OS user)")
    rb.add_argument("--db", dest="rb_db", type=Path, default=None)
    rb.set_defaults(func=rebaseline)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _path(args: argparse.Namespace, attr: str = "db") -> Path:
    return getattr(args, attr, None) or settings.duckdb_path()


def run(args: argparse.Namespace) -> int:
    path = _path(args)
    if not path.exists():
        print(f"no store at {path}: run the pipeline first (make demo)")
        return 2
    since = args.since or dt.date(1970, 1, 1)
    with store.connect(path, read_only=True) as conn:
        rows = conn.execute(
            "SELECT r.partition_date, r.n, r.mean_score, coalesce(s.reference_mean, "
            "r.reference_mean), s.drop_points, s.cusum, s.state, coalesce(s.incident_id, "
            "r.incident_id) FROM drift_reports r LEFT JOIN drift_day_states s "
            "USING (partition_date, segment) WHERE r.segment = ? AND r.partition_date >= ? "
            "ORDER BY 1",
            [args.segment, since],
        ).fetchall()
        incidents = conn.execute(
            "SELECT incident_id, status, segments, opened_on, resolved_on, peak_drop, cause "
            "FROM drift_incidents WHERE coalesce(resolved_on, DATE '9999-12-31') >= ? "
            "AND (? = ? OR list_contains(segments, ?)) ORDER BY opened_on, incident_id",
            [since, args.segment, ALL, args.segment],
        ).fetchall()
    print(f"segment: {'all (overall row)' if args.segment == ALL else args.segment}")
    print(f"{'day':<12}{'n':>5}{'mean':>7}{'ref':>7}{'drop':>7}{'CUSUM':>7}  {'state':<11}incident")
    for day, n, mean, ref, drop, cusum, state, inc in rows:
        print(
            f"{day!s:<12}{n:>5}{_fmt(mean, '.2f'):>7}{_fmt(ref, '.2f'):>7}"
            f"{_fmt(drop, '+.2f'):>7}{_fmt(cusum, '.1f'):>7}  {state or '–':<11}{inc or ''}"
        )
    print(f"\n{len(incidents)} incidents")
    for iid, status, segs, opened, resolved, peak, cause in incidents:
        print(
            f"  {iid} {status:<8} {', '.join(segs)} {opened} -> {resolved or 'open'}: "
            f"-{peak:.2f}; {cause}"
        )
    return 0


def rebaseline(args: argparse.Namespace) -> int:
    path = _path(args, "rb_db")
    if not path.exists():
        print(f"no store at {path}: run the pipeline first (make demo)")
        return 2
    reason = args.reason.strip()
    if not reason:
        print("a rebaseline needs a reason (--reason)")
        return 2
    by = args.by or getpass.getuser()
    with store.connect(path) as conn:
        known = conn.execute(
            "SELECT count(*) FROM judge_scores WHERE segment = ? AND criterion = 'quality'",
            [args.rb_segment],
        ).fetchone()[0]
        if args.rb_segment != ALL and not known:
            print(f"unknown segment {args.rb_segment!r}: no judged trace has it")
            return 2
        exists = conn.execute(
            "SELECT count(*) FROM drift_rebaselines WHERE segment = ? AND from_day = ?",
            [args.rb_segment, args.from_day],
        ).fetchone()[0]
        if exists:
            print(f"{args.rb_segment} is already rebaselined from {args.from_day}")
            return 1
        conn.execute(
            "INSERT INTO drift_rebaselines VALUES (?, ?, ?, ?, now()::TIMESTAMP)",
            [args.rb_segment, args.from_day, reason, by],
        )
    print(
        f"recorded: {args.rb_segment} rebaselined from {args.from_day} by {by} ({reason}). "
        "It takes effect when drift_incidents next runs (any day of the drift job); an open "
        "incident of this segment then resolves as 'rebaseline'."
    )
    return 0
