"""The gate's history: every run stored, compared with the previous one, and the baseline.

Every run is stored (``regression_runs`` / ``regression_results``) with the deploy id,
target, golden-set version, pass rate and per-case outcomes (and, when cases name judge
criteria, each criterion's outcome per case and its pass rate and mean per run, as JSON), and compared with the previous
completed run against the same target: cases newly failing and newly passing.
:func:`latest_baseline` gives the drift loop its pinned baseline: the judge-scored mean of
the latest *passing* run (a rejected deploy is no baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from eval_pipeline.core.judge.spend import add_spend, judge_key, run_day
from eval_pipeline.core.regression.gate import RegressionRun
from eval_pipeline.core.store import replace_rows


@dataclass
class Comparison:
    previous_run_id: str | None = None
    previous_deploy_id: str | None = None
    newly_failing: list[str] = field(default_factory=list)  # passed before, wrong now
    newly_erroring: list[str] = field(default_factory=list)  # passed before, no answer now
    newly_passing: list[str] = field(default_factory=list)  # failed/errored before, pass now
    new_cases: list[str] = field(default_factory=list)  # not in the previous run
    compared: bool = True  # False: the history was not read (--no-store, or the store failed)


def previous_outcomes(
    conn: duckdb.DuckDBPyConnection, target: str, exclude_run_id: str | None = None
) -> tuple[str, str, dict[str, str]] | None:
    """(run_id, deploy_id, {case_id: outcome}) of the last completed run against target."""
    row = conn.execute(
        "SELECT run_id, deploy_id FROM regression_runs "
        "WHERE target = ? AND status IN ('pass', 'fail') AND run_id <> coalesce(?, '') "
        "ORDER BY finished_at DESC LIMIT 1",
        [target, exclude_run_id],
    ).fetchone()
    if row is None:
        return None
    outcomes = dict(
        conn.execute(
            "SELECT case_id, outcome FROM regression_results WHERE run_id = ?", [row[0]]
        ).fetchall()
    )
    return row[0], row[1], outcomes


def compare(previous: tuple[str, str, dict[str, str]] | None, run: RegressionRun) -> Comparison:
    if previous is None:
        return Comparison()
    prev_id, prev_deploy, before = previous
    cmp = Comparison(previous_run_id=prev_id, previous_deploy_id=prev_deploy)
    for r in run.results:
        was = before.get(r.case_id)
        if was is None:
            cmp.new_cases.append(r.case_id)
        elif was == "pass" and r.outcome == "fail":
            cmp.newly_failing.append(r.case_id)
        elif was == "pass" and r.outcome == "error":
            cmp.newly_erroring.append(r.case_id)
        elif was != "pass" and r.outcome == "pass":
            cmp.newly_passing.append(r.case_id)
    return cmp


def save_run(
    conn: duckdb.DuckDBPyConnection, run: RegressionRun, comparison: Comparison | None = None
) -> None:
    """Store the run and its per-case results (idempotent per run_id)."""
    comparison = comparison or Comparison()
    summary = run.criteria_summary
    runs = pd.DataFrame(
        [
            {
                "run_id": run.run_id,
                "deploy_id": run.deploy_id,
                "target": run.target,
                "runner_kind": run.runner_kind,
                "golden_version": run.golden_version,
                "golden_path": run.golden_path,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "n_cases": run.n,
                "n_passed": run.passed,
                "n_failed": run.failed,
                "n_errors": run.errors,
                "pass_rate": run.pass_rate,
                "threshold": run.threshold,
                "max_error_rate": run.max_error_rate,
                "status": run.status,
                "judge_name": run.judge_name,
                "judge_model": run.judge_model,
                "rubric_version": run.rubric_version,
                "judge_mean": run.judge_mean,
                "judge_n": run.judge_n,
                "previous_run_id": comparison.previous_run_id,
                "newly_failing": len(comparison.newly_failing),
                "newly_passing": len(comparison.newly_passing),
                "concurrency": run.concurrency,
                "duration_s": run.duration_s,
                "criteria": json.dumps({c.criterion: c.as_dict() for c in summary})
                if summary
                else None,
            }
        ]
    ).astype(object)
    results = pd.DataFrame(
        [
            {
                "run_id": run.run_id,
                "case_id": r.case_id,
                "grader": r.grader,
                "outcome": r.outcome,
                "reason": r.reason,
                "output": r.output,
                "call_error": r.call_error,
                "latency_ms": r.latency_ms,
                "attempts": r.attempts,
                "grade_score": r.grade_score,
                "judge_score": r.judge_score,
                "tags": json.dumps(list(r.tags)),
                "criteria": json.dumps(r.criteria) if r.criteria else None,
            }
            for r in run.results
        ],
        columns=[
            "run_id",
            "case_id",
            "grader",
            "outcome",
            "reason",
            "output",
            "call_error",
            "latency_ms",
            "attempts",
            "grade_score",
            "judge_score",
            "tags",
            "criteria",
        ],
    ).astype(object)
    replace_rows(conn, "regression_runs", "run_id = ?", [run.run_id], frame=runs)
    replace_rows(conn, "regression_results", "run_id = ?", [run.run_id], frame=results)


def record(conn: duckdb.DuckDBPyConnection, run: RegressionRun) -> Comparison:
    """Compare with the previous completed run against the same target, then store."""
    comparison = compare(previous_outcomes(conn, run.target, run.run_id), run)
    save_run(conn, run, comparison)
    if run.judge_name:
        # The gate's judging draws on the judge's daily budget like the drift loop's.
        key = judge_key(run.judge_name, run.judge_model, run.rubric_version)
        add_spend(conn, run_day(run.started_at), key, "gate", run.judge_calls, run.judge_cost)
    return comparison


def latest_baseline(
    conn: duckdb.DuckDBPyConnection, target: str | None = None
) -> dict[str, Any] | None:
    """The latest *passing* run's judge-scored mean (for the drift loop's pinned baseline).

    Only status 'pass': the baseline is "the golden-set score at deploy time", and a run
    that failed the gate is a rejected deploy, not a baseline. Returns run_id, deploy_id,
    target, golden_version, judge_mean, judge_n, judge_name, judge_model, rubric_version,
    finished_at; None when no run has a judge mean. Use it only when its judge (name, model,
    rubric version) matches the drift loop's judge.
    """
    row = conn.execute(
        "SELECT run_id, deploy_id, target, golden_version, judge_mean, judge_n, judge_name, "
        "judge_model, rubric_version, finished_at FROM regression_runs "
        "WHERE judge_mean IS NOT NULL AND status = 'pass' "
        "AND (? IS NULL OR target = ?) ORDER BY finished_at DESC LIMIT 1",
        [target, target],
    ).fetchone()
    if row is None:
        return None
    keys = (
        "run_id",
        "deploy_id",
        "target",
        "golden_version",
        "judge_mean",
        "judge_n",
        "judge_name",
        "judge_model",
        "rubric_version",
        "finished_at",
    )
    return dict(zip(keys, row, strict=True))
