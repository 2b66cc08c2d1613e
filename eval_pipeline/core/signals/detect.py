"""Drift tests on the signals that stay honest at a million traces a day.

At n = 1,000,000 every difference is "significant", so every test needs a significant
result AND an effect past a floor (``SignalsConfig``) before it fires:

- rates (refusal, empty, cut-off, error): Fisher's exact test, one-sided (today's rate
  higher than the reference's), on the 2x2 table of today's hits and misses against the
  reference days' pooled hits and misses; plus today - reference >= ``rate_abs_floor`` and
  today / reference >= ``rate_rel_floor``. Assumes independent traces; the day-to-day
  variation it ignores (weekday wobble) is what the floors absorb.
- a segment's share of the day: Fisher's exact test, one-sided (lower), with the share
  floors; prompt_version / model shares: two-sided, information only.
- distributions: Pearson's chi-square test of homogeneity on the fixed log binning (bins
  whose expected count today is below 5 are pooled into one cell, the test's usual
  condition), plus the population stability index on the same bins >= ``psi_floor``. No
  verdict when today or the reference has fewer than ``min_dist_n`` values.
- a ``prompt_version`` or ``model`` never seen on an earlier day: information, never a page.

Holm's correction runs over the whole day's family (every segment, every signal). The
reference is the pooled healthy days given by the caller: ``reference_days`` minus the
segment-days excluded (those that paged). ``trailing_reference`` picks the default: the
last ``n`` days before the day, each segment without the days it paged on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy import stats as sps

from eval_pipeline.core import store
from eval_pipeline.core.signals.compute import ALL, load_rows
from eval_pipeline.core.signals.config import (
    DEFAULT,
    NEW_VALUE_SIGNALS,
    RATE_SIGNALS,
    SignalsConfig,
)
from eval_pipeline.core.stats import holm

FISHER_GREATER = "Fisher exact, one-sided (higher)"
FISHER_LESS = "Fisher exact, one-sided (lower)"
FISHER_TWO = "Fisher exact, two-sided"
CHI2_PSI = "chi-square homogeneity on fixed bins + PSI"
NEW_VALUE = "never seen before"
PSI_EPS = 1e-4  # a share floor so an empty bin on one side gives a finite PSI


@dataclass
class Finding:
    """One test of one signal on one segment-day. ``fired`` findings are what the incident
    code takes: ``pages`` ones open or extend an incident, the others are shown."""

    day: dt.date
    segment: str  # "__all__" for the overall row (the incident engine's ALL)
    signal: str
    key: str  # mix: the value (segment, prompt_version, model); else ""
    kind: str  # rate | dist | mix | new_value
    test: str
    pages: bool
    fired: bool
    value: float | None
    reference: float | None
    effect: float | None
    p_value: float | None
    p_holm: float | None = None
    n: int = 0
    reference_n: int = 0
    reference_days: int = 0
    message: str = ""

    @property
    def detector(self) -> str:
        """The incident's detector name: ``signal:<signal>``."""
        return f"signal:{self.signal}"


def psi(today: Sequence[float], reference: Sequence[float]) -> float:
    """Population stability index of two count vectors on the same bins."""
    t = np.asarray(today, dtype=float)
    r = np.asarray(reference, dtype=float)
    pt = np.maximum(t / t.sum(), PSI_EPS)
    pr = np.maximum(r / r.sum(), PSI_EPS)
    return float(np.sum((pt - pr) * np.log(pt / pr)))


def chi2_bins(today: Sequence[float], reference: Sequence[float]) -> float:
    """p-value of Pearson's chi-square test that two binned samples share a distribution;
    bins with an expected count below 5 (today's side) are pooled into one cell."""
    t = np.asarray(today, dtype=float)
    r = np.asarray(reference, dtype=float)
    expected = (t + r) * t.sum() / (t.sum() + r.sum())
    big = expected >= 5
    cols_t = [*t[big], t[~big].sum()]
    cols_r = [*r[big], r[~big].sum()]
    table = np.array([cols_t, cols_r])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(sps.chi2_contingency(table, correction=False).pvalue)


def _fisher(a: int, n_a: int, b: int, n_b: int, alternative: str) -> float:
    table = [[a, n_a - a], [b, n_b - b]]
    return float(sps.fisher_exact(table, alternative=alternative).pvalue)


def _safe(name: str, limit: int = 60) -> str:
    """A segment / prompt_version / model value (trace content) made safe for one line of
    text or a markdown cell: no line breaks or pipes, bounded length."""
    text = " ".join(str(name).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(x: float | None, pct: bool) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2%}" if pct else f"{x:.4g}"


