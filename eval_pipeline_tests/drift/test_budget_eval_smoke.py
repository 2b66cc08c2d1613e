"""`make budget-eval` keeps running: both samplers side by side on one seed of a roll-out,
the calls ratio, the unbiasedness check and the MDE check."""

from __future__ import annotations

import pytest

from bench import budget_eval


@pytest.mark.slow
def test_the_budget_harness_runs_both_arms_on_one_seed(capsys):
    argv = ["--seeds", "1", "--kinds", "rollout", "--bias-seeds", "20"]
    argv += ["--mde-references", "2", "--mde-days", "5", "--two-stage-seeds", "0"]
    assert budget_eval.main(argv) == 0
    out = capsys.readouterr().out
    assert "\nfixed    rollout" in out and "\nbudget   rollout" in out
    ratio = float(out.split("judge calls, budgeted / fixed: ")[1].split()[0])
    assert 0 < ratio <= 1 / 3  # the budgeted arm spends at most a third of the calls
    assert "weighted   overall mean error" in out and "MDE broken detected" in out
    with pytest.raises(SystemExit) as exc:
        budget_eval.main(["--kinds", "nope"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_a_list_of_budgets_prints_one_arm_each_at_its_own_calls(capsys):
    argv = ["--seeds", "1", "--kinds", "step", "--arms", "budget", "--calls", "40,80"]
    argv += ["--bias-seeds", "3", "--mde-references", "0", "--two-stage-seeds", "0"]
    assert budget_eval.main(argv) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines() if ln}
    assert float(rows["b40"][-1]) == 40.0 and float(rows["b80"][-1]) == 80.0
    assert "budget" not in rows and "fixed" not in rows
    with pytest.raises(SystemExit):
        budget_eval.main(["--calls", ""])


def test_engine_counts_are_a_parameter_with_two_values():
    with pytest.raises(ValueError, match="drawn"):
        budget_eval.segment_days(None, None, True, "raw")
