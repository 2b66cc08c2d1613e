"""Drift: today's judge scores against a baseline, overall and per segment.

The statistics are plain functions of score arrays (scipy does the distributions):
- Mann-Whitney U, one-sided (today stochastically lower), because scores are ordinal;
  against a pinned baseline value, the one-sample Wilcoxon signed-rank test instead;
- a one-sided two-proportion z-test on the share of bad scores (<= 2).
An alert needs both a practical drop (mean at least ``min_drop`` points below baseline)
and significance (``p < alpha``). Either alone is noise or trivia. A day tests every
segment plus the overall mean, so the p-values are Holm-adjusted over that family: with six
tests a day at alpha 0.05 unadjusted, a clean month would page someone about once a week.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, replace

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from eval_pipeline.core.drift.weights import kish_n_eff, post_stratified, trace_weights
from eval_pipeline.core.stats import holm
from eval_pipeline.core.store import replace_rows

ALL_SEGMENTS = "__all__"
BAD_SCORE = 2


@dataclass(frozen=True)
class DriftConfig:
    baseline_days: int = 7
    min_baseline_n: int = 100  # about three days of a small segment
    min_n: int = 10
    min_drop: float = 0.2  # practical floor, in score points
    alpha: float = 0.05
    pinned_baseline: float | None = None  # e.g. the golden-set judge mean at deploy time
    # (judge name, model, rubric version) that produced the pinned value: a day scored by
    # another judge cannot be compared with it.
    pinned_judge: tuple[str, str | None, str] | None = None
    bad_score: int = BAD_SCORE  # a score at or below this is bad (a criterion's threshold)
    criterion: str = "quality"  # what the scores measure, named in the verdicts


@dataclass
class DriftRow:
    segment: str
    n: int
    n_failed: int
    failure_rate: float | None
    mean_score: float | None
    p10_score: float | None
    bad_share: float | None
    baseline_kind: str
    baseline_days: int | None
    baseline_n: int | None
    baseline_mean: float | None
    baseline_bad_share: float | None
    delta: float | None
    mean_p_value: float | None
    mean_p_adjusted: float | None
    bad_share_p_value: float | None
    alert: bool
    verdict: str


def two_proportion_p(bad_today: int, n_today: int, bad_base: int, n_base: int) -> float | None:
    """One-sided p that today's bad share is higher than the baseline's (pooled z-test)."""
    if n_today == 0 or n_base == 0:
        return None
    pooled = (bad_today + bad_base) / (n_today + n_base)
    if pooled in (0.0, 1.0):
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_today + 1 / n_base))
    z = (bad_today / n_today - bad_base / n_base) / se
    return float(stats.norm.sf(z))


def mean_drop_p(today: np.ndarray, baseline: np.ndarray) -> float | None:
    """One-sided Mann-Whitney U p-value that today's scores are lower than the baseline's."""
    if len(today) == 0 or len(baseline) == 0:
        return None
    if np.all(today == today[0]) and np.all(baseline == today[0]):
        return 1.0  # identical constant samples: no evidence of anything
    return float(stats.mannwhitneyu(today, baseline, alternative="less").pvalue)


@dataclass(frozen=True)
class Weighted:
    """Post-stratified figures of a weighted (budgeted) sample: ``weights.post_stratified``
    for the mean and its standard error, the weights N_h / n_h for the rest."""

    mean: float
    se: float
    p10: float
    bad_share: float
    n_eff: float

    @classmethod
    def of(cls, design: pd.DataFrame) -> Weighted | None:
        """design: ok judgments with columns stratum (unique per day), stratum_size, score."""
        if len(design) == 0:
            return None
        est = post_stratified(design)
        w = trace_weights(design)
        y = design["score"].to_numpy(dtype=float)
        order = np.argsort(y, kind="stable")
        cum = np.cumsum(w[order]) / w.sum()
        p10 = float(y[order][np.searchsorted(cum, 0.10 - 1e-12)])
        bad = float(w[y <= BAD_SCORE].sum() / w.sum())
        return cls(est.mean, est.se, p10, bad, kish_n_eff(w))


def weighted_drop_p(today: Weighted, base: Weighted) -> float:
    """One-sided z-test of the post-stratified means (today lower), each with its design
    standard error; assumes both means are close to normal (a rank test has no version
    for unequal-probability samples)."""
    se = math.sqrt(today.se**2 + base.se**2)
    if se == 0:
        return 1.0 if today.mean >= base.mean else 0.0
    return float(stats.norm.sf((base.mean - today.mean) / se))


def pinned_drop_p(today: np.ndarray, pinned: float) -> float | None:
    """One-sided Wilcoxon signed-rank p that today's scores sit below a pinned value."""
    diffs = today - pinned
    if len(diffs) == 0 or np.all(diffs == 0):
        return None if len(diffs) == 0 else 1.0
    return float(stats.wilcoxon(diffs, alternative="less", zero_method="wilcox").pvalue)


