"""The drift tests at their floors, Holm, the reference, new values, and the findings the
incident code takes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from eval_pipeline.core.signals import detect
from eval_pipeline.core.signals.compute import ALL, COLUMNS, record_day
from eval_pipeline.core.signals.config import DEFAULT, SignalsConfig
from eval_pipeline_tests.signals.signals_fixtures import DAY, add, fresh

REF_DAYS = [DAY - dt.timedelta(days=i) for i in range(1, 8)]
N_BINS = SignalsConfig().n_bins


def rate_rows(day, segment, signal, hits, n):
    return [day, segment, signal, "rate", "", n, hits, hits / n, None, None, None, None]


def frame(rows):
    return pd.DataFrame(rows, columns=COLUMNS)


def rate_case(today_rate, ref_rate=0.02, n=1_000_000, cfg=DEFAULT):
    """A rate at ``today_rate`` on n traces against 7 days at ``ref_rate`` (n each)."""
    today = frame([
        rate_rows(DAY, ALL, "refusal_rate", round(today_rate * n), n),
    ])  # fmt: skip
    ref = frame([rate_rows(d, ALL, "refusal_rate", round(ref_rate * n), n) for d in REF_DAYS])
    (f,) = [f for f in detect.test_day(today, ref, cfg) if f.signal == "refusal_rate"]
    return f


def test_rate_at_a_million_needs_the_absolute_floor():
    # 2.0% -> 3.99%: astronomically significant, but 1.99 points < the 2-point floor.
    below = rate_case(0.0399)
    assert below.p_holm < 1e-100 and not below.fired
    at = rate_case(0.04)
    assert at.fired and at.pages and at.effect == pytest.approx(0.02)


def test_rate_needs_the_relative_floor():
    # +2.5 points on a 10% base: significant and past the absolute floor, but only 1.25x.
    f = rate_case(0.125, ref_rate=0.10)
    assert f.p_holm < 1e-100 and not f.fired
    assert rate_case(0.20, ref_rate=0.10).fired


def test_rate_past_the_floors_but_not_significant_does_not_fire():
    # 2 refusals in 20 traces (10%) against 2%: past both floors, p ~ 0.06.
    f = rate_case(0.10, n=20)
    assert not f.fired and f.p_value > 0.01


def test_holm_runs_over_the_whole_family():
    cfg = SignalsConfig()
    rows, ref = [], []
    for i in range(30):
        seg = f"s{i}"
        rows.append(rate_rows(DAY, seg, "refusal_rate", 8, 100))
        ref += [rate_rows(d, seg, "refusal_rate", 2, 100) for d in REF_DAYS]
    rows.append(rate_rows(DAY, ALL, "refusal_rate", 240, 3000))
    ref += [rate_rows(d, ALL, "refusal_rate", 60, 3000) for d in REF_DAYS]
    out = [f for f in detect.test_day(frame(rows), frame(ref), cfg) if f.segment != ALL]
    assert len(out) == 30
    f = out[0]
    # Each segment alone would pass alpha; Holm over 31 tests does not let it.
    assert f.p_value < cfg.alpha and f.p_holm > cfg.alpha and not f.fired


def dist_row(day, segment, signal, bins, median):
    n = int(sum(bins))
    return [day, segment, signal, "dist", "", n, None, median, None, None, None, list(bins)]


def shifted_bins(shift_bins: float, n: int, sd_bins: float = 1.0) -> np.ndarray:
    """Expected counts of a normal (in bin units) centred at bin 10 + shift."""
    centres = np.arange(N_BINS)
    w = np.exp(-0.5 * ((centres - 10 - shift_bins) / sd_bins) ** 2)
    return np.round(w / w.sum() * n)


def dist_case(shift, cfg=DEFAULT, n=100_000):
    today = frame([
        rate_rows(DAY, ALL, "refusal_rate", 0, n),
        dist_row(DAY, ALL, "answer_chars", shifted_bins(shift, n), 100),
    ])  # fmt: skip
    ref = frame([dist_row(d, ALL, "answer_chars", shifted_bins(0, n), 100) for d in REF_DAYS])
    (f,) = [f for f in detect.test_day(today, ref, cfg) if f.signal == "answer_chars"]
    return f


def test_distribution_needs_the_psi_floor():
    small = dist_case(0.3)  # significant at this n, PSI well under 1
    assert small.p_holm < 1e-10 and small.effect < 1.0 and not small.fired
    big = dist_case(1.5)
    assert big.effect >= 1.0 and big.fired and big.pages
    # Exactly at the floor: configure the floor to the measured PSI.
    cfg = SignalsConfig(psi_floor=small.effect)
    assert dist_case(0.3, cfg).fired


def test_distribution_needs_enough_values():
    cfg = SignalsConfig(min_dist_n=100)
    today = frame([
        rate_rows(DAY, ALL, "refusal_rate", 0, 99),
        dist_row(DAY, ALL, "answer_chars", shifted_bins(3, 99), 100),
    ])  # fmt: skip
    ref = frame([dist_row(d, ALL, "answer_chars", shifted_bins(0, 1000), 100) for d in REF_DAYS])
    assert not [f for f in detect.test_day(today, ref, cfg) if f.kind == "dist"]


def test_psi_and_chi_square_helpers():
    a = np.array([50, 30, 20, 0])
    assert detect.psi(a, a) == pytest.approx(0.0)
    assert detect.psi(a, [20, 30, 50, 0]) > 0.5
    assert detect.chi2_bins([500, 500], [5000, 5000]) == pytest.approx(1.0)
    assert detect.chi2_bins([900, 100], [5000, 5000]) < 1e-50


def share_rows(day, counts: dict[str, int]):
    total = sum(counts.values())
    rows = [rate_rows(day, ALL, "refusal_rate", 0, total)]
    for seg, c in counts.items():
        if c:
            rows.append([day, seg, "segment_share", "mix", seg, total, c, c / total,
                         None, None, None, None])  # fmt: skip
    return rows


def test_segment_share_collapse_and_a_missing_segment_page():
    ref = frame([r for d in REF_DAYS for r in share_rows(d, {"a": 8000, "b": 2000})])
    half = frame(share_rows(DAY, {"a": 9000, "b": 1000}))  # b: 20% -> 10%: at the floor
    (f,) = [f for f in detect.test_day(half, ref) if f.key == "b"]
    assert f.key == "b" and f.fired and f.pages
    mild = frame(share_rows(DAY, {"a": 8400, "b": 1600}))  # 20% -> 16%: wobble
    assert not any(f.fired for f in detect.test_day(mild, ref))
    gone = frame(share_rows(DAY, {"a": 10000, "b": 0}))
    (f,) = [f for f in detect.test_day(gone, ref) if f.key == "b"]
    assert f.key == "b" and f.value == 0 and f.fired


def test_thin_reference_gives_no_verdict():
    cfg = SignalsConfig(min_reference_days=3)
    today = frame([rate_rows(DAY, ALL, "refusal_rate", 500, 1000)])
    ref = frame([rate_rows(d, ALL, "refusal_rate", 10, 1000) for d in REF_DAYS[:2]])
    assert detect.test_day(today, ref, cfg) == []


def test_excluded_segment_days_stay_out_of_the_reference():
    today = frame([
        rate_rows(DAY, ALL, "refusal_rate", 0, 1000),
        rate_rows(DAY, "s", "refusal_rate", 50, 1000),
    ])  # fmt: skip
    # Three healthy days at 1% and four broken ones at 5%: with the broken days excluded,
    # today's 5% is a surge; with them in the reference, it is not.
    ref = frame(
        [rate_rows(d, "s", "refusal_rate", 10, 1000) for d in REF_DAYS[:3]]
        + [rate_rows(d, "s", "refusal_rate", 50, 1000) for d in REF_DAYS[3:]]
    )
    (mixed,) = detect.test_day(today, ref)
    assert mixed.segment == "s" and not mixed.fired
    (clean,) = detect.test_day(today, ref, excluded=[(d, "s") for d in REF_DAYS[3:]])
    assert clean.fired and clean.reference == pytest.approx(0.01)


def test_a_new_prompt_version_informs_and_never_pages():
    conn = fresh()
    for d in REF_DAYS:
        add(conn, d, [{"answer": "Fine.", "prompt_version": "v1"}] * 50)
        record_day(conn, d)
    add(conn, DAY, [{"answer": "Fine.", "prompt_version": "v1"}] * 25
        + [{"answer": "Fine.", "prompt_version": "v2", "model": "m9"}] * 25)  # fmt: skip
    record_day(conn, DAY)
    findings = detect.signal_findings(conn, DAY)
    new = {(f.signal, f.key) for f in findings if f.kind == "new_value"}
    assert new == {("new_prompt_version", "v2"), ("new_model", "m9")}
    assert not any(f.pages for f in findings)
    assert any(f.signal == "prompt_version_share" and f.key == "v2" for f in findings)


def test_run_tests_records_and_the_trailing_reference_skips_paged_days():
    conn = fresh()
    days = sorted(REF_DAYS) + [DAY]
    for i, d in enumerate(days):
        broken = i == 5  # one broken day inside the reference window
        refusals = 30 if broken else 1
        add(conn, d, [{"answer": "I'm sorry, but I can't help with that.", "segment": "s"}]
            * refusals + [{"answer": "Fine.", "segment": "s"}] * (100 - refusals))  # fmt: skip
        record_day(conn, d)
        findings = detect.run_tests(conn, d)
        fired = [f for f in findings if f.fired and f.pages and f.signal == "refusal_rate"]
        assert bool(fired) == broken, (d, [f.message for f in findings])
    stored = conn.execute(
        "SELECT partition_date, segment, signal FROM trace_signal_tests WHERE fired AND pages "
        "AND signal = 'refusal_rate' ORDER BY segment"
    ).fetchall()
    assert stored == [(days[5], ALL, "refusal_rate"), (days[5], "s", "refusal_rate")]
    ref_days, excluded = detect.trailing_reference(conn, DAY + dt.timedelta(days=1))
    assert days[5] in ref_days and (days[5], "s") in excluded


def test_findings_carry_what_the_incident_code_needs():
    f = rate_case(0.08)
    assert f.detector == "signal:refusal_rate" and f.segment == ALL
    assert "refusal_rate" in f.message and "8.00%" in f.message and "FIRED" in f.message
    assert dataclasses.asdict(f)["day"] == DAY


def test_trace_content_in_names_cannot_break_the_text_or_the_table():
    conn = fresh()
    for d in REF_DAYS:
        add(conn, d, [{"answer": "Fine.", "prompt_version": "v1"}] * 20)
        record_day(conn, d)
    evil = "v2 | <!here>\n| injected | row |" + "x" * 300
    add(conn, DAY, [{"answer": "Fine.", "prompt_version": evil, "segment": "a|b\nc"}] * 20)
    record_day(conn, DAY)
    findings = detect.run_tests(conn, DAY)
    new = [f for f in findings if f.signal == "new_prompt_version"]
    assert new and "\n" not in new[0].message and len(new[0].message) < 200
    table = detect.markdown_table(findings)
    assert all(line.count("|") == 8 for line in table.splitlines())


def test_a_segments_excluded_days_leave_its_share_reference_unbiased():
    ref = frame([r for d in REF_DAYS for r in share_rows(d, {"a": 8000, "b": 2000})])
    today = frame(share_rows(DAY, {"a": 8000, "b": 2000}))
    excluded = [(d, "b") for d in REF_DAYS[:3]]  # b paged on three days (say, refusals)
    (f,) = [f for f in detect.test_day(today, ref, excluded=excluded) if f.key == "b"]
    assert f.reference == pytest.approx(0.2) and f.reference_days == 4 and not f.fired
