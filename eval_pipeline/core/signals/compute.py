"""The day's signals, computed in DuckDB over ALL of the day's ``raw_traces``, overall and
per segment, written to ``trace_signals`` (the day replaced in one transaction).

One pass over the day computes every rate and distribution for the overall row and every
segment (GROUPING SETS); two small GROUP BYs compute the prompt_version and model mix.

- rates: refusal (configured patterns on the answer's first characters), empty answer
  (blank after trimming), cut-off answer (the last non-blank character cannot end a
  sentence; empty answers are not counted as cut off), error (the trace's metadata says so:
  ``error`` true, or ``status`` one of error/failed/failure);
- distributions, per trace: answer and query length in characters and words, and, where
  the trace's ``metadata`` carries them (the optional fields; Phoenix spans give latency and
  tokens), ``latency_ms``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd``: median,
  p10, p90, mean and the counts on the signal's fixed log binning. A trace without the
  figure (or with a non-numeric or negative one) is left out of that distribution;
- mix: each segment's share of the day, and each prompt_version's and model's share of the
  day and of each segment.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import duckdb
import pandas as pd

from eval_pipeline.core import retention, store
from eval_pipeline.core.signals.config import DEFAULT, DIST_SIGNALS, SignalsConfig

ALL = "__all__"
NO_VALUE = "(none)"
WHITESPACE = " \t\n\r\f\v"

# Words: one more than the spaces and line breaks of a non-blank text. A proxy (a double
# space counts twice), chosen because it is several times cheaper than a regex split at a
# million answers, and it is the same proxy every day, which is what a drift test needs.
_WORDS = (
    "CASE WHEN {blank} THEN 0 "
    "ELSE strlen({col}) - strlen(replace(replace({col}, ' ', ''), chr(10), '')) + 1 END"
)


# The metadata keys read, in the order of the list ``m`` the query extracts them into.
METADATA_FIELDS = (
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "error",
    "status",
)


def _dist_exprs(cfg: SignalsConfig) -> dict[str, str]:
    # A figure that is not a non-negative number is no figure at all (NULL), never a crash.
    exprs = {
        "answer_chars": "length(a)",
        # ``empty`` is the answer's blank test, computed once in the same SELECT.
        "answer_words": _WORDS.format(col="a", blank="empty"),
        "query_chars": "length(q)",
        "query_words": _WORDS.format(col="q", blank="regexp_full_match(q, '\\s*')"),
    }
    for i, key in enumerate(METADATA_FIELDS[:4], start=1):
        exprs[key] = (
            f"CASE WHEN TRY_CAST(m[{i}] AS DOUBLE) >= 0 THEN TRY_CAST(m[{i}] AS DOUBLE) END"
        )
    return exprs


def _bin_expr(cfg: SignalsConfig, signal: str) -> str:
    scale = cfg.bin_scale.get(signal, 1.0)
    # least() ignores NULLs, so a missing figure must stay NULL explicitly (no bin at all).
    return (
        f"CASE WHEN {signal} IS NOT NULL THEN least({cfg.n_bins - 1}, "
        f"floor(ln(1 + {signal} * {scale!r}) / {math.log(cfg.bin_base)!r}))::INTEGER END"
    )


def _literal(text: str) -> str:
    # The patterns are inlined as SQL literals, not bound as parameters: DuckDB compiles a
    # constant pattern once, a parameter once per row (ten times slower at a million rows).
    # They were validated as RE2 at load; quotes are doubled, so nothing escapes the literal.
    return "'" + text.replace("'", "''") + "'"


def signals_sql(cfg: SignalsConfig) -> str:
    """The one-pass query; its one parameter is the day."""
    exprs = _dist_exprs(cfg)
    meta = cfg.metadata_keys
    per_trace = ",\n            ".join(f"{e} AS {s}" for s, e in exprs.items())
    aggs = []
    for s in DIST_SIGNALS:
        aggs.append(
            f"count({s}) AS {s}__n, quantile_cont({s}, [0.1, 0.5, 0.9]) AS {s}__q, "
            f"avg({s}) AS {s}__mean, histogram({_bin_expr(cfg, s)}) AS {s}__bins"
        )
    aggs_sql = ",\n        ".join(aggs)
    # Key names were checked at load (letters, digits, '_'): safe inside the literal.
    paths = "[" + ", ".join(f"'$.{meta[k]}'" for k in METADATA_FIELDS) + "]"
    return f"""
    WITH v AS (
        SELECT coalesce(segment, '{NO_VALUE}') AS segment,
            regexp_matches(substr(a, 1, {int(cfg.refusal_window_chars)}), {_literal(cfg.refusal_regex())}) AS refusal,
            regexp_full_match(a, '\\s*') AS empty,
            regexp_matches(a, {_literal(cfg.cutoff_pattern)}) AS cutoff,
            coalesce(lower(m[5]) IN ('true', '1')
                OR lower(m[6]) IN ('error', 'failed', 'failure'), false) AS error,
            {per_trace}
        FROM (
            -- One JSON parse per trace for every metadata key (a list), not one per key.
            SELECT segment, assistant_response AS a, user_query AS q,
                json_extract_string(metadata, {paths}) AS m
            FROM raw_traces WHERE partition_date = ?
        )
    )
    SELECT CASE WHEN grouping(segment) = 1 THEN '{ALL}' ELSE segment END AS segment,
        count(*) AS n,
        count_if(refusal) AS refusal_rate, count_if(empty) AS empty_rate,
        count_if(cutoff) AS cutoff_rate, count_if(error) AS error_rate,
        {aggs_sql}
    FROM v
    GROUP BY GROUPING SETS ((), (segment))
    """


MIX_SQL = """
    SELECT CASE WHEN grouping(segment) = 1 THEN '{all}' ELSE segment END, value, count(*)
    FROM (
        SELECT coalesce(segment, '{none}') AS segment, coalesce({col}, '{none}') AS value
        FROM raw_traces WHERE partition_date = ?
    )
    GROUP BY GROUPING SETS ((value), (segment, value))
