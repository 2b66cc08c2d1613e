"""The A/B runner: variants on the same cases, scoring, exclusions, pairwise, storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_pipeline import settings
from eval_pipeline.core import store
from eval_pipeline.core.ab import stats as ab_stats
from eval_pipeline.core.ab.report import verdict_lines
from eval_pipeline.core.ab.run import ABSetupError, ABSpec, compare_variants, run_ab
from eval_pipeline.core.ab.store import store_ab
from eval_pipeline.core.ab.variants import variants_from_prompts
from eval_pipeline.core.judge.base import HeuristicJudge
from eval_pipeline.core.judge.cache import CachedJudge
from eval_pipeline.core.regression import cases
from eval_pipeline_tests.ab.ab_fixtures import FirstPositionJudge, LengthJudge

ROOT = Path(__file__).resolve().parents[2]
DEMO_CASES = ROOT / "data" / "ab" / "cases.jsonl"
GOOD = ROOT / "eval_pipeline" / "demo" / "app" / "prompt_good.txt"
REGRESSED = ROOT / "eval_pipeline" / "demo" / "app" / "prompt_regressed.txt"
FIXTURE_TARGET = "eval_pipeline_tests.ab.ab_fixtures:app"


def _write_cases(path: Path, rows: list[dict]) -> list[cases.Case]:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return cases.load_cases(path)


def _spec(tmp_path: Path, a: Path, b: Path, **fields) -> ABSpec:
    """Prompt files a and b on the fixture app, on the cases written to c.jsonl."""
    return ABSpec(
        cases_path=str(tmp_path / "c.jsonl"),
        target=FIXTURE_TARGET,
        a_prompt=str(a),
        b_prompt=str(b),
        **fields,
    )


def _prompt(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_demo_prompts_regressed_prompt_loses_and_everything_is_stored():
    cs = cases.load_cases(DEMO_CASES)
    spec = ABSpec(
        cases_path=str(DEMO_CASES), a_prompt=str(GOOD), b_prompt=str(REGRESSED), pairwise=True
    )
    res = run_ab(spec, HeuristicJudge())
    assert res.cases_file == str(DEMO_CASES) and res.cases_version == cases.golden_version(cs)
    assert res.verdict == ab_stats.A_WINS
    rep = res.reports[0]
    assert rep.scores.n == len(cs) and rep.scores.n_excluded == 0
    assert rep.scores.delta < -rep.scores.floor and rep.scores.t_p < 0.05
    assert rep.pass_fail is None  # every demo A/B case is open-ended
    # The largest changes are the billing questions the regressed prompt refuses.
    assert rep.changes and all(c.delta == -4 for c in rep.changes[:5])
    billing = {"refund", "charge", "invoice", "receipt", "card", "paypal", "membership"}
    assert all(any(w in c.case_id for w in billing | {"subscription", "vat"}) for c in rep.changes)
    text = "\n".join(verdict_lines(res))
    for needle in ("A WINS", "n=36", "mean A", "delta", "95% CI", "t-test p=", "Wilcoxon",
                   "d_z=", "floor 0.20", "position consistency"):  # fmt: skip
        assert needle in text
    with store.connect(settings.duckdb_path()) as conn:
        store_ab(conn, res)
        store_ab(conn, res)  # idempotent per run id
        assert conn.execute("SELECT count(*) FROM ab_runs").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM ab_case_scores").fetchone()[0] == 2 * len(cs)
        fams = conn.execute(
            "SELECT family, verdict, n FROM ab_comparisons ORDER BY family"
        ).fetchall()
        assert fams == [
            ("pairwise", ab_stats.A_WINS, len(cs)),
            ("scores", ab_stats.A_WINS, len(cs)),
        ]
        assert conn.execute("SELECT count(*) FROM ab_pairwise").fetchone()[0] == len(cs)
        # The judgments landed in the shared cache.
        assert conn.execute("SELECT count(*) FROM judgments").fetchone()[0] > 0
        md = conn.execute("SELECT report_md FROM ab_runs").fetchone()[0]
        assert "Largest changes" in md


def test_judge_failures_drop_the_case_from_both_arms_and_are_counted(tmp_path):
    _write_cases(
        tmp_path / "c.jsonl",
        [
            {"id": f"q{i}", "input": f"question {i}", "expected": "x", "grader": "judge"}
            for i in range(8)
        ]
        + [
            {"id": "fail", "input": "JUDGE_FAIL please", "expected": "x", "grader": "judge"},
            {"id": "garble", "input": "JUDGE_GARBLE please", "expected": "x", "grader": "judge"},
        ],
    )
    a = _prompt(tmp_path, "a.txt", "mode: good")
    b = _prompt(tmp_path, "b.txt", "mode: good")
    res = run_ab(_spec(tmp_path, a, b), LengthJudge())
    s = res.reports[0].scores
    assert s.n == 8 and s.n_excluded == 2
    assert res.reports[0].excluded == {"scores/judge_error": 2}
    failed = [r for r in res.case_scores if r.state == "judge_error"]
    assert len(failed) == 4 and all(r.score is None for r in failed)  # never scored as zero
    assert s.mean_a == s.mean_b == 5.0
    assert "excluded from both arms: scores/judge_error 2" in "\n".join(verdict_lines(res))


def test_run_errors_and_rules_graders(tmp_path):
    rows = [
        {"id": f"r{i}", "input": f"billing question {i}", "expected": "GOOD",
         "grader": {"type": "contains", "values": ["GOOD"]}}
        for i in range(12)
    ] + [{"id": "boom", "input": "boom now", "expected": "GOOD", "grader": "contains"}]  # fmt: skip
    _write_cases(tmp_path / "c.jsonl", rows)
    a = _prompt(tmp_path, "a.txt", "mode: good")
    b = _prompt(tmp_path, "b.txt", "mode: bad\ncrash_on: boom")
    res = run_ab(_spec(tmp_path, a, b), LengthJudge())
    pf = res.reports[0].pass_fail
    assert res.reports[0].scores is None
    assert (pf.n, pf.n_excluded, pf.a_only, pf.b_only) == (12, 1, 12, 0)
    assert pf.pass_a == 1.0 and pf.pass_b == 0.0
    assert pf.verdict == ab_stats.A_WINS and res.verdict == ab_stats.A_WINS
    assert res.run_errors == {"A": 0, "B": 1}
    boom_b = next(r for r in res.case_scores if r.case_id == "boom" and r.variant == "B")
    assert boom_b.state == "run_error" and "crashed" in boom_b.reason


def test_pairwise_position_bias_is_a_tie(tmp_path):
    _write_cases(
        tmp_path / "c.jsonl",
        [{"id": f"q{i}", "input": f"billing q{i}", "expected": "x", "grader": "judge"}
         for i in range(6)]
        + [{"id": "same", "input": "shipping", "expected": "x", "grader": "judge"}],
    )  # fmt: skip
    a = _prompt(tmp_path, "a.txt", "mode: good")
    b = _prompt(tmp_path, "b.txt", "mode: bad")
    res = run_ab(
        _spec(tmp_path, a, b, pairwise=True), LengthJudge(), pairwise_judge=FirstPositionJudge()
    )
    w = res.reports[0].pairwise
    assert w.n_valid == 7 and w.inconsistent == 6 and w.ties == 7
    assert w.consistency_rate == pytest.approx(1 / 7)
    assert w.wins_a == w.wins_b == 0
    assert res.pairwise_judge == "first-position-test"
    outcomes = sorted(r["outcome"] for r in res.pairwise_rows)
    assert outcomes == ["inconsistent"] * 6 + ["tie"]


def test_three_variants_share_one_holm_family(tmp_path):
    _write_cases(
        tmp_path / "c.jsonl",
        [{"id": f"q{i}", "input": f"billing q{i}" if i < 10 else f"other {i}",
          "expected": "x", "grader": "judge"} for i in range(30)],
    )  # fmt: skip
    a = _prompt(tmp_path, "a.txt", "mode: good")
    b = _prompt(tmp_path, "b.txt", "mode: bad")
    c = _prompt(tmp_path, "c.txt", "mode: good")
    res = run_ab(_spec(tmp_path, a, b, other_prompts=(str(c),)), LengthJudge())
    assert [r.variant for r in res.reports] == ["B", "C"]
    rb, rc = res.reports
    assert rb.scores.n_comparisons == 2 and rb.scores.t_p_adjusted >= rb.scores.t_p
    assert rb.verdict == ab_stats.A_WINS
    assert rc.scores.delta == 0 and rc.verdict == ab_stats.NO_DIFFERENCE


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(ValueError, match="two prompt files"):
        variants_from_prompts(FIXTURE_TARGET, [GOOD])
    with pytest.raises(ValueError, match="cannot read prompt file"):
        variants_from_prompts(FIXTURE_TARGET, [GOOD, tmp_path / "missing.txt"])


def test_a_rerun_takes_its_judgments_from_the_store():
    """The second A/B run of the same answers makes no judge call."""

    class Counting(HeuristicJudge):
        calls = 0

        def judge_many(self, requests, progress=None):
            Counting.calls += len(requests)
            return super().judge_many(requests, progress)

    cs = cases.load_cases(DEMO_CASES)[:8]
    variants = variants_from_prompts("eval_pipeline.demo.app:answer", [GOOD, REGRESSED])
    first = compare_variants(cs, variants, CachedJudge(Counting(), settings.duckdb_path()))
    assert Counting.calls > 0
    with store.connect(settings.duckdb_path()) as conn:
        store_ab(conn, first)
    Counting.calls = 0
    judge = CachedJudge(Counting(), settings.duckdb_path())
    second = compare_variants(cs, variants, judge)
    assert Counting.calls == 0 and judge.cache_hits > 0
    assert second.reports[0].scores.delta == first.reports[0].scores.delta


def test_the_spec_refuses_what_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="min_effect"):
        ABSpec(min_effect=1.5)
    with pytest.raises(ValueError, match="alpha"):
        ABSpec.from_options({"alpha": 0})
    both = ABSpec(a_prompt=str(GOOD), b_prompt=str(GOOD), a_target="x:y", b_target="x:z")
    with pytest.raises(ABSetupError, match="not both"):
        both.variants()
    with pytest.raises(ABSetupError, match="B prompt file"):
        ABSpec(a_prompt=str(GOOD)).variants()
    with pytest.raises(ABSetupError, match="no case file"):
        run_ab(ABSpec(a_prompt=str(GOOD), b_prompt=str(GOOD)), HeuristicJudge())
    missing = ABSpec(cases_path=str(DEMO_CASES), a_prompt=str(GOOD), b_prompt="missing.txt")
    with pytest.raises(ABSetupError, match="cannot read prompt file"):
        run_ab(missing, HeuristicJudge())


def test_from_options_ignores_unknown_keys_and_none():
    spec = ABSpec.from_options(
        {
            "cases_path": "c.jsonl",
            "seed": None,
            "other_prompts": ["c.txt"],
            "db": "x",
            "top_changes": 3,
        }
    )
    assert spec.seed == ABSpec.seed and spec.other_prompts == ("c.txt",)
    assert spec.top_changes == 3 and spec.cases_path == "c.jsonl"
