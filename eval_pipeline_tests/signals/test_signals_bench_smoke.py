"""The signals benchmark and evaluation still run (small): `make bench` must not rot."""

from __future__ import annotations

import importlib

import pytest

from bench import signals_eval


@pytest.mark.slow
def test_bench_signals_runs_on_a_small_day(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_SIGNALS_TRACES", "10000")
    import bench.bench_signals as bench_signals

    bench_signals = importlib.reload(bench_signals)
    bench_signals.main()
    out = capsys.readouterr().out
    assert "(10,000 traces of 10,000" in out
    assert "ratio     signals / bare read_json:" in out


@pytest.mark.slow
def test_signals_eval_pages_a_refusal_surge_on_its_first_day(capsys):
    assert signals_eval.main(["--seeds", "1", "--kinds", "refusal_surge"]) == 0
    out = capsys.readouterr().out
    assert "refusal_surge" in out and "1/1" in out
