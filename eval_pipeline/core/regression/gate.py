"""The golden-set regression gate: run the cases, grade the answers, decide.

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

The judge-scored mean (``judge_mean``, when ``judge_all`` is on) scores every answer with
the configured judge *without* the reference, exactly as the drift loop scores live
traffic, so it can serve as the drift loop's pinned baseline (see
:mod:`eval_pipeline.core.regression.history`). Storing runs and comparing them with earlier
ones is :mod:`~eval_pipeline.core.regression.history`; the reports are
:mod:`~eval_pipeline.core.regression.report`.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval_pipeline import settings
from eval_pipeline.core.judge.agreement import TrustStatus
from eval_pipeline.core.judge.base import Judge, JudgeRequest
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline.core.judge.spend import SpendMeter
from eval_pipeline.core.regression import graders
from eval_pipeline.core.regression.cases import Case, golden_version, input_text, load_cases
from eval_pipeline.core.regression.criteria import CriterionSummary, missing_from, needed, summarise
from eval_pipeline.core.regression.runners import Call, Progress, Runner, TargetSpec

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
    # Per criterion the case names: {name: {outcome, score, threshold, reason}}.
    criteria: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    # What the run cost the judge's daily budget (its "gate" line in judge_spend).
    judge_calls: int = 0
    judge_cost: float | None = None
    # The trust status of the judge (None: no judge, or not looked up); it never changes
    # the verdict, the reports say it.
    judge_trust: TrustStatus | None = None

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
    def criteria_summary(self) -> list[CriterionSummary]:
        """Per criterion the cases name: pass rate and mean score (empty without criteria)."""
        return summarise([r.criteria for r in self.results])

    def criteria_below(self) -> list[CriterionSummary]:
        """The criteria whose own pass rate is below the gate's threshold."""
        return [c for c in self.criteria_summary if c.pass_rate < self.threshold]

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


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
    meters: list[SpendMeter] = []

    def metered() -> Judge:
        meters.append(SpendMeter((judge_factory or judge_from_env)()))
        return meters[-1]  # type: ignore[return-value]

    context = graders.GradingContext(metered)
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
            # An unanswered case counts against each of its criteria, as against the gate.
            per = {
                n: {"outcome": "error", "score": None, "threshold": None, "reason": reason}
                for n in (case.criteria if case.grader_type == "judge" else ())
            }
        else:
            g = by_index[i]
            outcome, reason, score = g.outcome, g.reason, g.score
            per = {cg.criterion: cg.as_dict() for cg in g.criteria}
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
                criteria=per,
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
        judge_calls=sum(m.calls for m in meters),
        judge_cost=meters[0].cost() if meters else None,
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
        names = needed(cases)
        try:
            if judge_factory is None and names:
                judge = judge_from_env(criteria=_with_configured(names))
            else:
                judge = (judge_factory or judge_from_env)()
        except Exception as exc:
            raise JudgeSetupError(f"the judge cannot be built: {exc}") from exc
        missing = missing_from(judge, names)
        if missing:
            raise JudgeSetupError(
                f"the golden set names criteria the judge is not configured for: "
                f"{', '.join(missing)} (add them to the judge's criteria, EVAL_JUDGE_CRITERIA)"
            )
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


def _with_configured(names: Sequence[str]) -> str:
    """The configured criteria (first: the one plain judge cases are scored on, as before)
    followed by those the golden set names."""
    configured = settings.resolve(None, os.environ, "EVAL_JUDGE_CRITERIA", "quality")
    base = [c.strip() for c in configured.split(",") if c.strip()] or ["quality"]
    return ",".join(dict.fromkeys([*base, *names]))


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
    below = run.criteria_below() if run.status == "fail" else []
    if below:
        rates = ", ".join(f"{c.criterion} {c.pass_rate:.0%}" for c in below)
        suffix = f" [criteria below the threshold: {rates}]"
    else:
        suffix = ""
    if run.status != "fail" or not run.errors:
        return STATUS_WORDS[run.status] + suffix
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
    return text + ")" + suffix
