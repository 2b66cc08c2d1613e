"""`python -m bench.power_eval` (also printed by `make budget-eval`) still runs."""

from __future__ import annotations

from bench import power_eval


def test_power_eval_runs_on_a_few_references(capsys):
    args = ["--references", "2", "--days", "5", "--two-stage-seeds", "2", "--two-stage-days", "50"]
    assert power_eval.main(args) == 0
    out = capsys.readouterr().out
    assert "MDE broken detected MDE shift detected" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("10 ", "80 "))]) == 4
    for design in ("one look, n1", "follow-up as built", "naive two looks"):
        assert design in out
