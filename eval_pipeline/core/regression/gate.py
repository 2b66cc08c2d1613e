"""The golden-set regression gate: run the cases, grade the answers, decide, remember.

A run has one of three statuses:

- ``pass``: the pass rate (passed / all cases) is at least the threshold;
- ``fail``: it is below: a quality regression;
- ``outage``: at least ``max_error_rate`` of the cases got no gradable answer (the service
  is down, the judge is down). That is neither a regression nor a pass: the gate could not
  be evaluated.

Errors (a call that failed, a judge that gave no score) are counted apart from wrong
answers, and count against the pass rate: an unanswered case is not a passing one. When a
run fails with errors among its cases, the verdict says how much of the shortfall is errors
and how much wrong answers (:func:`verdict`), so an infrastructure problem is not chased as
a model regression.

History: every run is stored (``regression_runs`` / ``regression_results``) with the deploy
id, target, golden-set version, pass rate and per-case outcomes, and compared with the
previous completed run against the same target: cases newly failing and newly passing.

The judge-scored mean (``judge_mean``, when ``judge_all`` is on) scores every answer with
the configured judge *without* the reference, exactly as the drift loop scores live
traffic, so it can serve as the drift loop's pinned baseline: see :func:`latest_baseline`
(passing runs only: a rejected deploy is no baseline).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from eval_pipeline.core.judge.base import Judge, JudgeRequest
from eval_pipeline.core.regression import graders
from eval_pipeline.core.regression.cases import Case, golden_version, input_text, load_cases
from eval_pipeline.core.regression.runners import Call, Progress, Runner, TargetSpec
from eval_pipeline.core.store import replace_rows

DEFAULT_THRESHOLD = 0.9
DEFAULT_MAX_ERROR_RATE = 0.5

EXIT_PASS = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_NOT_RUN = 3  # outage, bad golden file, target that cannot be called


class JudgeSetupError(RuntimeError):
    """The judge the run needs cannot be built (e.g. EVAL_JUDGE=openai without a base URL)."""


@dataclass
class CaseResult:
    case_id: str
    grader: str
    outcome: str  # pass | fail | error
    reason: str
    output: str | None
    call_error: str | None = None
    latency_ms: float | None = None
    attempts: int | None = None
    grade_score: float | None = None
    judge_score: int | None = None
    tags: tuple[str, ...] = ()


@dataclass
class RegressionRun:
    run_id: str
    deploy_id: str
    target: str
    runner_kind: str
    golden_version: str
    golden_path: str | None
    started_at: dt.datetime
    finished_at: dt.datetime
    threshold: float
    max_error_rate: float
    results: list[CaseResult]
    concurrency: int | None = None
    judge_name: str | None = None
    judge_model: str | None = None
    rubric_version: str | None = None
    judge_mean: float | None = None
    judge_n: int = 0

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return self.count("pass")

    @property
    def failed(self) -> int:
        return self.count("fail")

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def pass_rate(self) -> float:
        return self.passed / self.n if self.n else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 1.0

    @property
    def status(self) -> str:
        if not self.n or self.error_rate >= self.max_error_rate:
            return "outage"
        return "pass" if self.pass_rate >= self.threshold else "fail"

    @property
    def exit_code(self) -> int:
        return {"pass": EXIT_PASS, "fail": EXIT_BELOW_THRESHOLD}.get(self.status, EXIT_NOT_RUN)

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class Comparison:
    previous_run_id: str | None = None
    previous_deploy_id: str | None = None
    newly_failing: list[str] = field(default_factory=list)  # passed before, wrong now
    newly_erroring: list[str] = field(default_factory=list)  # passed before, no answer now
    newly_passing: list[str] = field(default_factory=list)  # failed/errored before, pass now
    new_cases: list[str] = field(default_factory=list)  # not in the previous run
    compared: bool = True  # False: the history was not read (--no-store, or the store failed)


def resolve_deploy_id(explicit: str | None = None, env: dict[str, str] | None = None) -> str:
    """The deploy under test: explicit, $EVAL_DEPLOY_ID, CI's commit SHA, git HEAD, 'unknown'."""
    env = os.environ if env is None else env
    for value in (
        explicit,
        env.get("EVAL_DEPLOY_ID"),
        env.get("GITHUB_SHA"),
        env.get("CI_COMMIT_SHA"),
    ):
        if value:
            return value
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def execute(
    cases: Sequence[Case],
    runner: Runner,
    *,
    golden_version: str,
    golden_path: str | None = None,
    deploy_id: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    judge_factory: Callable[[], Judge] | None = None,
    judge_all: bool = False,
    progress: Progress | None = None,
) -> RegressionRun:
    """Call the target with every case, grade the answers; no store access."""
    started = _now()
    calls: list[Call] = runner.run_many([c.input for c in cases], progress=progress)
    context = graders.GradingContext(judge_factory)
    answered = [i for i, c in enumerate(calls) if c.ok]
    grades = graders.grade_many([(cases[i], calls[i].output or "") for i in answered], context)
    by_index = dict(zip(answered, grades, strict=True))

    judge_scores: dict[int, int] = {}
    judge = None
    if judge_all and answered:
        judge = context.judge
        requests = [
            JudgeRequest(query=input_text(cases[i].input), response=calls[i].output or "")
            for i in answered
        ]
        for i, j in zip(answered, judge.judge_many(requests), strict=True):
            if j.state == "ok" and j.score is not None:
                judge_scores[i] = j.score
    elif any(c.grader_type == "judge" for c in cases):
        judge = context.judge

    results = []
    for i, (case, call) in enumerate(zip(cases, calls, strict=True)):
        if not call.ok:
            outcome, reason, score = "error", f"call failed: {call.error}", None
        else:
            g = by_index[i]
            outcome, reason, score = g.outcome, g.reason, g.score
        results.append(
            CaseResult(
                case_id=case.id,
                grader=case.grader_type,
                outcome=outcome,
                reason=reason,
                output=call.output,
                call_error=call.error,
                latency_ms=call.latency_ms,
                attempts=call.attempts,
                grade_score=score,
                judge_score=judge_scores.get(i),
                tags=case.tags,
            )
        )
    scores = list(judge_scores.values())
    return RegressionRun(
        run_id=uuid.uuid4().hex,
        deploy_id=resolve_deploy_id(deploy_id),
        target=runner.target,
        runner_kind=runner.kind,
        golden_version=golden_version,
        golden_path=golden_path,
        started_at=started,
        finished_at=_now(),
        threshold=threshold,
        max_error_rate=max_error_rate,
        results=results,
        concurrency=getattr(runner, "concurrency", None),
        judge_name=getattr(judge, "name", None),
        judge_model=getattr(judge, "model", None),
        rubric_version=getattr(judge, "rubric_version", None),
        judge_mean=sum(scores) / len(scores) if scores else None,
        judge_n=len(scores),
    )