"""

COLUMNS = [
    "partition_date", "segment", "signal", "kind", "key", "n", "hits",
    "value", "p10", "p90", "mean", "bins",
]  # fmt: skip


@dataclass
class DaySignals:
    day: dt.date
    n_traces: int
    rows: pd.DataFrame  # the trace_signals rows written

    def get(self, signal: str, segment: str = ALL, key: str = "") -> dict | None:
        m = self.rows[
            (self.rows.signal == signal) & (self.rows.segment == segment) & (self.rows.key == key)
        ]
        return None if m.empty else m.iloc[0].to_dict()


def _nan_to_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def compute_day(
    conn: duckdb.DuckDBPyConnection, day: dt.date, cfg: SignalsConfig = DEFAULT
) -> pd.DataFrame:
    """The day's trace_signals rows (not written)."""
    res = conn.execute(signals_sql(cfg), [day])
    names = [d[0] for d in res.description]
    groups = [dict(zip(names, r, strict=True)) for r in res.fetchall()]
    rows: list[list] = []
    total = next((g["n"] for g in groups if g["segment"] == ALL), 0)
    for g in sorted(groups, key=lambda g: (g["segment"] != ALL, g["segment"])):
        seg, n = g["segment"], int(g["n"])
        for s in ("refusal_rate", "empty_rate", "cutoff_rate", "error_rate"):
            hits = int(g[s] or 0)
            rows.append([day, seg, s, "rate", "", n, hits, hits / n if n else None])
        for s in DIST_SIGNALS:
            count = int(g[f"{s}__n"])
            q = g[f"{s}__q"] or [None, None, None]
            bins = [0] * cfg.n_bins
            for b, c in (g[f"{s}__bins"] or {}).items():
                if b is not None:
                    bins[int(b)] = int(c)
            rows.append(
                [day, seg, s, "dist", "", count, None, _nan_to_none(q[1]),
                 _nan_to_none(q[0]), _nan_to_none(q[2]), _nan_to_none(g[f"{s}__mean"]), bins]
            )  # fmt: skip
        if seg != ALL:
            rows.append([day, seg, "segment_share", "mix", seg, total, n, n / total])
    for signal, col in (("prompt_version_share", "prompt_version"), ("model_share", "model")):
        sql = MIX_SQL.format(all=ALL, none=NO_VALUE, col=col)
        counts = conn.execute(sql, [day]).fetchall()
        denom = {g["segment"]: int(g["n"]) for g in groups}
        for seg, value, c in sorted(counts):
            rows.append([day, seg, signal, "mix", value, denom[seg], int(c), c / denom[seg]])
    for r in rows:
        r.extend([None] * (len(COLUMNS) - len(r)))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["hits"] = frame["hits"].astype("Int64")
    return frame


def record_day(
    conn: duckdb.DuckDBPyConnection, day: dt.date, cfg: SignalsConfig = DEFAULT
) -> DaySignals:
    """Compute the day's signals and replace the day in ``trace_signals``."""
    # Over a dropped day the query would see no traces and blank the kept signals.
    retention.require_raw_day(conn, day, "the signals")
    frame = compute_day(conn, day, cfg)
    if frame.empty:
        store.replace_rows(conn, "trace_signals", "partition_date = ?", [day])
    else:
        store.replace_rows(conn, "trace_signals", "partition_date = ?", [day], frame)
    n = frame[(frame.segment == ALL) & (frame.signal == "refusal_rate")]
    return DaySignals(day, int(n.n.iloc[0]) if not n.empty else 0, frame)


def load_rows(conn: duckdb.DuckDBPyConnection, days: list[dt.date] | tuple) -> pd.DataFrame:
    """trace_signals rows of the given days."""
    if not days:
        return pd.DataFrame(columns=COLUMNS)
    return conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM trace_signals WHERE partition_date IN "
        f"(SELECT unnest(?::DATE[]))",
        [list(days)],
    ).df()
