"""The golden-set regression gate as a Dagster asset, with a blocking check, a job and a sensor.

``golden_regression`` runs the golden set against the configured target (the demo app by
default), records the run in DuckDB (regression_runs / regression_results) and reports the
pass rate; its blocking ``pass_rate`` check fails the run when the rate is below the
threshold. An outage (most calls failed) fails the step with a clear message instead: it is
neither a pass nor a quality regression.

``golden_set_sensor`` re-runs the gate when the golden file's content changes: it hashes the
file (``cases.golden_version``) and compares it with the version recorded on the asset's
latest materialization in the Dagster instance; it never opens DuckDB.

The run's judge-scored mean (every answer scored by the configured judge without the
reference, as the drift loop scores live traffic) is in the ``judge_mean`` metadata and in
``regression_runs.judge_mean``; ``eval_pipeline.core.regression.history.latest_baseline`` reads it
(from passing runs only) for the drift loop's pinned baseline.
"""

import os

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.core.judge import trust
from eval_pipeline.core.regression import cases, runners
from eval_pipeline.core.regression import gate as regression
from eval_pipeline.core.regression.history import record
from eval_pipeline.core.regression.report import markdown_report, text_report
from eval_pipeline.defs.resources import EvalStore, JudgeResource

MD = dg.MetadataValue
DEFAULT_TARGET = "eval_pipeline.demo.app:answer"


class RegressionConfig(dg.Config):
    """What to test. Unset fields fall back to environment variables read at run time."""

    target: str | None = None  # base URL or module:function; $EVAL_REGRESSION_TARGET; demo app
    model: str | None = None  # for HTTP targets; $EVAL_REGRESSION_MODEL
    system_prompt_file: str | None = None  # for HTTP targets; $EVAL_REGRESSION_SYSTEM_PROMPT
    api_key_env: str = runners.DEFAULT_API_KEY_ENV  # the variable's name, never the key
    target_args: dict[str, str] = {}  # keyword arguments for a callable target
    target_name: str | None = None  # name in history (default: URL#model or module:function)
    golden_path: str | None = None  # default $EVAL_GOLDEN_PATH
    deploy_id: str | None = None  # default $EVAL_DEPLOY_ID, $GITHUB_SHA, git HEAD
    threshold: float = regression.DEFAULT_THRESHOLD
    max_error_rate: float = regression.DEFAULT_MAX_ERROR_RATE
    concurrency: int = runners.DEFAULT_CONCURRENCY
    timeout: float = runners.DEFAULT_TIMEOUT
    retries: int = runners.DEFAULT_RETRIES
    judge_all: bool = True  # judge-score every answer: the drift loop's baseline


