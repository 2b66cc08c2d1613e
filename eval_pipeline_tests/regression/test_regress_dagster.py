"""The regression gate in Dagster: the asset, its blocking check, the job, the sensor."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from eval_pipeline import settings
from eval_pipeline.defs import regression as regression_defs
from eval_pipeline.defs.resources import EvalStore, JudgeResource

DEMO_GOLDEN = settings.PROJECT_ROOT / "data" / "golden" / "golden.jsonl"


@pytest.fixture
def golden():
    path = settings.golden_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_GOLDEN, path)
    return path


def materialize(instance, **config):
    return dg.materialize(
        [regression_defs.golden_regression],
        instance=instance,
        resources={"store": EvalStore(), "judge": JudgeResource()},
        run_config=dg.RunConfig({"golden_regression": regression_defs.RegressionConfig(**config)}),
        raise_on_error=False,
    )


def check_passed(result) -> bool:
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation.passed


def test_gate_passes_with_the_good_prompt_and_blocks_the_regressed_one(golden):
    with dg.DagsterInstance.ephemeral() as instance:
        good = materialize(instance, deploy_id="good")
        assert good.success and check_passed(good)
        meta = good.asset_materializations_for_node("golden_regression")[0].metadata
        assert meta["pass_rate"].value == 1.0 and meta["status"].value == "pass"
        assert 1 <= meta["judge_mean"].value <= 5  # the drift baseline
        assert len(meta["golden_version"].value) == 16

        bad = materialize(instance, deploy_id="bad", target_args={"prompt_path": "regressed"})
        assert not bad.success  # the blocking check fails the run
        assert not check_passed(bad)
        meta = bad.asset_materializations_for_node("golden_regression")[0].metadata
        assert meta["pass_rate"].value == pytest.approx(0.75)
        assert meta["newly_failing"].value == 8


def test_outage_fails_the_step_without_a_verdict(golden, monkeypatch):
    monkeypatch.setenv("EVAL_REGRESSION_TARGET", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("EVAL_REGRESSION_MODEL", "m")
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(instance, retries=0, timeout=1.0)
        assert not result.success
        assert result.get_asset_check_evaluations() == []
        failure = result.get_step_failure_events()[0]
        assert "outage: 32 of 32 cases got no answer" in failure.step_failure_data.error.message


def test_invalid_golden_set_fails_with_the_problems(golden):
    golden.write_text('{"id": "x", "input": "q", "expected": 1, "grader": "nope"}\n')
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(instance)
        assert not result.success
        message = result.get_step_failure_events()[0].step_failure_data.error.message
        assert "unknown grader type 'nope'" in message and ":1:" in message


def test_a_misconfigured_judge_fails_before_any_call_and_records_nothing(golden, monkeypatch):
    monkeypatch.setenv("EVAL_JUDGE", "openai")
    monkeypatch.delenv("EVAL_JUDGE_BASE_URL", raising=False)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(instance)
        assert not result.success and result.get_asset_check_evaluations() == []
        message = result.get_step_failure_events()[0].step_failure_data.error.message
        assert "the judge cannot be built" in message and "EVAL_JUDGE_BASE_URL" in message
    assert not settings.duckdb_path().exists()


def test_sensor_runs_the_gate_when_the_golden_file_changes(golden):
    sensor = regression_defs.golden_set_sensor
    with dg.DagsterInstance.ephemeral() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
        [request] = result.run_requests
        version = result.cursor
        assert request.run_key == f"golden-{version}"

        unchanged = sensor(dg.build_sensor_context(instance=instance, cursor=version))
        assert isinstance(unchanged, dg.SkipReason)

        # The gate already ran for this version (e.g. make demo): no second run.
        assert materialize(instance).success
        fresh = sensor(dg.build_sensor_context(instance=instance))
        assert fresh.run_requests == [] and fresh.cursor == version

        with golden.open("a") as fh:
            fh.write(
                '{"id": "new-case", "input": "Do you ship to Canada?", '
                '"expected": "Canada", "grader": "contains"}\n'
            )
        changed = sensor(dg.build_sensor_context(instance=instance, cursor=version))
        [request] = changed.run_requests
        assert changed.cursor != version and request.run_key == f"golden-{changed.cursor}"

        golden.write_text("not json\n")
        broken = sensor(dg.build_sensor_context(instance=instance, cursor=changed.cursor))
        assert isinstance(broken, dg.SkipReason) and "invalid" in broken.skip_message


def test_definitions_load_with_the_job_and_sensor():
    from eval_pipeline.definitions import defs

    loaded = defs()
    job = loaded.resolve_job_def("golden_regression_job")
    assert job is not None
    assert loaded.resolve_sensor_def("golden_set_sensor") is not None
    graph = loaded.resolve_asset_graph()
    node = graph.get(dg.AssetKey("golden_regression"))
    assert node.group_name == "regression"
    assert dg.AssetKey("golden_set") in node.parent_keys
    check = graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey("golden_regression"), "pass_rate"))
    assert check.blocking
