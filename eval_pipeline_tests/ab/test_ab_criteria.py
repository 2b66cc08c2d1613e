"""A/B comparisons per judge criterion: one paired comparison per criterion, all of them in
the run's Holm family (the family-wise false-win rate stays at alpha by simulation), stored
per criterion; a run with one criterion is what it always was."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from eval_pipeline.core import store
from eval_pipeline.core.ab import stats as S
from eval_pipeline.core.ab.report import markdown_report, verdict_lines
from eval_pipeline.core.ab.run import ABSetupError, ABSpec, compare_variants
from eval_pipeline.core.ab.store import store_ab
from eval_pipeline.core.ab.variants import variants_from_targets
from eval_pipeline.core.judge.base import Judgment
from eval_pipeline.core.regression.cases import parse_case
from eval_pipeline_tests.ab.ab_fixtures import LengthJudge

HERE = "eval_pipeline_tests.ab.test_ab_criteria"


def answer_a(value, **_):
    return f"A says: {value}"


def answer_b(value, **_):
    return f"B says: {value}"


@dataclass
class CriteriaJudge:
    """Scores each criterion by a rule: ``rules[name](case index, variant) -> score``;
    ``None`` is an error for that criterion alone."""

    rules: dict
    name: str = "criteria-test"
    model: str | None = None
    calls: list = field(default_factory=list)

    @property
    def versions(self) -> dict[str, str]:
        return {n: f"{n}-v1" for n in self.rules}

    @property
    def rubric_version(self) -> str:
        return next(iter(self.versions.values()))

    def judge_many(self, requests, progress=None):
        return [d[next(iter(self.rules))] for d in self.judge_criteria([(r, ()) for r in requests])]

    def judge_criteria(self, items, progress=None):
        self.calls.append(len(items))
        out = []
        for req, names in items:
            variant, index = req.response[0], int(req.query.split("-")[1])
            got = {}
            for n in names or (next(iter(self.rules)),):
                score = self.rules[n](index, variant)
                got[n] = (
                    Judgment("error", None, "judge down")
                    if score is None
                    else Judgment("ok", int(score), f"{n} rule")
                )
            out.append(got)
        return out


def make_cases(n: int, criteria=None):
    rows = []
    for i in range(n):
        row = {"id": f"c{i:03d}", "input": f"q-{i}", "expected": "ref", "grader": "judge"}
        if criteria:
            row["criteria"] = criteria
        rows.append(parse_case(row))
    return rows


def variants():
    return variants_from_targets([f"{HERE}:answer_a", f"{HERE}:answer_b"], concurrency=4)


SPEC = ABSpec(n_resamples=200, seed=1)


def test_each_criterion_is_compared_and_named_with_its_tests(tmp_path):
    n = 30
    judge = CriteriaJudge(
        {
            "quality": lambda i, v: 4,  # no difference at all
            "correctness": lambda i, v: 5 if v == "B" else 2 + i % 2,  # B clearly better
            "safety": lambda i, v: None if i == 0 else 5,  # one judge error, else the same
        }
    )
    res = compare_variants(make_cases(n), variants(), judge, SPEC)
    (rep,) = res.reports
    assert list(rep.criteria) == ["quality", "correctness", "safety"]
    assert rep.scores is rep.criteria["quality"]
    corr = rep.criteria["correctness"]
    assert corr.verdict == S.B_WINS and corr.n_comparisons == 3
    assert rep.criteria["safety"].n == n - 1 and rep.criteria["safety"].n_excluded == 1
    assert rep.excluded == {"scores[safety]/judge_error": 1}
    assert rep.verdict == S.B_WINS
    # One call to the judge for every distinct (answer, criteria): A and B differ.
    assert judge.calls == [2 * n]
    text = "\n".join(verdict_lines(res))
    for name in ("quality", "correctness", "safety"):
        assert f"  criterion {name}, judge scores 1-5" in text
    assert text.count("paired t-test p=") == 3 and text.count("(Holm-adjusted)") == 6
    assert "| correctness |" in markdown_report(res)

    with store.connect(tmp_path / "ab.duckdb") as conn:
        store_ab(conn, res)
        crit = conn.execute(
            "SELECT criterion, n, verdict FROM ab_criterion_comparisons ORDER BY criterion"
        ).fetchall()
        per_case = conn.execute(
            "SELECT criterion, count(*) FROM ab_criterion_scores GROUP BY 1 ORDER BY 1"
        ).fetchall()
        first = conn.execute("SELECT count(*) FROM ab_case_scores").fetchone()[0]
        cached = conn.execute(
            "SELECT criterion, rubric_version, count(*) FROM judgments GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert crit == [
        ("correctness", n, S.B_WINS),
        ("quality", n, S.NO_DIFFERENCE),
        ("safety", n - 1, S.NO_DIFFERENCE),
    ]
    assert per_case == [("correctness", 2 * n), ("quality", 2 * n), ("safety", 2 * n)]
    assert first == 2 * n  # the judge's first criterion, one row per (case, variant)
    assert cached == [
        ("correctness", "correctness-v1", 2 * n),
        ("quality", "quality-v1", 2 * n),
        ("safety", "safety-v1", 2 * n),
    ]


def test_a_case_names_its_criteria_and_an_unknown_one_is_a_setup_error():
    judge = CriteriaJudge({"quality": lambda i, v: 4, "safety": lambda i, v: 5})
    res = compare_variants(make_cases(5, ["safety"]), variants(), judge, SPEC)
    (rep,) = res.reports
    assert list(rep.criteria) == ["safety"] and rep.scores is None
    with pytest.raises(ABSetupError, match="not configured for: correctness"):
        compare_variants(make_cases(5, ["correctness"]), variants(), judge, SPEC)


def test_one_criterion_is_the_run_it_always_was():
    cases = make_cases(12)
    one = compare_variants(cases, variants(), LengthJudge(), SPEC)
    (rep,) = one.reports
    assert rep.criteria == {} and all(r.criterion is None for r in one.case_scores)
    assert one.judgment_criteria == {}
    text = "\n".join(verdict_lines(one))
    assert "criterion" not in text
    assert "  judge scores 1-5 (n=12, excluded 0): mean A 1.00, mean B 1.00" in text
    # A judge configured for one criterion (versions with one entry) gives the same lines.
    single = CriteriaJudge({"quality": lambda i, v: 1})
    same = compare_variants(cases, variants(), single, SPEC)
    assert same.reports[0].criteria == {}
    strip = lambda lines: [x for x in lines if not x.startswith("judge:")]  # noqa: E731
    assert strip(verdict_lines(same)) == strip(verdict_lines(one))


def _rule(noise: dict, k: int):
    return lambda i, v: noise[(v, k)][i]


def _margin(p: float, n: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / n)  # three standard errors of a simulated share


def test_several_criteria_with_no_true_difference_win_at_most_alpha():
    """Four criteria, two challengers, no true difference anywhere: the share of runs with
    any win (the family-wise false-positive rate) stays at alpha under the one Holm family,
    and is well above it with each test at alpha on its own."""
    experiments, n = 300, 30
    names = ["quality", "correctness", "relevance", "safety"]
    rng = np.random.default_rng(20261130)
    cases = make_cases(n)
    vs = variants_from_targets(
        [f"{HERE}:answer_a", f"{HERE}:answer_b", f"{HERE}:answer_c"], concurrency=4
    )
    any_win = any_raw = 0
    for _ in range(experiments):
        latent = rng.uniform(1, 5, (n, len(names)))
        noise = {
            (v, k): np.clip(np.rint(latent[:, k] + rng.normal(0, 0.8, n)), 1, 5)
            for v in "ABC"
            for k in range(len(names))
        }
        rules = {name: _rule(noise, k) for k, name in enumerate(names)}
        res = compare_variants(cases, vs, CriteriaJudge(rules), SPEC)
        tests = [c for r in res.reports for c in r.criteria.values()]
        assert len(tests) == 8 and all(c.n_comparisons == 8 for c in tests)
        any_win += any(c.verdict in (S.A_WINS, S.B_WINS) for c in tests)
        any_raw += any(c.t_p is not None and c.t_p < S.ALPHA and c.clears_floor for c in tests)
    fwer, raw = any_win / experiments, any_raw / experiments
    assert fwer <= S.ALPHA + _margin(S.ALPHA, experiments)
    assert raw > 2 * S.ALPHA  # without the correction, eight looks would find "wins"


def answer_c(value, **_):
    return f"C says: {value}"


def test_the_report_keeps_its_json_details_per_criterion(tmp_path):
    judge = CriteriaJudge({"quality": lambda i, v: 3, "safety": lambda i, v: 5})
    res = compare_variants(make_cases(4), variants(), judge, SPEC)
    with store.connect(tmp_path / "ab.duckdb") as conn:
        store_ab(conn, res)
        (details,) = conn.execute(
            "SELECT details FROM ab_criterion_comparisons WHERE criterion = 'safety'"
        ).fetchone()
    assert json.loads(details)["n_comparisons"] == 2