def test_day(
    today: pd.DataFrame,
    reference: pd.DataFrame,
    cfg: SignalsConfig = DEFAULT,
    *,
    seen_before: set[tuple[str, str]] | None = None,
    excluded: Iterable[tuple[dt.date, str]] = (),
) -> list[Finding]:
    """Every test of the day: ``today`` and ``reference`` are trace_signals rows (the
    reference: those of the reference days). ``excluded`` (day, segment) pairs are left
    out of that segment's reference. ``seen_before``: (signal, key) mix values of earlier
    days; None = no earlier day, so nothing is called new."""
    out: list[Finding] = []
    if today.empty:
        return out
    day = pd.Timestamp(today.partition_date.iloc[0]).date()
    total_today = int(today[(today.segment == ALL) & (today.signal == "refusal_rate")].n.sum() or 0)
    excl = {(pd.Timestamp(d).date(), s) for d, s in excluded}
    ref = reference
    if not ref.empty and excl:
        keep = [
            (pd.Timestamp(d).date(), s) not in excl
            for d, s in zip(ref.partition_date, ref.segment, strict=True)
        ]
        ref = ref[keep]
    ref_days = ref.groupby("segment").partition_date.nunique().to_dict() if not ref.empty else {}
    # A segment's share is its traces over the day's traces: the reference pools the days
    # left in for both the overall row and that segment (a day it was absent counts as 0).
    all_n = {}
    if not ref.empty:
        rows_all = ref[(ref.segment == ALL) & (ref.signal == "refusal_rate")]
        all_n = {
            pd.Timestamp(d).date(): int(n)
            for d, n in zip(rows_all.partition_date, rows_all.n, strict=True)
        }

    def share_totals(seg: str) -> dict[dt.date, int]:
        return {d: n for d, n in all_n.items() if (d, seg) not in excl}

    groups = (
        {k: g for k, g in ref.groupby(["segment", "signal", "key"], sort=False)}
        if not ref.empty
        else {}
    )
    empty = ref.iloc[0:0]

    def pool(seg: str, signal: str, key: str = "") -> pd.DataFrame:
        return groups.get((seg, signal, key), empty)

    if total_today == 0:
        return out
    for row in today.itertuples(index=False):
        seg, signal = row.segment, row.signal
        pages = cfg.pages_on(signal)
        if not pages and signal not in cfg.informs:
            continue
        if row.kind == "rate":
            r = pool(seg, signal)
            days = ref_days.get(seg, 0)
            if days < cfg.min_reference_days or row.n == 0:
                continue
            rn, rh = int(r.n.sum()), int(r.hits.sum())
            if rn == 0:
                continue
            rate, rref = row.hits / row.n, rh / rn
            p = _fisher(int(row.hits), int(row.n), rh, rn, "greater")
            past = rate - rref >= cfg.rate_abs_floor - 1e-12 and rate >= cfg.rate_rel_floor * rref
            out.append(
                Finding(day, seg, signal, "", "rate", FISHER_GREATER, pages, past, rate, rref,
                        rate - rref, p, n=int(row.n), reference_n=rn, reference_days=days)
            )  # fmt: skip
        elif row.kind == "dist":
            r = pool(seg, signal)
            days = ref_days.get(seg, 0)
            if days < cfg.min_reference_days or row.n < cfg.min_dist_n:
                continue
            if r.empty or int(r.n.sum()) < cfg.min_dist_n:
                continue
            t_bins = np.asarray(row.bins, dtype=float)
            r_bins = np.sum(np.stack([np.asarray(b, dtype=float) for b in r.bins]), axis=0)
            effect = psi(t_bins, r_bins)
            p = chi2_bins(t_bins, r_bins)
            rmed = float(np.median(r.value.dropna())) if r.value.notna().any() else None
            out.append(
                Finding(day, seg, signal, "", "dist", CHI2_PSI, pages, effect >= cfg.psi_floor,
                        row.value, rmed, effect, p, n=int(row.n), reference_n=int(r.n.sum()),
                        reference_days=days)
            )  # fmt: skip
        # segment_share rows come from the segments present today; absent ones below.
        elif row.kind == "mix":
            out.extend(_mix_test(day, row, pool, cfg, pages, ref_days, share_totals))
    # A segment of the reference with no trace today: its share fell to zero.
    if cfg.pages_on("segment_share") or "segment_share" in cfg.informs:
        present = set(today[today.signal == "segment_share"].key)
        ref_segs = set(ref[ref.signal == "segment_share"].key) if not ref.empty else set()
        for seg in sorted(ref_segs - present):
            row = pd.Series(
                dict(segment=seg, signal="segment_share", key=seg, n=total_today, hits=0,
                     value=0.0)
            )  # fmt: skip
            out.extend(
                _mix_test(day, row, pool, cfg, cfg.pages_on("segment_share"), ref_days,
                          share_totals)
            )  # fmt: skip
    for f, p_adj in zip(out, holm([f.p_value for f in out]), strict=True):
        f.p_holm = p_adj
        f.fired = bool(f.fired and p_adj is not None and p_adj < cfg.alpha)
        f.message = _message(f)
    if seen_before is not None:
        for signal, new_signal in zip(
            ("prompt_version_share", "model_share"), NEW_VALUE_SIGNALS, strict=True
        ):
            if new_signal not in cfg.informs:
                continue
            rows = today[(today.segment == ALL) & (today.signal == signal)]
            for row in rows.itertuples(index=False):
                if (signal, row.key) in seen_before:
                    continue
                f = Finding(day, ALL, new_signal, row.key, "new_value", NEW_VALUE, False, True,
                            row.value, None, None, None, n=int(row.n))  # fmt: skip
                f.message = (
                    f"new {new_signal.removeprefix('new_')} {_safe(row.key)!r}: "
                    f"{row.value:.1%} of the day's traces ({int(row.hits)} of {int(row.n)})"
                )
                out.append(f)
    return out


