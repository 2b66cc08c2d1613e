"""Fuzz the trace line parser: arbitrary bytes and JSON never crash the day, never lose a
good line, and every other non-blank line ends in trace_rejects with a reason."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval_pipeline.core import store
from eval_pipeline.core.sources.inbox import InboxSource, ingest_day

DAY = dt.date(2026, 10, 5)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
# Objects that look like traces but get one field wrong (or right) at random.
near_traces = st.fixed_dictionaries(
    {},
    optional={
        "trace_id": st.text(max_size=6) | json_values,
        "timestamp": st.sampled_from(["2026-10-05T01:00:00Z", "2026-10-06T01:00:00Z", 1791200000])
        | json_values,
        "user_query": st.text(max_size=10) | json_values,
        "assistant_response": st.text(max_size=10) | json_values,
        "segment": st.text(max_size=5) | json_values,
        "metadata": json_values,
    },
)
bad_line = st.one_of(
    st.binary(max_size=60),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_traces.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
).map(lambda b: b.replace(b"\n", b" "))
good_line = st.builds(
    lambda q, a, seg: {"user_query": q, "assistant_response": a, "segment": seg},
    st.text(max_size=30),
    st.text(max_size=30),
    st.none() | st.text(max_size=8),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.booleans(), good_line, bad_line), min_size=1, max_size=25),
    st.booleans(),
)
def test_arbitrary_lines_never_crash_lose_a_good_line_or_go_unexplained(rows, gzipped):
    # gzipped: the file goes through the Python streaming reader (as gzip files, files that
    # are not UTF-8 and big files with an oversize line do) instead of DuckDB's read_text.
    check_lines(rows, gzipped)


def check_lines(rows, gzipped: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        lines, good, bad_numbers = [], {}, []
        for i, (is_good, fields, bad) in enumerate(rows):
            if is_good:
                row = {"trace_id": f"good-{i}", "timestamp": f"2026-10-05T{i % 24:02d}:00:00Z"}
                row.update(fields)
                lines.append(json.dumps(row).encode())
                good[row["trace_id"]] = (row["user_query"], row["assistant_response"])
            else:
                lines.append(bad)
                # Lines that are only whitespace are blank lines: allowed and ignored.
                if bad.strip(b" \t\r"):
                    bad_numbers.append(i + 1)
        data = b"\n".join(lines) + b"\n"
        if gzipped:
            (inbox / "2026-10-05.jsonl.gz").write_bytes(gzip.compress(data))
        else:
            (inbox / "2026-10-05.jsonl").write_bytes(data)
        with store.connect(Path(tmp) / "t.duckdb") as conn:
            res = ingest_day(conn, InboxSource(inbox), DAY)
            ingested = {
                r[0]: (r[1], r[2])
                for r in conn.execute(
                    "SELECT trace_id, user_query, assistant_response FROM raw_traces"
                ).fetchall()
            }
            rejects = dict(conn.execute("SELECT line_no, reason FROM trace_rejects").fetchall())
        # Every good line landed, with its text intact.
        assert {k: ingested.get(k) for k in good} == good
        assert all(reason for reason in rejects.values())
        # Every bad line is either rejected with a reason or (by chance) a valid trace.
        for n in bad_numbers:
            assert n in rejects or res.rows_ingested > len(good), n
        assert res.rows_ingested + res.rows_rejected == res.rows_seen
