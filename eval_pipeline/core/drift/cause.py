"""What explains a drop: look inside the degraded traffic along the dimensions a trace
carries (prompt_version, model, configured metadata keys; and segment, for the overall row).

For one dimension, with w the share of traffic and μ the mean score of each value v,
the drop Δ = μ_ref - μ_cur splits exactly into

    mix    = -Σ_v (w_cur,v - w_ref,v) · μ_ref,v      (the traffic moved)
    within =  Σ_v  w_cur,v · (μ_ref,v - μ_cur,v)     (the same kind of traffic got worse)

(a value with no reference traffic, or less than half its current share there, takes the
overall reference mean as its μ_ref,v: it is new, or grew). A
value's share of the drop is its within term over Δ. Each value is tested with a
one-sided Mann-Whitney U test (scores are ordinal; no normality assumed, observations
assumed independent) against the other values of the dimension on the same days, so a
drop shared by all traffic points at no value; a value that is (nearly) all of today's
traffic has no such peers and is compared with the reference instead, but only when it
is new or grew by at least ``MIN_GROWTH`` (e.g. a prompt version rolled out to a whole
segment). The p-values of every
value of every dimension form one family, Holm-adjusted.

A value is named as the cause when its adjusted p < alpha, it explains at least
``min_share`` of the drop, and the dimension separates it from other traffic (a value
that is all of the traffic before and after explains nothing). A traffic-mix shift with no
quality change gives a value whose within term is about zero: never a cause. A value that
was always worse than its peers and did not get worse explains none of the drop either.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from eval_pipeline.core.stats import holm

MIN_VALUE_N = 5  # fewer current scores for a value: not tested
MIN_COMPARE_N = 10
MIN_GROWTH = 0.2  # a value that is (nearly) all of today's traffic must have grown this much


@dataclass(frozen=True)
class ValueFinding:
    dimension: str
    value: str
    share_cur: float
    share_ref: float
    mean_cur: float
    mean_compared: float
    compared_with: str  # "the reference" or "other values on the same days"
    first_day: dt.date | None
    within_share: float  # of the drop
    p_value: float
    p_adjusted: float | None = None


@dataclass(frozen=True)
class Cause:
    key: str | None  # "dimension=value", or None when nothing single explains the drop
    text: str
    drop: float | None = None
    mix: dict | None = None  # dimension -> mix term
    finding: ValueFinding | None = None


def _mw_less(x: np.ndarray, y: np.ndarray) -> float:
    if np.all(x == x[0]) and np.all(y == x[0]):
        return 1.0
    return float(stats.mannwhitneyu(x, y, alternative="less").pvalue)


def attribute(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    dimensions: list[str],
    *,
    where: str = "",
    alpha: float = 0.05,
    min_share: float = 0.5,
) -> Cause:
    """ref / cur: one row per judged trace, columns ``day``, ``score`` and the dimensions."""
    ref = ref.dropna(subset=["score"])
    cur = cur.dropna(subset=["score"])
    if len(ref) < MIN_COMPARE_N or len(cur) < MIN_COMPARE_N:
        return Cause(None, "not enough judged traces to look for a cause")
    mu_ref, mu_cur = float(ref["score"].mean()), float(cur["score"].mean())
    drop = mu_ref - mu_cur
    if drop <= 0:
        return Cause(None, "no drop to explain", drop=drop)
    findings: list[ValueFinding] = []
    mix_terms = {}
    for dim in dimensions:
        if dim not in cur.columns:
            continue
        r = ref[dim].fillna("(none)").astype(str) if dim in ref.columns else None
        c = cur[dim].fillna("(none)").astype(str)
        w_ref = r.value_counts(normalize=True) if r is not None else pd.Series(dtype=float)
        w_cur = c.value_counts(normalize=True)
        mix = 0.0
        for v in set(w_cur.index) | set(w_ref.index):
            grown = w_ref.get(v, 0.0) < w_cur.get(v, 0.0) / 2
            m_ref_v = mu_ref if grown else float(ref.loc[r == v, "score"].mean())
            mix -= (w_cur.get(v, 0.0) - w_ref.get(v, 0.0)) * m_ref_v
        mix_terms[dim] = mix
        for v, share in w_cur.items():
            mine = cur.loc[c == v]
            if len(mine) < MIN_VALUE_N:
                continue
            share_ref = float(w_ref.get(v, 0.0))
            ref_v = ref.loc[r == v, "score"] if r is not None else pd.Series(dtype=float)
            # A value that at least doubled its share is judged against the reference as a
            # whole: its few reference scores may already be the first days of the change.
            established = len(ref_v) >= MIN_COMPARE_N and share_ref >= share / 2
            m_ref_v = float(ref_v.mean()) if established else mu_ref
            m_cur_v = float(mine["score"].mean())
            same_days = cur["day"].isin(set(mine["day"])) & (c != v)
            others = cur.loc[same_days, "score"]
            if len(others) >= MIN_COMPARE_N:
                compared, label = others.to_numpy(float), "other values on the same days"
            elif share - share_ref >= MIN_GROWTH:
                compared, label = ref["score"].to_numpy(float), "the reference"
            else:
                continue  # the same traffic before and after: the dimension separates nothing
            within = share * (m_ref_v - m_cur_v)
            findings.append(
                ValueFinding(
                    dimension=dim,
                    value=str(v),
                    share_cur=float(share),
                    share_ref=share_ref,
                    mean_cur=m_cur_v,
                    mean_compared=float(np.mean(compared)),
                    compared_with=label,
                    first_day=min(mine["day"]) if "day" in mine.columns else None,
                    within_share=within / drop,
                    p_value=_mw_less(mine["score"].to_numpy(float), compared),
                )
            )
    adjusted = holm([f.p_value for f in findings])
    findings = [
        ValueFinding(**{**f.__dict__, "p_adjusted": p})
        for f, p in zip(findings, adjusted, strict=True)
    ]
    named = [
        f
        for f in findings
        if f.p_adjusted is not None
        and f.p_adjusted < alpha
        and f.within_share >= min_share
        and f.mean_cur < f.mean_compared
    ]
    if not named:
        return Cause(
            None,
            f"no single dimension explains it (looked at {', '.join(mix_terms) or 'nothing'})",
            drop=drop,
            mix=mix_terms,
        )
    # A segment is where the drop is, not what changed: other dimensions go first.
    best = max(named, key=lambda f: (f.dimension != "segment", f.within_share, -f.p_adjusted))
    since = f" since {best.first_day}" if best.first_day else ""
    new = " (new)" if best.share_ref == 0 else f" (was {best.share_ref:.0%})"
    text = (
        f"{best.dimension} {best.value}: {best.share_cur:.0%}{new} of {where or 'the'} traffic"
        f"{since}, mean {best.mean_cur:.2f} vs {best.mean_compared:.2f} for "
        f"{best.compared_with}, Mann-Whitney p={best.p_adjusted:.2g} (Holm over "
        f"{len(findings)} values); explains {min(best.within_share, 9.99):.0%} of the "
        f"{drop:.2f}-point drop"
    )
    return Cause(f"{best.dimension}={best.value}", text, drop=drop, mix=mix_terms, finding=best)