@dataclass(frozen=True)
class GateSpec:
    """One gate run's configuration, from the CLI's flags or the Dagster config."""

    target: TargetSpec
    golden_path: str
    target_name: str | None = None  # the name history compares by; default runner.target
    deploy_id: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    judge_all: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GateSpec:
        """The spec from a mapping with the field names (and TargetSpec's); None = default."""
        names = set(cls.__dataclass_fields__) - {"target"}
        values = {k: v for k, v in options.items() if k in names and v is not None}
        return cls(target=TargetSpec.from_options(options), **values)


def run_gate(
    spec: GateSpec,
    *,
    judge_factory: Callable[[], Judge] | None = None,
    progress: Progress | None = None,
) -> RegressionRun:
    """Load the golden set, build the runner (and the judge, before any call), execute.

    Raises ``GoldenFileError``, ``RunnerConfigError`` or :class:`JudgeSetupError` when the
    run cannot be done; no store access.
    """
    cases = load_cases(spec.golden_path)
    runner = spec.target.build()
    if spec.judge_all or any(c.grader_type == "judge" for c in cases):
        # Built up front: a misconfigured judge must stop the run before the target is
        # called, and be reported as "not run", not surface mid-run as a crash.
        if judge_factory is None:
            from eval_pipeline.core.judge.factory import judge_from_env

            judge_factory = judge_from_env
        try:
            judge = judge_factory()
        except Exception as exc:
            raise JudgeSetupError(f"the judge cannot be built: {exc}") from exc
        judge_factory = lambda: judge  # noqa: E731
    run = execute(
        cases,
        runner,
        golden_version=golden_version(cases),
        golden_path=spec.golden_path,
        deploy_id=spec.deploy_id,
        threshold=spec.threshold,
        max_error_rate=spec.max_error_rate,
        judge_factory=judge_factory,
        judge_all=spec.judge_all,
        progress=progress,
    )
    if spec.target_name:
        run.target = spec.target_name
    return run