def compare(
    segment: str,
    today: np.ndarray,
    n_failed: int,
    baseline: np.ndarray | None,
    config: DriftConfig,
    today_design: pd.DataFrame | None = None,
    base_design: pd.DataFrame | None = None,
) -> DriftRow:
    """``today_design``/``base_design`` (a budgeted day: see ``Weighted.of``) make every
    figure and test weighted; without them the day is an equal-probability sample."""
    today = np.asarray(today, dtype=float)
    n = len(today)
    total = n + n_failed
    row = DriftRow(
        segment=segment,
        n=n,
        n_failed=n_failed,
        failure_rate=(n_failed / total) if total else None,
        mean_score=float(today.mean()) if n else None,
        p10_score=float(np.percentile(today, 10)) if n else None,
        bad_share=float((today <= config.bad_score).mean()) if n else None,
        baseline_kind="pinned" if config.pinned_baseline is not None else "trailing",
        baseline_days=None if config.pinned_baseline is not None else config.baseline_days,
        baseline_n=None,
        baseline_mean=None,
        baseline_bad_share=None,
        delta=None,
        mean_p_value=None,
        mean_p_adjusted=None,
        bad_share_p_value=None,
        alert=False,
        verdict="",
    )
    if config.pinned_baseline is not None:
        row.baseline_mean = config.pinned_baseline
        if n:
            row.mean_p_value = pinned_drop_p(today, config.pinned_baseline)
    elif baseline is not None and len(baseline):
        baseline = np.asarray(baseline, dtype=float)
        row.baseline_n = len(baseline)
        row.baseline_mean = float(baseline.mean())
        row.baseline_bad_share = float((baseline <= config.bad_score).mean())
        if n:
            row.mean_p_value = mean_drop_p(today, baseline)
            row.bad_share_p_value = two_proportion_p(
                int((today <= config.bad_score).sum()),
                n,
                int((baseline <= config.bad_score).sum()),
                len(baseline),
            )
    wt = Weighted.of(today_design) if today_design is not None else None
    if wt is not None:
        row.mean_score, row.p10_score, row.bad_share = wt.mean, wt.p10, wt.bad_share
        wb = Weighted.of(base_design) if base_design is not None else None
        if config.pinned_baseline is not None:
            pinned = Weighted(config.pinned_baseline, 0.0, 0.0, 0.0, 0.0)
            row.mean_p_value = weighted_drop_p(wt, pinned)
        elif wb is not None and config.pinned_baseline is None:
            row.baseline_mean, row.baseline_bad_share = wb.mean, wb.bad_share
            row.mean_p_value = weighted_drop_p(wt, wb)
            # The share test on Kish effective counts (the design effect of the weights).
            row.bad_share_p_value = two_proportion_p(
                round(wt.bad_share * wt.n_eff),
                max(round(wt.n_eff), 1),
                round(wb.bad_share * wb.n_eff),
                max(round(wb.n_eff), 1),
            )
    if n and row.baseline_mean is not None:
        row.delta = row.mean_score - row.baseline_mean
    row.mean_p_adjusted = row.mean_p_value
    row.alert, row.verdict = decide(row, config)
    return row


def decide(row: DriftRow, config: DriftConfig) -> tuple[bool, str]:
    """The alert rule, and the sentence that explains it."""
    if row.n < config.min_n:
        return False, f"not enough judged traces today ({row.n} < {config.min_n}): no verdict"
    if row.baseline_mean is None:
        return False, "no baseline yet: no verdict"
    if row.baseline_kind == "trailing" and (row.baseline_n or 0) < config.min_baseline_n:
        return False, (
            f"baseline too small ({row.baseline_n} < {config.min_baseline_n} scores): no verdict"
        )
    drop = -row.delta
    p = row.mean_p_adjusted
    significant = p is not None and p < config.alpha
    practical = drop >= config.min_drop - 1e-12
    figures = (
        f"mean {row.mean_score:.2f} vs baseline {row.baseline_mean:.2f} (delta {row.delta:+.2f}"
    )
    figures += f", Holm-adjusted p={p:.3g})" if p is not None else ")"
    if significant and practical:
        return True, f"{config.criterion} dropped: {figures}"
    if significant:
        return False, f"statistically lower but below the {config.min_drop} floor: {figures}"
    if practical:
        return False, f"lower but not significant at alpha={config.alpha}: {figures}"
    return False, f"no drop: {figures}"


