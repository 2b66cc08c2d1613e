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
