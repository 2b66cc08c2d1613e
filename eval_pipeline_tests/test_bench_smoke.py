"""The ingest benchmark still runs (on a tiny day): `make bench` must not rot."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.slow
def test_bench_ingest_runs_on_a_small_day(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_TRACES", "2000")
    import bench.bench_ingest as bench_ingest

    bench_ingest = importlib.reload(bench_ingest)
    bench_ingest.main()
    out = capsys.readouterr().out
    assert "2,000 ingested, 0 rejected, 200 sampled" in out
    assert "drift reports for all 365 days" in out