@dg.asset(
    group_name="regression",
    kinds={"duckdb", "python"},
    pool="duckdb",
    # Lineage only: the file is the source of truth (hand edits count too); the sensor below
    # re-runs the gate when its content changes, whoever changed it.
    deps=[dg.AssetKey("golden_set")],
    check_specs=[
        dg.AssetCheckSpec(
            "pass_rate",
            asset="golden_regression",
            blocking=True,
            description="The golden-set pass rate is at or above the configured threshold.",
        )
    ],
)
def golden_regression(
    context: dg.AssetExecutionContext,
    config: RegressionConfig,
    store: EvalStore,
    judge: JudgeResource,
) -> dg.MaterializeResult:
    """The golden set run against the deployed target: pass rate, failures, newly failing."""
    options = config.model_dump()
    options["golden_path"] = config.golden_path or str(settings.golden_path())
    for name, env in (
        ("target", "EVAL_REGRESSION_TARGET"),
        ("model", "EVAL_REGRESSION_MODEL"),
        ("system_prompt_file", "EVAL_REGRESSION_SYSTEM_PROMPT"),
    ):
        options[name] = options[name] or os.environ.get(env)
    options["target"] = options["target"] or DEFAULT_TARGET

    def progress(done: int, total: int, call: runners.Call) -> None:
        if done == total or done % max(1, total // 10) == 0:
            context.log.info(f"called the target for {done}/{total} cases")

    try:
        run = regression.run_gate(
            regression.GateSpec.from_options(options),
            judge_factory=judge.build,
            progress=progress,
        )
    except cases.GoldenFileError as exc:
        raise dg.Failure(description=f"the golden set is invalid: {exc}") from exc
    except runners.RunnerConfigError as exc:
        raise dg.Failure(description=f"the target cannot be called: {exc}") from exc
    except regression.JudgeSetupError as exc:
        raise dg.Failure(description=str(exc)) from exc
    with store.connect() as conn:
        comparison = record(conn, run)
        run.judge_trust = trust.for_judge(conn, run.judge_name, run.judge_model, run.rubric_version)
    context.log.info(text_report(run, comparison))
    if run.status == "outage":
        raise dg.Failure(
            description=(
                f"outage: {run.errors} of {run.n} cases got no answer from {run.target}; "
                "the gate could not be evaluated (this is not a quality verdict)"
            ),
            metadata={"run_id": MD.text(run.run_id), "errors": MD.int(run.errors)},
        )
    meta = {
        "pass_rate": MD.float(run.pass_rate),
        "threshold": MD.float(run.threshold),
        "cases": MD.int(run.n),
        "passed": MD.int(run.passed),
        "failed": MD.int(run.failed),
        "errors": MD.int(run.errors),
        "newly_failing": MD.int(len(comparison.newly_failing)),
        "newly_passing": MD.int(len(comparison.newly_passing)),
        "status": MD.text(run.status),
        "deploy_id": MD.text(run.deploy_id),
        "target": MD.text(run.target),
        "golden_version": MD.text(run.golden_version),
        "run_id": MD.text(run.run_id),
        "report": MD.md(markdown_report(run, comparison)),
    }
    if run.judge_mean is not None:
        meta["judge_mean"] = MD.float(run.judge_mean)
    for c in run.criteria_summary:  # the judge criteria the golden set names
        meta[f"criteria/{c.criterion}/pass_rate"] = MD.float(c.pass_rate)
        if c.mean_score is not None:
            meta[f"criteria/{c.criterion}/mean_score"] = MD.float(c.mean_score)
    if run.judge_trust is not None:
        meta["judge_trust_status"] = MD.text(run.judge_trust.status)
        meta["judge_trust"] = MD.text(run.judge_trust.line())
        meta["judge"] = MD.text(f"{run.judge_name} ({run.rubric_version})")
    check = dg.AssetCheckResult(
        check_name="pass_rate",
        passed=run.status == "pass",
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "pass_rate": MD.float(run.pass_rate),
            "threshold": MD.float(run.threshold),
            "verdict": MD.text(regression.verdict(run)),
            "newly_failing": MD.text(", ".join(comparison.newly_failing) or "none"),
        },
    )
    return dg.MaterializeResult(metadata=meta, check_results=[check])


golden_regression_job = dg.define_asset_job(
    "golden_regression_job",
    selection=dg.AssetSelection.assets(golden_regression),
    description="Run the golden set against the target and gate on the pass rate.",
)


@dg.sensor(
    job=golden_regression_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def golden_set_sensor(context: dg.SensorEvaluationContext):
    """Re-runs the regression gate when the golden file's content hash changes."""
    path = settings.golden_path()
    if not path.exists():
        return dg.SkipReason(f"no golden set at {path}")
    try:
        version = cases.golden_version(path)
    except cases.GoldenFileError as exc:
        return dg.SkipReason(f"the golden set is invalid, not running the gate: {exc}")
    if context.cursor == version:
        return dg.SkipReason(f"golden set unchanged ({version})")
    event = context.instance.get_latest_materialization_event(dg.AssetKey("golden_regression"))
    last = None
    if event is not None and event.asset_materialization is not None:
        entry = event.asset_materialization.metadata.get("golden_version")
        last = getattr(entry, "value", None)
    if last == version:
        return dg.SensorResult(skip_reason=f"golden set {version} already gated", cursor=version)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"golden-{version}", tags={"golden_version": version})],
        cursor=version,
    )
