"""Recording an A/B run in DuckDB (ab_runs, ab_comparisons, ab_case_scores, ab_pairwise;
with several judge criteria also ab_criterion_comparisons and ab_criterion_scores)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import pandas as pd

from eval_pipeline.core.ab.report import markdown_report
from eval_pipeline.core.ab.results import ABResult
from eval_pipeline.core.judge.cache import store_judgments
from eval_pipeline.core.judge.spend import add_spend, judge_key, run_day


def _comparison_rows(result: ABResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.reports:
        mine = []
        if r.scores is not None:
            s = r.scores
            mine.append(
                dict(family="scores", n=s.n, n_excluded=s.n_excluded, value_a=s.mean_a,
                     value_b=s.mean_b, delta=s.delta, ci_low=s.ci_low, ci_high=s.ci_high,
                     p_value=s.t_p, p_adjusted=s.t_p_adjusted, rank_p_value=s.w_p,
                     rank_p_adjusted=s.w_p_adjusted, effect_size=s.d_z, floor=s.floor,
                     needed_n=s.needed_n, verdict=s.verdict, explanation=s.explanation,
                     details=asdict(s))
            )  # fmt: skip
        if r.pass_fail is not None:
            p = r.pass_fail
            mine.append(
                dict(family="pass_fail", n=p.n, n_excluded=p.n_excluded, value_a=p.pass_a,
                     value_b=p.pass_b, delta=p.delta, ci_low=p.ci_low, ci_high=p.ci_high,
                     p_value=p.p, p_adjusted=p.p_adjusted, rank_p_value=None,
                     rank_p_adjusted=None, effect_size=None, floor=p.floor,
                     needed_n=p.needed_n, verdict=p.verdict, explanation=p.explanation,
                     details=asdict(p))
            )  # fmt: skip
        if r.pairwise is not None:
            w = r.pairwise
            mine.append(
                dict(family="pairwise", n=w.n_valid, n_excluded=w.n_failed,
                     value_a=None if w.win_rate_b is None else 1 - w.win_rate_b,
                     value_b=w.win_rate_b, delta=w.net_preference, ci_low=w.ci_low,
                     ci_high=w.ci_high, p_value=w.p, p_adjusted=None, rank_p_value=None,
                     rank_p_adjusted=None, effect_size=None, floor=w.floor, needed_n=None,
                     verdict=w.verdict, explanation=w.explanation, details=asdict(w))
            )  # fmt: skip
        for row in mine:
            row.update(run_id=result.run_id, variant=r.variant, baseline=r.baseline)
            row["details"] = json.dumps(row["details"], default=_json_default)
        rows.extend(mine)
    return rows


def _criterion_rows(result: ABResult) -> list[dict[str, Any]]:
    """One row per (challenger, criterion) when the run judges several criteria."""
    rows = []
    for r in result.reports:
        for name, s in r.criteria.items():
            rows.append(
                dict(run_id=result.run_id, variant=r.variant, baseline=r.baseline,
                     criterion=name, n=s.n, n_excluded=s.n_excluded, value_a=s.mean_a,
                     value_b=s.mean_b, delta=s.delta, ci_low=s.ci_low, ci_high=s.ci_high,
                     p_value=s.t_p, p_adjusted=s.t_p_adjusted, rank_p_value=s.w_p,
                     rank_p_adjusted=s.w_p_adjusted, effect_size=s.d_z, floor=s.floor,
                     needed_n=s.needed_n, verdict=s.verdict, explanation=s.explanation,
                     details=json.dumps(asdict(s), default=_json_default))
            )  # fmt: skip
    return rows


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def store_ab(conn: duckdb.DuckDBPyConnection, result: ABResult) -> None:
    """Write the run, its comparisons, per-case scores and pairwise picks; one transaction.

    Judgments are also written to the shared judgments cache (by content hash)."""
    run = pd.DataFrame(
        [
            dict(
                run_id=result.run_id, started_at=result.started_at,
                finished_at=result.finished_at, cases_file=result.cases_file,
                cases_version=result.cases_version, n_cases=result.n_cases,
                baseline=result.baseline,
                variants=json.dumps([v.describe() for v in result.variants]),
                judge_name=result.judge_name, judge_model=result.judge_model,
                rubric_version=result.rubric_version, pairwise_judge=result.pairwise_judge,
                min_effect=result.min_effect, alpha=result.alpha, seed=result.seed,
                verdict=result.verdict, report_md=markdown_report(result),
            )
        ]
    )  # fmt: skip
    comps = pd.DataFrame(_comparison_rows(result))
    # ab_case_scores keeps one row per (case, variant): the judge's first criterion.
    first = next(iter(result.judge_versions), None)
    rows = [r for r in result.case_scores if r.criterion in (None, first)]
    scores = pd.DataFrame(
        {
            "run_id": result.run_id,
            "case_id": [r.case_id for r in rows],
            "variant": [r.variant for r in rows],
            "family": [r.family for r in rows],
            "state": [r.state for r in rows],
            "output": pd.Series([r.output for r in rows], dtype=object),
            "score": pd.array([r.score for r in rows], dtype="Float64"),
            "passed": pd.array([r.passed for r in rows], dtype="boolean"),
            "reason": [r.reason for r in rows],
            "judgment_key": pd.Series([r.judgment_key for r in rows], dtype=object),
            "latency_ms": pd.array([r.latency_ms for r in rows], dtype="Float64"),
        }
    )
    by_criterion = [r for r in result.case_scores if r.criterion]
    crit_scores = pd.DataFrame(
        {
            "run_id": result.run_id,
            "case_id": [r.case_id for r in by_criterion],
            "variant": [r.variant for r in by_criterion],
            "criterion": [r.criterion for r in by_criterion],
            "state": [r.state for r in by_criterion],
            "score": pd.array([r.score for r in by_criterion], dtype="Float64"),
            "reason": [r.reason for r in by_criterion],
            "judgment_key": pd.Series([r.judgment_key for r in by_criterion], dtype=object),
        }
    )
    pw = pd.DataFrame(result.pairwise_rows)
    conn.execute("BEGIN TRANSACTION")
    try:
        for table, frame in (
            ("ab_runs", run),
            ("ab_comparisons", comps),
            ("ab_case_scores", scores),
            ("ab_pairwise", pw),
            ("ab_criterion_comparisons", pd.DataFrame(_criterion_rows(result))),
            ("ab_criterion_scores", crit_scores),
        ):
            conn.execute(f"DELETE FROM {table} WHERE run_id = ?", [result.run_id])
            if frame.empty:
                continue
            if "run_id" not in frame.columns:
                frame = frame.assign(run_id=result.run_id)
            cols = ", ".join(frame.columns)
            conn.register("_ab_frame", frame)
            try:
                conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _ab_frame")
            finally:
                conn.unregister("_ab_frame")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    if result.new_judgments:
        judge = _JudgeInfo(
            result.judge_name, result.judge_model, result.rubric_version, result.judge_versions
        )
        store_judgments(
            conn,
            judge,  # type: ignore[arg-type]
            result.new_judgments,
            result.judgment_criteria or None,
        )
    # The run's judging draws on the judge's daily budget like the drift loop's.
    key = judge_key(result.judge_name, result.judge_model, result.rubric_version)
    add_spend(conn, run_day(result.started_at), key, "ab", result.judge_calls, result.judge_cost)


@dataclass
class _JudgeInfo:
    name: str
    model: str | None
    rubric_version: str
    versions: dict[str, str] | None = None  # criterion -> version (judge_versions)