# --- history ---------------------------------------------------------------------------


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
        ],
    ).astype(object)
    replace_rows(conn, "regression_runs", "run_id = ?", [run.run_id], frame=runs)
    replace_rows(conn, "regression_results", "run_id = ?", [run.run_id], frame=results)


def record(conn: duckdb.DuckDBPyConnection, run: RegressionRun) -> Comparison:
    """Compare with the previous completed run against the same target, then store."""
    comparison = compare(previous_outcomes(conn, run.target, run.run_id), run)
    save_run(conn, run, comparison)
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


# --- reports ---------------------------------------------------------------------------

STATUS_WORDS = {
    "pass": "PASS",
    "fail": "FAIL (below threshold: quality regression)",
    "outage": "NOT RUN (outage: too many cases got no answer; this is not a quality verdict)",
}


def verdict(run: RegressionRun) -> str:
    """The verdict in words; a failing run with errors says what the shortfall is made of.

    Errors count against the pass rate, so a flaky service alone can fail the gate: the
    verdict then says so, so that nobody chases a model regression that is an infra problem.
    """
    if run.status != "fail" or not run.errors:
        return STATUS_WORDS[run.status]
    calls = sum(r.call_error is not None for r in run.results)
    kinds = []
    if calls:
        kinds.append(f"{calls} {'call' if calls == 1 else 'calls'} failed")
    if run.errors - calls:
        kinds.append(f"{run.errors - calls} got no grade (grader or judge error)")
    wrong = "wrong answer" if run.failed == 1 else "wrong answers"
    errs = "error" if run.errors == 1 else "errors"
    text = f"FAIL (below threshold: {run.failed} {wrong}, {run.errors} {errs} "
    text += f"({'; '.join(kinds)})"
    # The same comparison as `status`, as if every errored case had passed.
    if (run.passed + run.errors) / run.n >= run.threshold:
        text += "; without the errors it would pass: check the service before the model"
    else:
        text += "; a quality regression: the wrong answers alone put it below the threshold"
    return text + ")"


