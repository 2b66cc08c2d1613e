"""The OTLP benchmark still runs (on a few batches): `make bench` must not rot."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.slow
def test_bench_otlp_runs_small_and_loses_nothing(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_OTLP_SPANS", "1024")
    monkeypatch.setenv("BENCH_OTLP_LIVE_SPANS", "512")
    import bench.bench_otlp as bench_otlp

    bench_otlp = importlib.reload(bench_otlp)
    bench_otlp.main()
    out = capsys.readouterr().out
    assert "loss       sent 1,536, inbox lines 1,536, distinct spans 1,536: lost 0" in out
    assert "duplicated 0" in out and "LOSS" not in out
    assert "ratio      receiver spans/s / baseline lines/s:" in out
