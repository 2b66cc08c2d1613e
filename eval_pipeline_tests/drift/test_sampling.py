from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from eval_pipeline.core import store
from eval_pipeline.core.drift.sampling import SamplingConfig, allocate, sample_day
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


def test_floors_win_over_the_total():
    alloc = allocate({s: 100 for s in "abcdefghij"}, total=50, floor=10)
    assert set(alloc.values()) == {10}


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