def _mix_test(day, row, pool, cfg, pages, ref_days, share_totals) -> list[Finding]:
    seg, signal, key = row.segment, row.signal, row.key
    if signal == "segment_share":
        totals = share_totals(key)
        days, rn = len(totals), sum(totals.values())
        r = pool(key, signal, key)  # a segment's share rows sit on the segment's own rows
        in_days = [pd.Timestamp(d).date() in totals for d in r.partition_date]
        rh = int(r.hits[in_days].sum()) if not r.empty else 0
    else:
        days = ref_days.get(seg, 0)
        r = pool(seg, signal, key)
        # The denominator: every trace of the segment on the same reference days.
        denom = pool(seg, "refusal_rate")
        rn = int(denom.n.sum()) if not denom.empty else 0
        rh = int(r.hits.sum()) if not r.empty else 0
    if days < cfg.min_reference_days or row.n == 0 or rn == 0:
        return []
    share, rshare = row.hits / row.n, rh / rn
    if signal == "segment_share":
        if rh == 0:
            return []  # a segment new since the reference: not a collapse
        p = _fisher(int(row.hits), int(row.n), rh, rn, "less")
        past = (
            rshare - share >= cfg.share_abs_floor - 1e-12 and share <= cfg.share_rel_floor * rshare
        )
        test = FISHER_LESS
    else:
        p = _fisher(int(row.hits), int(row.n), rh, rn, "two-sided")
        lo, hi = sorted((share, rshare))
        past = hi - lo >= cfg.share_abs_floor - 1e-12 and lo <= cfg.share_rel_floor * hi
        test = FISHER_TWO
    return [
        Finding(day, seg, signal, key, "mix", test, pages, past, share, rshare, share - rshare,
                p, n=int(row.n), reference_n=rn, reference_days=days)
    ]  # fmt: skip


def _message(f: Finding) -> str:
    where = "overall" if f.segment == ALL else _safe(f.segment)
    what = f"{f.signal}[{_safe(f.key)}]" if f.key and f.signal != "segment_share" else f.signal
    if f.signal == "segment_share":
        what = f"share of {_safe(f.key)}"
        where = "overall"
    pct = f.kind in ("rate", "mix")
    head = f"{where} {what}: {_fmt(f.value, pct)} vs reference {_fmt(f.reference, pct)}"
    if f.kind == "dist":
        head = (
            f"{where} {what}: median {_fmt(f.value, False)} vs reference median "
            f"{_fmt(f.reference, False)}, PSI {f.effect:.3f}"
        )
    verdict = "FIRED" if f.fired else "quiet"
    return (
        f"{head} (n={f.n:,}, reference {f.reference_n:,} over {f.reference_days} days; "
        f"{f.test} p={f.p_value:.2g}, Holm p={f.p_holm:.2g}): {verdict}"
    )


def trailing_reference(
    conn: duckdb.DuckDBPyConnection, day: dt.date, n_days: int = 14
) -> tuple[list[dt.date], set[tuple[dt.date, str]]]:
    """The default reference: the last ``n_days`` days before ``day`` that have signals,
    and the segment-days among them that paged (left out of their segment's reference;
    a paged overall row or share leaves the day out for every segment)."""
    days = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT partition_date FROM trace_signals WHERE partition_date < ? "
            "ORDER BY 1 DESC LIMIT ?",
            [day, n_days],
        ).fetchall()
    ]
    paged = conn.execute(
        "SELECT DISTINCT partition_date, segment, signal FROM trace_signal_tests "
        "WHERE fired AND pages AND partition_date IN (SELECT unnest(?::DATE[]))",
        [days],
    ).fetchall()
    segments = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT segment FROM trace_signals WHERE partition_date IN "
            "(SELECT unnest(?::DATE[]))",
            [days],
        ).fetchall()
    ]
    excluded: set[tuple[dt.date, str]] = set()
    for d, seg, signal in paged:
        if seg == ALL or signal == "segment_share":
            excluded.update((d, s) for s in segments)
        else:
            excluded.add((d, seg))
    return sorted(days), excluded


