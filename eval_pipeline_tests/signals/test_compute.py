"""Each signal's SQL on constructed days."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from eval_pipeline.core.signals.compute import ALL, compute_day, record_day
from eval_pipeline.core.signals.config import SignalsConfig
from eval_pipeline_tests.signals.signals_fixtures import DAY, add, fresh


def get(frame, signal, segment=ALL, key=""):
    m = frame[(frame.signal == signal) & (frame.segment == segment) & (frame.key == key)]
    assert len(m) == 1, (signal, segment, key, len(m))
    return m.iloc[0]


def test_empty_day_has_one_overall_row_per_signal_with_no_figures():
    conn = fresh()
    frame = compute_day(conn, DAY)
    assert set(frame.segment) == {ALL}
    refusal = get(frame, "refusal_rate")
    assert refusal.n == 0 and pd.isna(refusal.value)
    chars = get(frame, "answer_chars")
    assert chars.n == 0 and pd.isna(chars.value) and sum(chars.bins) == 0
    assert frame[frame.kind == "mix"].empty
    res = record_day(conn, DAY)
    assert res.n_traces == 0
    assert conn.execute("SELECT count(*) FROM trace_signals").fetchone()[0] == len(frame)


def test_rates_on_a_constructed_day():
    conn = fresh()
    add(conn, DAY, [
        {"answer": "I'm sorry, but I can't help with that.", "segment": "a"},
        {"answer": "Lo siento, pero no puedo ayudarte con eso.", "segment": "a"},
        {"answer": "Je ne peux pas répondre à cette question.", "segment": "a"},
        {"answer": "Es tut mir leid, aber ich kann Ihnen dabei nicht helfen.", "segment": "a"},
        {"answer": "Desculpe, mas não posso ajudar com isso.", "segment": "a"},
        {"answer": "   \n ", "segment": "a"},
        {"answer": "", "segment": "a"},
        {"answer": "Your balance is 20 EUR and", "segment": "b"},
        {"answer": "Your balance is 20 EUR.", "segment": "b", "metadata": {"error": True}},
        {"answer": "Done!", "segment": "b", "metadata": {"status": "ERROR"}},
        {"answer": "I can't wait to help you. Your balance is fine.", "segment": "b"},
        {"answer": "See the table:\n| a | b |", "segment": "b"},
    ])  # fmt: skip
    frame = compute_day(conn, DAY)
    assert get(frame, "refusal_rate").hits == 5
    assert get(frame, "refusal_rate", "a").hits == 5
    assert get(frame, "refusal_rate", "b").hits == 0
    assert get(frame, "empty_rate").hits == 2
    # "and" ends mid-sentence; blank answers are empty, not cut off; "|" ends a table row.
    assert get(frame, "cutoff_rate").hits == 1
    assert get(frame, "error_rate").hits == 2
    assert get(frame, "refusal_rate").n == 12
    assert get(frame, "refusal_rate").value == pytest.approx(5 / 12)


def test_a_segment_with_one_trace_and_all_null_latency():
    conn = fresh()
    add(conn, DAY, [{"answer": "Fine.", "segment": "big"}] * 4 + [
        {"answer": "One two three.", "segment": "solo", "query": "a b"}
    ])  # fmt: skip
    frame = compute_day(conn, DAY)
    solo_chars = get(frame, "answer_chars", "solo")
    assert solo_chars.n == 1 and solo_chars.value == 14 and solo_chars.p10 == 14
    assert get(frame, "answer_words", "solo").value == 3
    assert get(frame, "query_words", "solo").value == 2
    assert get(frame, "refusal_rate", "solo").n == 1
    assert get(frame, "segment_share", "solo", "solo").value == pytest.approx(0.2)
    for signal in ("latency_ms", "prompt_tokens", "completion_tokens", "cost_usd"):
        row = get(frame, signal)
        assert row.n == 0 and pd.isna(row.value) and pd.isna(row.p90) and sum(row.bins) == 0


def test_optional_figures_from_metadata_bad_values_left_out():
    conn = fresh()
    add(conn, DAY, [
        {"answer": "Ok.", "metadata": {"latency_ms": 100, "prompt_tokens": 10, "cost_usd": 0.001}},
        {"answer": "Ok.", "metadata": {"latency_ms": 300, "completion_tokens": 5}},
        {"answer": "Ok.", "metadata": {"latency_ms": "slow"}},
        {"answer": "Ok.", "metadata": {"latency_ms": -4}},
        {"answer": "Ok."},
    ])  # fmt: skip
    frame = compute_day(conn, DAY)
    lat = get(frame, "latency_ms")
    assert lat.n == 2 and lat.value == pytest.approx(200) and lat["mean"] == pytest.approx(200)
    assert sum(lat.bins) == 2
    assert get(frame, "prompt_tokens").n == 1
    assert get(frame, "completion_tokens").n == 1
    cost = get(frame, "cost_usd")
    assert cost.n == 1 and cost.value == pytest.approx(0.001)
    # Segment-less traces are the "(none)" segment.
    assert get(frame, "segment_share", "(none)", "(none)").value == 1.0


def test_mix_of_prompt_versions_and_models_overall_and_per_segment():
    conn = fresh()
    add(conn, DAY, [
        {"answer": "A.", "segment": "s1", "prompt_version": "v1", "model": "m1"},
        {"answer": "A.", "segment": "s1", "prompt_version": "v2", "model": "m1"},
        {"answer": "A.", "segment": "s2", "prompt_version": "v2", "model": None},
        {"answer": "A.", "segment": "s2", "prompt_version": None, "model": "m2"},
    ])  # fmt: skip
    frame = compute_day(conn, DAY)
    assert get(frame, "prompt_version_share", ALL, "v2").value == 0.5
    assert get(frame, "prompt_version_share", ALL, "(none)").hits == 1
    assert get(frame, "prompt_version_share", "s1", "v2").value == 0.5
    assert get(frame, "model_share", "s2", "m2").value == 0.5
    assert get(frame, "model_share", ALL, "(none)").hits == 1
    assert get(frame, "segment_share", "s2", "s2").n == 4


def test_rerun_replaces_the_day_and_other_days_stay():
    conn = fresh()
    other = DAY + dt.timedelta(days=1)
    add(conn, DAY, [{"answer": "A."}])
    add(conn, other, [{"answer": "B."}])
    record_day(conn, other)
    first = record_day(conn, DAY)
    again = record_day(conn, DAY)
    assert len(first.rows) == len(again.rows)
    n_day = conn.execute(
        "SELECT count(*) FROM trace_signals WHERE partition_date = ?", [DAY]
    ).fetchone()[0]
    assert n_day == len(first.rows)
    assert conn.execute(
        "SELECT count(*) FROM trace_signals WHERE partition_date = ?", [other]
    ).fetchone()[0]


def test_configured_patterns_and_metadata_keys_are_used():
    conn = fresh()
    add(conn, DAY, [
        {"answer": "Nope, computer says no.", "metadata": {"elapsed": 50}},
        {"answer": "I'm sorry, but I can't help with that."},
    ])  # fmt: skip
    cfg = SignalsConfig(
        refusal_patterns=(r"computer says no",),
        metadata_keys={"latency_ms": "elapsed", "prompt_tokens": "pt",
                       "completion_tokens": "ct", "cost_usd": "c", "error": "e", "status": "s"},
    )  # fmt: skip
    frame = compute_day(conn, DAY, cfg)
    assert get(frame, "refusal_rate").hits == 1
    assert get(frame, "latency_ms").value == 50
