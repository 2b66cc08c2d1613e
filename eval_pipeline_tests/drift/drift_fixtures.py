"""The drift loop's assets and default resources, for tests that materialise them."""

from eval_pipeline.defs import drift_incidents, drift_loop
from eval_pipeline.defs.resources import EvalStore, JudgeResource, TraceSourceResource

DRIFT_ASSETS = [
    drift_loop.raw_traces,
    drift_loop.sampled_traces,
    drift_loop.judge_scores,
    drift_loop.drift_report,
    drift_incidents.drift_incidents,
]
# Every resource reads its settings from the environment at run time, and the autouse
# fixture in conftest.py points the environment at the test's own folder.
DRIFT_RESOURCES = {
    "store": EvalStore(),
    "trace_source": TraceSourceResource(),
    "judge": JudgeResource(),
}