def _design(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[(frame["state"] == "ok") & frame["stratum"].notna()]
    return pd.DataFrame(
        {
            "stratum": ok["partition_date"].astype(str) + " " + ok["stratum"].astype(str),
            "stratum_size": ok["stratum_size"].astype(float),
            "score": ok["score"].astype(float),
        }
    )


def drift_for_day(
    scores: pd.DataFrame, baseline_scores: pd.DataFrame, config: DriftConfig
) -> list[DriftRow]:
    """scores / baseline_scores: columns segment, state, score. One row per segment + overall.

    With columns stratum and stratum_size too (a budgeted day: see ``report_day``), the
    figures and tests are weighted; the baseline's strata are made unique per day."""
    rows = []
    weighted = "stratum" in scores.columns and scores["stratum"].notna().any()
    segments = sorted(set(scores["segment"]) | set(baseline_scores["segment"]))
    for seg in [ALL_SEGMENTS, *segments]:
        today = scores if seg == ALL_SEGMENTS else scores[scores["segment"] == seg]
        base = (
            baseline_scores
            if seg == ALL_SEGMENTS
            else baseline_scores[baseline_scores["segment"] == seg]
        )
        ok = today[today["state"] == "ok"]["score"].to_numpy(dtype=float)
        failed = int((today["state"] != "ok").sum())
        base_ok = base[base["state"] == "ok"]["score"].to_numpy(dtype=float)
        if seg != ALL_SEGMENTS and len(today) == 0:
            continue  # a segment seen only in the baseline has no row today
        designs = (None, None)
        if weighted:
            designs = (_design(today), _design(base))
        rows.append(compare(seg, ok, failed, base_ok, config, *designs))
    for row, adjusted in zip(rows, holm([r.mean_p_value for r in rows]), strict=True):
        row.mean_p_adjusted = adjusted
        row.alert, row.verdict = decide(row, config)
    return rows


@dataclass
class DriftResult:
    day: dt.date
    rows: list[DriftRow]
    judge_name: str | None
    rubric_version: str | None

    @property
    def overall(self) -> DriftRow | None:
        return next((r for r in self.rows if r.segment == ALL_SEGMENTS), None)

    @property
    def alerts(self) -> list[DriftRow]:
        return [r for r in self.rows if r.alert]


# A trace's stratum: its budgeted stratum (sample_strata), else its segment on a fixed day
# (sampled_traces: the fixed sampler is stratified by segment too), else none (unweighted).
_STRATUM = (
    "coalesce(ss.stratum, st.segment) AS stratum, "
    "coalesce(ss.stratum_size, st.stratum_size) AS stratum_size"
)
_STRATA_JOIN = (
    "LEFT JOIN sample_strata ss ON ss.partition_date = s.partition_date "
    "AND ss.trace_id = s.trace_id "
    "LEFT JOIN sampled_traces st ON st.partition_date = s.partition_date "
    "AND st.trace_id = s.trace_id"
)


def report_day(
    conn: duckdb.DuckDBPyConnection, day: dt.date, config: DriftConfig = DriftConfig()
) -> DriftResult:
    """Compute and store the day's drift report (of the quality criterion).

    The trailing baseline only uses scores from the same judge and rubric version as today,
    so switching judges never reads as drift.
    """
    scores = conn.execute(
        f"SELECT s.partition_date, s.segment, s.state, s.score, s.judge_name, s.judge_model, "
        f"s.rubric_version, {_STRATUM} FROM judge_scores s {_STRATA_JOIN} "
        "WHERE s.partition_date = ? AND s.criterion = 'quality'",
        [day],
    ).df()
    judge = (
        tuple(scores[["judge_name", "judge_model", "rubric_version"]].iloc[0])
        if len(scores)
        else (None, None, None)
    )
    judge = tuple(None if pd.isna(x) else x for x in judge)
    judge_name, judge_model, rubric = judge
    if config.pinned_judge and judge_name and judge != tuple(config.pinned_judge):
        raise ValueError(
            f"{day}: scored by {_judge_label(judge)} but the pinned baseline came from "
            f"{_judge_label(config.pinned_judge)}; scores of different judges are not comparable"
        )
    baseline = conn.execute(
        f"SELECT s.partition_date, s.segment, s.state, s.score, {_STRATUM} FROM judge_scores s "
        f"{_STRATA_JOIN} WHERE s.partition_date >= ? "
        "AND s.partition_date < ? AND judge_name = ? AND judge_model IS NOT DISTINCT FROM ? "
        "AND rubric_version = ? AND s.criterion = 'quality'",
        [day - dt.timedelta(days=config.baseline_days), day, judge_name, judge_model, rubric],
    ).df()
    if not conn.execute(
        "SELECT count(*) FROM sample_strata WHERE partition_date = ?", [day]
    ).fetchone()[0]:
        # A fixed day keeps its equal-probability figures and rank tests.
        scores = scores.drop(columns=["stratum", "stratum_size"])
    rows = drift_for_day(scores, baseline, config)
    frame = (
        pd.DataFrame([asdict(r) for r in rows])
        if rows
        else pd.DataFrame(columns=list(DriftRow.__dataclass_fields__))
    )
    frame.insert(0, "partition_date", day)
    frame["judge_name"] = judge_name
    frame["rubric_version"] = rubric
    replace_rows(conn, "drift_reports", "partition_date = ?", [day], frame=frame)
    return DriftResult(day, rows, judge_name, rubric)


def criterion_reports(
    conn: duckdb.DuckDBPyConnection, day: dt.date, config: DriftConfig = DriftConfig()
) -> dict[str, DriftResult]:
    """The day's drift report of every criterion other than quality that was judged that
    day, stored in drift_reports_criteria: the same tests as the quality report, against
    the criterion's own trailing baseline (same judge and criterion version), with its own
    bad threshold (from the day's accounting line; BAD_SCORE if unknown). Holm runs over
    each criterion's segments: a criterion is its own family, as it is its own series."""
    found = conn.execute(
        "SELECT s.criterion, any_value(a.bad_at_or_below) FROM judge_scores s "
        "LEFT JOIN judge_accounting_criteria a USING (partition_date, criterion) "
        "WHERE s.partition_date = ? AND s.criterion <> 'quality' GROUP BY 1 ORDER BY 1",
        [day],
    ).fetchall()
    out: dict[str, DriftResult] = {}
    frames = []
    for criterion, bad in found:
        cfg = replace(
            config,
            bad_score=BAD_SCORE if bad is None else int(bad),
            criterion=criterion,
            pinned_baseline=None,  # a pinned value is the golden set's quality mean
            pinned_judge=None,
        )
        scores = conn.execute(
            "SELECT segment, state, score, judge_name, judge_model, rubric_version "
            "FROM judge_scores WHERE partition_date = ? AND criterion = ?",
            [day, criterion],
        ).df()
        judge_name, judge_model, rubric = (
            None if pd.isna(x) else x
            for x in scores[["judge_name", "judge_model", "rubric_version"]].iloc[0]
        )
        baseline = conn.execute(
            "SELECT segment, state, score FROM judge_scores WHERE partition_date >= ? "
            "AND partition_date < ? AND criterion = ? AND judge_name = ? "
            "AND judge_model IS NOT DISTINCT FROM ? AND rubric_version = ?",
            [day - dt.timedelta(days=cfg.baseline_days), day, criterion, judge_name]
            + [judge_model, rubric],
        ).df()
        rows = drift_for_day(scores, baseline, cfg)
        out[criterion] = DriftResult(day, rows, judge_name, rubric)
        frame = pd.DataFrame([asdict(r) for r in rows])
        frame.insert(0, "partition_date", day)
        frame.insert(1, "criterion", criterion)
        frame["bad_at_or_below"] = cfg.bad_score
        frame["judge_name"] = judge_name
        frame["rubric_version"] = rubric
        frames.append(frame)
    replace_rows(
        conn,
        "drift_reports_criteria",
        "partition_date = ?",
        [day],
        frame=pd.concat(frames, ignore_index=True) if frames else None,
    )
    return out


def _judge_label(judge) -> str:
    name, model, rubric = judge
    return f"{name}/{model}/{rubric}" if model else f"{name}/{rubric}"


def markdown_table(rows: list[DriftRow]) -> str:
    def f(x, fmt=".2f"):
        return "–" if x is None else format(x, fmt)

    lines = [
        "| segment | n | mean | p10 | bad share | baseline | delta | p (mean) | p (Holm) "
        "| p (bad share) | failures | alert |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.segment} | {r.n} | {f(r.mean_score)} | {f(r.p10_score, '.1f')} | "
            f"{f(r.bad_share, '.1%')} | {f(r.baseline_mean)} | {f(r.delta, '+.2f')} | "
            f"{f(r.mean_p_value, '.3g')} | {f(r.mean_p_adjusted, '.3g')} | "
            f"{f(r.bad_share_p_value, '.3g')} | {r.n_failed} | "
            f"{'ALERT' if r.alert else ''} |"
        )
    return "\n".join(lines)