def _one_line(text: str | None, limit: int = 160) -> str:
    s = (text or "").replace("\r", " ").replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def text_report(run: RegressionRun, cmp: Comparison, max_listed: int = 50) -> str:
    lines = []
    bad = [r for r in run.results if r.outcome != "pass"]
    for r in [r for r in bad if r.outcome == "fail"][:max_listed]:
        lines.append(f"FAIL  {r.case_id} [{r.grader}]: {_one_line(r.reason)}")
    errors = [r for r in bad if r.outcome == "error"]
    if len(errors) <= 5:
        for r in errors:
            lines.append(f"ERROR {r.case_id} [{r.grader}]: {_one_line(r.reason)}")
    else:  # an outage: one line per distinct reason, not one per case
        by_reason: dict[str, list[str]] = {}
        for r in errors:
            by_reason.setdefault(r.reason, []).append(r.case_id)
        for reason, ids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            more = f" (+{len(ids) - 3} more)" if len(ids) > 3 else ""
            lines.append(
                f"ERROR {len(ids)} cases ({', '.join(ids[:3])}{more}): {_one_line(reason)}"
            )
    if len(bad) > 2 * max_listed:
        lines.append(f"... ({len(bad)} cases did not pass in all)")
    if lines:
        lines.append("")
    lines.append(
        f"{run.n} cases: {run.passed} passed, {run.failed} failed, {run.errors} errors; "
        f"pass rate {run.pass_rate:.1%} (threshold {run.threshold:.0%})"
    )
    lines.append(
        f"target {run.target}  deploy {run.deploy_id}  golden {run.golden_version}  "
        f"{run.duration_s:.1f}s"
    )
    if run.judge_mean is not None:
        lines.append(f"judge-scored mean {run.judge_mean:.2f} (n={run.judge_n}, {run.judge_name})")
    if cmp.previous_run_id:
        lines.append(
            f"since the previous run (deploy {cmp.previous_deploy_id}): "
            f"{len(cmp.newly_failing)} newly failing, {len(cmp.newly_passing)} newly passing"
            + (f", {len(cmp.newly_erroring)} newly erroring" if cmp.newly_erroring else "")
            + (f", {len(cmp.new_cases)} new cases" if cmp.new_cases else "")
        )
        for label, ids in (
            ("newly failing", cmp.newly_failing),
            ("newly passing", cmp.newly_passing),
            ("newly erroring", cmp.newly_erroring),
        ):
            if ids:
                lines.append(f"  {label}: {', '.join(ids[:max_listed])}")
    elif not cmp.compared:
        lines.append("history not compared (the run was not recorded in the store)")
    else:
        lines.append("no previous completed run against this target to compare with")
    lines.append(f"verdict: {verdict(run)}")
    return "\n".join(lines)


def _md_cell(text: Any) -> str:
    return _one_line(str(text), 200).replace("|", "\\|")


def markdown_report(run: RegressionRun, cmp: Comparison) -> str:
    icon = {"pass": "✅", "fail": "❌", "outage": "⚠️"}[run.status]
    out = [
        f"## Golden-set regression: {icon} {verdict(run)}",
        "",
        "| | |",
        "|---|---|",
        f"| pass rate | **{run.pass_rate:.1%}** (threshold {run.threshold:.0%}) |",
        f"| cases | {run.n}: {run.passed} passed, {run.failed} failed, {run.errors} errors |",
        f"| target | `{_md_cell(run.target)}` |",
        f"| deploy | `{_md_cell(run.deploy_id)}` |",
        f"| golden set | `{run.golden_version}` |",
    ]
    if run.judge_mean is not None:
        out.append(
            f"| judge-scored mean | {run.judge_mean:.2f} (n={run.judge_n}, {run.judge_name}) |"
        )
    if cmp.previous_run_id:
        out.append(
            f"| since previous run | {len(cmp.newly_failing)} newly failing, "
            f"{len(cmp.newly_passing)} newly passing (deploy `{_md_cell(cmp.previous_deploy_id)}`) |"
        )
    out.append("")
    for label, ids in (
        ("Newly failing", cmp.newly_failing),
        ("Newly passing", cmp.newly_passing),
        ("Newly erroring", cmp.newly_erroring),
    ):
        if ids:
            out.append(f"**{label}:** " + ", ".join(f"`{i}`" for i in ids))
            out.append("")
    bad = [r for r in run.results if r.outcome != "pass"]
    if bad:
        out += ["| case | outcome | grader | reason |", "|---|---|---|---|"]
        for r in bad:
            out.append(
                f"| `{_md_cell(r.case_id)}` | {r.outcome} | {r.grader} | {_md_cell(r.reason)} |"
            )
        out.append("")
    return "\n".join(out)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
