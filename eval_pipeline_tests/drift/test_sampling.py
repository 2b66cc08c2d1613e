from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.drift.sampling import OTHER_SEGMENTS, SamplingConfig, allocate, sample_day
from eval_pipeline.core.sources.inbox import InboxSource, ingest_day

DAY = dt.date(2026, 10, 5)


def test_allocate_is_proportional_with_a_floor():
    alloc = allocate({"big": 900, "mid": 90, "tiny": 10}, total=100, floor=20)
    assert alloc["tiny"] == 10  # all of it: fewer than the floor exist
    # Floors first, then the rest in proportion to what each segment has left.
    assert alloc == {"big": 66, "mid": 24, "tiny": 10}


def test_allocate_never_exceeds_a_segment_and_small_days_take_everything():
    assert allocate({"a": 5, "b": 3}, total=200, floor=20) == {"a": 5, "b": 3}
    assert allocate({}, total=200, floor=20) == {}


def test_floors_shrink_to_fit_the_total():
    # The total is the judge bill: ten floors of 10 cannot make it 100 when it is 50.
    alloc = allocate({s: 100 for s in "abcdefghij"}, total=50, floor=10)
    assert set(alloc.values()) == {5}


def test_allocate_is_deterministic_on_ties():
    counts = {"a": 100, "b": 100, "c": 100}
    assert allocate(counts, 10, 0) == allocate(dict(reversed(counts.items())), 10, 0)
    assert sum(allocate(counts, 10, 0).values()) == 10


def write_day(inbox, order_seed: int) -> None:
    rows = [
        {
            "trace_id": f"t{i:04d}",
            "timestamp": "2026-10-05T10:00:00Z",
            "user_query": "q",
            "assistant_response": "a.",
            "segment": "rare" if i % 50 == 7 else "billing" if i % 10 < 6 else "shipping",
        }
        for i in range(1000)
    ]
    random.Random(order_seed).shuffle(rows)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "2026-10-05.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def sample_ids(tmp_path, name: str, order_seed: int, config=None) -> list[str]:
    config = config or SamplingConfig()
    inbox = tmp_path / name
    write_day(inbox, order_seed)
    with store.connect(tmp_path / f"{name}.duckdb") as conn:
        ingest_day(conn, InboxSource(inbox), DAY)
        res = sample_day(conn, DAY, config)
        assert res.sampled == config.sample_size
        return [
            r[0]
            for r in conn.execute(
                "SELECT trace_id FROM sampled_traces ORDER BY trace_id"
            ).fetchall()
        ]


def test_same_inputs_give_the_same_sample_whatever_the_file_order(tmp_path):
    a = sample_ids(tmp_path, "a", order_seed=1)
    b = sample_ids(tmp_path, "b", order_seed=2)
    assert a == b
    c = sample_ids(tmp_path, "c", order_seed=1, config=SamplingConfig(seed="other"))
    assert c != a


def test_sample_respects_the_floor_and_resampling_is_idempotent(tmp_path):
    inbox = tmp_path / "inbox"
    write_day(inbox, 0)
    with store.connect(tmp_path / "s.duckdb") as conn:
        ingest_day(conn, InboxSource(inbox), DAY)
        for _ in range(2):
            res = sample_day(conn, DAY, SamplingConfig(sample_size=100, floor_per_segment=20))
        assert res.by_segment["rare"] == (20, 20)
        counts = dict(
            conn.execute("SELECT segment, count(*) FROM sampled_traces GROUP BY 1").fetchall()
        )
        assert counts["rare"] == 20 and sum(counts.values()) == 100
        assert (
            conn.execute("SELECT count(DISTINCT trace_id) FROM sampled_traces").fetchone()[0] == 100
        )


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        SamplingConfig(sample_size=0)


def seed_segments(conn, n_traces: int, n_segments: int) -> None:
    conn.execute(
        "INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, assistant_response, "
        "segment, source, source_ref) SELECT ?, 't' || i, TIMESTAMP '2026-10-05 10:00:00', 'q', "
        "'a.', 'seg-' || (i % ?), 'test', 'x' FROM range(?) r(i)",
        [DAY, n_segments, n_traces],
    )


def test_the_sample_size_is_a_hard_cap_whatever_the_segment_count(tmp_path):
    # 10,000 segments x a floor of 5 once sampled all 50,000 traces (250x the judge bill).
    with store.connect(tmp_path / "s.duckdb") as conn:
        seed_segments(conn, 50_000, 10_000)
        res = sample_day(conn, DAY, SamplingConfig(sample_size=200, floor_per_segment=5))
        assert res.sampled == 200
        assert conn.execute("SELECT count(*) FROM sampled_traces").fetchone()[0] == 200
        # One key per segment up to the configured count, the rest grouped, with a note.
        assert len(res.by_segment) <= SamplingConfig().max_segments + 1
        assert res.by_segment[OTHER_SEGMENTS][0] > 0
        assert any("grouped" in note for note in res.notes)


def test_allocate_never_exceeds_the_total():
    for n_segments, floor, total in ((10, 10, 50), (300, 20, 200), (7, 3, 5), (1000, 1, 10)):
        alloc = allocate({f"s{i}": 100 for i in range(n_segments)}, total=total, floor=floor)
        assert sum(alloc.values()) == total


def test_segments_beyond_the_count_share_one_stratum(tmp_path):
    with store.connect(tmp_path / "s.duckdb") as conn:
        seed_segments(conn, 1_000, 10)
        res = sample_day(
            conn, DAY, SamplingConfig(sample_size=100, floor_per_segment=5, max_segments=3)
        )
        assert res.sampled == 100
        assert len(res.by_segment) == 4
        assert res.by_segment[OTHER_SEGMENTS] == (700, res.by_segment[OTHER_SEGMENTS][1])
        segs = {
            r[0] for r in conn.execute("SELECT DISTINCT segment FROM sampled_traces").fetchall()
        }
        assert OTHER_SEGMENTS in segs and len(segs) == 4