def seen_values(conn: duckdb.DuckDBPyConnection, day: dt.date) -> set[tuple[str, str]] | None:
    """(signal, value) of every prompt_version and model seen before ``day``; None when
    there is no earlier day."""
    if not conn.execute(
        "SELECT count(*) FROM trace_signals WHERE partition_date < ?", [day]
    ).fetchone()[0]:
        return None
    return set(
        conn.execute(
            "SELECT DISTINCT signal, key FROM trace_signals WHERE partition_date < ? AND "
            "segment = ? AND signal IN ('prompt_version_share', 'model_share')",
            [day, ALL],
        ).fetchall()
    )


def run_tests(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    cfg: SignalsConfig = DEFAULT,
    reference_days: Sequence[dt.date] | None = None,
    excluded: Iterable[tuple[dt.date, str]] = (),
    *,
    n_reference_days: int = 14,
    record: bool = True,
) -> list[Finding]:
    """Test the day's stored signals against the reference and (by default) replace the
    day's rows in ``trace_signal_tests``. ``reference_days`` None: the trailing default."""
    if reference_days is None:
        reference_days, excluded = trailing_reference(conn, day, n_reference_days)
    today = load_rows(conn, [day])
    reference = load_rows(conn, [d for d in reference_days if d != day])
    findings = test_day(
        today, reference, cfg, seen_before=seen_values(conn, day), excluded=excluded
    )
    if record:
        cols = [
            "day", "segment", "signal", "key", "kind", "test", "pages", "fired", "value",
            "reference", "effect", "p_value", "p_holm", "n", "reference_n", "reference_days",
            "message",
        ]  # fmt: skip
        frame = pd.DataFrame([asdict(f) for f in findings], columns=cols).rename(
            columns={"day": "partition_date"}
        )
        if frame.empty:
            store.replace_rows(conn, "trace_signal_tests", "partition_date = ?", [day])
        else:
            store.replace_rows(conn, "trace_signal_tests", "partition_date = ?", [day], frame)
    return findings


def signal_findings(
    conn: duckdb.DuckDBPyConnection,
    day: dt.date,
    reference_days: Sequence[dt.date] | None = None,
    excluded: Iterable[tuple[dt.date, str]] = (),
    cfg: SignalsConfig = DEFAULT,
) -> list[Finding]:
    """The day's fired findings (paging and informing) for the incident code, tested
    against ``reference_days`` (None: the trailing default) without writing anything."""
    return [f for f in run_tests(conn, day, cfg, reference_days, excluded, record=False) if f.fired]


def paging_alarms(
    conn: duckdb.DuckDBPyConnection,
) -> dict[tuple[dt.date, str], list[tuple[str, str]]]:
    """Every stored paging finding, as the incident engine takes them (``run_history``'s
    ``signal_alarms``): (day, segment) -> [(signal, figures)]. A segment's share collapse is
    filed under that segment."""
    out: dict[tuple[dt.date, str], list[tuple[str, str]]] = {}
    rows = conn.execute(
        "SELECT partition_date, segment, signal, message FROM trace_signal_tests "
        "WHERE fired AND pages ORDER BY 1, 2, 3"
    ).fetchall()
    for day, segment, signal, message in rows:
        out.setdefault((day, segment), []).append((signal, message.removesuffix(": FIRED")))
    return out


def markdown_table(findings: Sequence[Finding]) -> str:
    lines = [
        "| segment | signal | today | reference | effect | Holm p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in findings:
        pct = f.kind in ("rate", "mix")
        verdict = ("PAGE" if f.pages else "inform") if f.fired else "quiet"
        name = f"{f.signal} {_safe(f.key)}".strip()
        lines.append(
            f"| {'overall' if f.segment == ALL else _safe(f.segment)} | {name} | {_fmt(f.value, pct)} "
            f"| {_fmt(f.reference, pct)} | {_fmt(f.effect, False)} "
            f"| {_fmt(f.p_holm, False)} | {verdict} |"
        )
    return "\n".join(lines)


__all__ = ["RATE_SIGNALS", "Finding", "run_tests", "signal_findings", "test_day"]
