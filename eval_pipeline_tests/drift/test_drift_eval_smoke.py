"""`make drift-eval` keeps running: the harness with 2 seeds per kind, and its figures
are what the engine did (a clean run pages nowhere, a step drop is paged)."""

from __future__ import annotations

from bench import drift_eval
from eval_pipeline.core.drift.incidents import IncidentConfig


def test_the_harness_runs_with_two_seeds(capsys):
    assert drift_eval.main(["--seeds", "2"]) == 0
    out = capsys.readouterr().out
    for kind in [*drift_eval.KINDS, "overall"]:
        assert f"\n{kind} " in out, kind
    assert "FA/1000" in out and "cause" in out


def test_known_truth_is_scored_as_such():
    step = drift_eval.evaluate("step", 0, IncidentConfig())
    assert step.episodes == 1 and step.delays and step.degraded == 12  # 12 broken days
    assert step.covered >= step.covered_live > 0
    rollout = drift_eval.evaluate("rollout", 0, IncidentConfig())
    assert rollout.rollouts == 1
    try:
        drift_eval.main(["--kinds", "nope"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("an unknown kind must be refused")
