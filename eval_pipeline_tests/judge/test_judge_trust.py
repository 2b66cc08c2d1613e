"""Agreement with people, the trust status and the anchor set (judge drift vs app drift)."""

from __future__ import annotations

import datetime as dt
import json
import math

import dagster as dg
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from eval_pipeline import cli, settings
from eval_pipeline.core import store
from eval_pipeline.core.drift import budget
from eval_pipeline.core.judge import agreement as ag
from eval_pipeline.core.judge import anchor_stats, anchors, labels, trust
from eval_pipeline.core.judge.base import judgment_key
from eval_pipeline.defs import judge_trust
from eval_pipeline.defs.resources import EvalStore, JudgeResource
from eval_pipeline_tests.judge.trust_fixtures import DAY, SimJudge, add_day

IDENT = "sim|sim-model|sim-v1"


# --- kappa --------------------------------------------------------------------------------


def test_kappa_on_the_published_two_category_example():
    # Cohen's kappa worked example (Wikipedia, "Cohen's kappa"): 50 proposals, both readers
    # yes 20, A yes / B no 5, A no / B yes 10, both no 15: p_o 0.7, p_e 0.5, kappa 0.4. On
    # two categories quadratic weights are the unweighted kappa's.
    a = [2] * 20 + [2] * 5 + [1] * 10 + [1] * 15
    b = [2] * 20 + [1] * 5 + [2] * 10 + [1] * 15
    assert ag.weighted_kappa(a, b) == pytest.approx(0.4)
    low, high = ag.kappa_interval(a, b)
    assert low < 0.4 < high
    assert 0.2 < high - low < 0.8  # n = 50: a wide interval, not a point


@pytest.mark.parametrize("seed", range(8))
def test_kappa_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    human = rng.integers(1, 6, n)
    noise = rng.integers(-2, 3, n) * (rng.random(n) < 0.5)
    judge = np.clip(human + noise + int(rng.integers(-1, 2)), 1, 5)
    if seed == 0:
        judge = np.clip(judge, 2, 4)  # a judge that never uses the ends of the scale
    expected = cohen_kappa_score(judge, human, weights="quadratic")
    assert ag.weighted_kappa(judge, human) == pytest.approx(expected, abs=1e-12)


def test_kappa_is_vectorised_over_resamples():
    rng = np.random.default_rng(3)
    a, b = rng.integers(1, 6, (7, 40)), rng.integers(1, 6, (7, 40))
    batch = ag.weighted_kappa(a, b)
    for i in range(7):
        assert batch[i] == pytest.approx(cohen_kappa_score(a[i], b[i], weights="quadratic"))


def test_kappa_undefined_when_both_raters_are_constant():
    assert math.isnan(ag.weighted_kappa([3, 3, 3], [3, 3, 3]))
    assert all(math.isnan(x) for x in ag.kappa_interval([3] * 10, [3] * 10))


def test_interval_narrows_with_more_labels():
    rng = np.random.default_rng(11)
    human = rng.integers(1, 6, 400)
    judge = np.clip(human + rng.integers(-1, 2, 400), 1, 5)
    low20, high20 = ag.kappa_interval(judge[:20], human[:20])
    low400, high400 = ag.kappa_interval(judge, human)
    assert high400 - low400 < (high20 - low20) / 2
    k = ag.weighted_kappa(judge, human)
    assert low400 < k < high400


def test_agreement_figures_by_hand():
    judge = [5, 4, 3, 2, 1, 5]
    human = [5, 4, 3, 2, 3, 1]
    res = ag.agreement(judge, human, items=list("abcdef"))
    assert res.n == 6
    assert res.exact == pytest.approx(4 / 6)
    assert res.within_one == pytest.approx(4 / 6)
    assert res.mean_bias == pytest.approx((0 + 0 + 0 + 0 - 2 + 4) / 6)
    assert res.confusion[0][4] == 1  # person 1, judge 5
    assert res.confusion[2][0] == 1  # person 3, judge 1
    assert [d.item for d in res.largest] == ["f", "e"]
    assert res.spearman == pytest.approx(
        __import__("scipy").stats.spearmanr(judge, human).statistic
    )
    with pytest.raises(ValueError):
        ag.agreement([1, 6], [1, 2])


# --- trust status -------------------------------------------------------------------------


def _label_all(conn, n, labeller="ann", off_by=0):
    items = labels.queue(conn, IDENT, labeller)
    for it in items[:n]:
        # The person gives the true quality (from the text); off_by disagrees on purpose.
        q = int(it.response.split("quality ")[1][0])
        labels.record(conn, it, labeller, max(1, min(5, q + off_by)))


def test_status_says_why_it_is_unvalidated_then_validates_at_the_label_count():
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 80, SimJudge())
        s = trust.judge_trust_status(conn, IDENT)
        assert s.status == "unvalidated" and s.reason.startswith("0 labels; κ undefined")
        _label_all(conn, 49)
        s = trust.judge_trust_status(conn, IDENT)
        assert s.status == "unvalidated" and s.n_labels == 49
        assert s.reason == "49 labels; κ 1.00 [1.00, 1.00]; needs 50 labels"
        _label_all(conn, 1)
        s = trust.judge_trust_status(conn, IDENT)
        assert s.validated and s.n_labels == 50, s.reason
        assert "judge sim|sim-model|sim-v1: validated (50 labels" in s.line()


def test_a_judge_that_disagrees_is_not_validated_by_many_labels():
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 80, SimJudge(bias=0))
        items = labels.queue(conn, IDENT, "bob")
        rng = np.random.default_rng(0)
        for it in items:
            labels.record(conn, it, "bob", int(rng.integers(1, 6)))  # a person at random
        s = trust.judge_trust_status(conn, IDENT)
    assert s.status == "unvalidated" and s.n_labels == 80
    assert "lower bound below 0.6" in s.reason and s.kappa_low < 0.6


def test_a_judge_with_one_score_for_everything_is_named():
    res = ag.agreement([1] * 60, [1, 5] * 30)
    s = ag.trust_from("x|m|r", res)
    assert res.kappa == 0 and not s.validated
    assert "the judge gave every labelled trace a 1" in s.reason


def test_a_review_records_the_reviewers_score_of_the_trace():
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 3, SimJudge())
        labels.record_for_trace(conn, "t0301-001", "rev", 4)
        with pytest.raises(labels.LabelError, match="has no ok judgment"):
            labels.record_for_trace(conn, "unknown", "rev", 4)
        with pytest.raises(labels.LabelError, match="has no ok judgment"):
            labels.record_for_trace(conn, "t0301-002", "rev", 4, DAY + dt.timedelta(days=1))
        with pytest.raises(labels.LabelError, match="outside 1-5"):
            labels.record_for_trace(conn, "t0301-002", "rev", 0)
        rows = conn.execute("SELECT trace_id, source, human_score FROM judge_labels").fetchall()
    assert rows == [("t0301-001", "review", 4)]


def test_latest_label_per_trace_counts_and_labels_follow_the_trace():
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 10, SimJudge())
        _label_all(conn, 10, "ann", off_by=0)
        _label_all(conn, 10, "bob", off_by=1)  # later: counts
        pairs = labels.paired_scores(conn, IDENT)
        assert len(pairs) == 10 and set(pairs["labeller"]) == {"bob"}


# --- labels: queue, export, import --------------------------------------------------------


def test_queue_is_stratified_by_the_judges_score_and_resumes():
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 50, SimJudge())
        q = labels.queue(conn, IDENT, "ann", limit=10)
        assert sorted(it._judge_score for it in q) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        labels.record(conn, q[0], "ann", 3)
        again = labels.queue(conn, IDENT, "ann", limit=9)
        assert [it.trace_id for it in again] == [it.trace_id for it in q[1:]]
        assert len(labels.queue(conn, IDENT, "someone-else")) == 50
        plain = labels.queue(conn, IDENT, "ann", limit=10, stratify=False)
        assert len(plain) == 10 and q[0].trace_id not in {it.trace_id for it in plain}
        assert [it.trace_id for it in plain] != [it.trace_id for it in again[:10]]


def test_export_hides_the_judge_and_import_is_all_or_nothing(tmp_path):
    path = tmp_path / "labels.jsonl"
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 6, SimJudge())
        n = labels.export_queue(labels.queue(conn, IDENT, "ann"), path)
        assert n == 6
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert all("judge_score" not in x and x["score"] is None for x in lines)
        assert all(x["response"].startswith("answer ") for x in lines)
        assert {x["trace_id"] for x in lines} == {f"t0301-{i:03d}" for i in range(6)}
        lines[0]["score"] = 4
        lines[1]["score"] = 9  # out of range
        lines[2]["score"] = 2
        lines[3]["trace_id"] = "nope"
        lines[3]["score"] = 1
        lines[5]["score"] = 3
        lines[5]["note"] = "\ud800"  # a lone surrogate, as JSON allows
        path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
        res = labels.import_labels(conn, path, "ann")
        assert res.recorded == 0 and len(res.errors) == 4
        assert "line 2: score must be an integer 1-5" in res.errors[0]
        assert "line 4: no ok judgment" in res.errors[1]
        assert res.errors[2] == "line 6: note is not valid Unicode (a lone surrogate)"
        assert res.errors[3].startswith("line 7: not JSON")
        assert conn.execute("SELECT count(*) FROM judge_labels").fetchone()[0] == 0
        lines[1]["score"] = None
        lines[3]["score"] = None
        lines[5]["score"] = None
        path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        res = labels.import_labels(conn, path, "ann")
        assert (res.recorded, res.skipped, res.errors) == (2, 4, [])
        rows = conn.execute("SELECT labeller, source, judge_identity FROM judge_labels").fetchall()
        assert rows == [("ann", "import", IDENT)] * 2


# --- anchors ------------------------------------------------------------------------------


def test_anchor_set_is_chosen_once_and_bypasses_the_cache():
    judge = SimJudge()
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 30, judge)
        fixed, how = anchors.choose(conn, size=50, until=DAY)
        assert fixed == [] and "30 judged traces, 50 needed" in how
        add_day(conn, DAY + dt.timedelta(days=1), 30, judge)
        fixed, how = anchors.choose(conn, size=50)
        assert len(fixed) == 50 and "chosen now" in how
        again, how = anchors.choose(conn, size=20)
        assert again == fixed and "fixed" in how
        # Every anchor is in the judgment cache already: the drift loop would ask nothing.
        keys = [judgment_key(judge, a.request) for a in fixed]
        cached = conn.execute(
            "SELECT count(*) FROM judgments WHERE judgment_key IN (SELECT unnest(?))", [keys]
        ).fetchone()[0]
        assert cached == len(set(keys))
    judge.calls = 0
    run = anchors.rejudge(judge, fixed, repeats=1)
    assert judge.calls == 100  # 50 anchors x 2 passes, none from the cache
    assert [len(p) for p in run.passes] == [50, 50]


def _anchor_day(conn, day, judge, repeats=0):
    fixed, _ = anchors.choose(conn, size=50)
    ident = labels.JudgeIdentity.of(judge)
    run = anchors.rejudge(judge, fixed, anchors.repeats_for(conn, ident, repeats, run_date=day))
    anchors.record_run(conn, day, ident, fixed, run, judge)
    f = anchors.compare(conn, day, ident)
    anchors.store_finding(conn, f)
    return f


def test_a_swapped_judge_is_judge_drift_a_stable_one_is_not(capsys):
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 60, SimJudge())
        f0 = _anchor_day(conn, DAY, SimJudge())
        assert not f0.judge_drift and "baseline" in f0.verdict
        f1 = _anchor_day(conn, DAY + dt.timedelta(days=1), SimJudge(), repeats=1)
        assert not f1.judge_drift and f1.p_value == 1.0 and f1.mean_shift == 0
        assert f1.retest_kappa == pytest.approx(1.0) and f1.retest_exact == 1.0
        # Same name, model and rubric; the provider changed what is behind them.
        swapped = SimJudge(bias=-1)
        day2 = DAY + dt.timedelta(days=2)
        f2 = _anchor_day(conn, day2, swapped)
        assert f2.judge_drift and f2.baseline_date == DAY and f2.mean_shift < -0.5
        assert f2.p_value < 0.01 and f2.verdict.startswith("JUDGE CHANGED")
        assert anchors.judge_changed(conn, day2) == [f2.verdict]
        assert anchors.judge_changed(conn, DAY + dt.timedelta(days=1)) == []
        # The status carries it, whatever the labels say.
        _label_all(conn, 60)
        s = trust.judge_trust_status(conn, IDENT)
        assert s.status == "unvalidated" and s.judge_changed_on == day2.isoformat()
        assert "judge changed on 2026-03-03" in s.reason
        costs = conn.execute(
            "SELECT run_date, kind, judge_calls, prompt_tokens FROM judge_anchor_accounting"
            " ORDER BY 1, 2"
        ).fetchall()
        assert costs[:4] == [
            (DAY, "anchors", 50, 500),
            (DAY, "retest", 150, 1500),  # the first scoring is always repeated 3 times
            (DAY + dt.timedelta(days=1), "anchors", 50, 500),
            (DAY + dt.timedelta(days=1), "retest", 50, 500),
        ]
    # The anchors' cost shows on its own lines beside the drift loop's.
    assert cli.main(["judge", "costs"]) == 0
    out = capsys.readouterr().out
    assert "2026-03-02  anchors       50        50       500         -  sim|sim-model|sim-v1" in out
    assert "2026-03-01  retest       150       150      1500         -  sim|sim-model|sim-v1" in out
    assert "2026-03-02  retest        50        50       500         -  sim|sim-model|sim-v1" in out
    assert cli.main(["judge", "agreement"]) == 0
    out = capsys.readouterr().out
    assert (
        "test-retest:    κ 1.00, exact 1.00 (the judge against itself on the anchors, 2026-03-02)"
        in out
    )
    assert (
        "trust:          unvalidated (60 labels; κ 1.00 [1.00, 1.00]; lower bound ≥ 0.6; judge changed on 2026-03-03"
        in out
    )


def test_day_trust_marks_judge_change_and_decides_paging():
    day2 = DAY + dt.timedelta(days=1)
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 60, SimJudge())
        add_day(conn, day2, 5, SimJudge())
        _anchor_day(conn, DAY, SimJudge())
        _anchor_day(conn, day2, SimJudge(bias=1))
        first, second = trust.for_day(conn, DAY), trust.for_day(conn, day2)
        empty = trust.for_day(conn, DAY - dt.timedelta(days=1))
    assert first.status.judge_identity == IDENT and not first.app_drift_is_judge
    assert second.app_drift_is_judge and "JUDGE CHANGED this day" in second.line()
    assert empty.status is None and trust.may_page(empty)
    assert not trust.may_page(second)  # judge drift: never an app page
    assert first.status.status == "unvalidated"
    assert trust.may_page(first, env={})
    assert not trust.may_page(first, env={trust.PAGE_ENV: "false"})
    with pytest.raises(ValueError, match="must be true or false"):
        trust.may_page(first, env={trust.PAGE_ENV: "maybe"})


def test_paired_test_ignores_symmetric_noise_below_the_floor():
    rng = np.random.default_rng(5)
    base = rng.integers(1, 6, 50)
    noisy = np.clip(base + rng.choice([-1, 0, 0, 0, 1], 50), 1, 5)
    again = np.clip(base + rng.choice([-1, 0, 0, 0, 1], 50), 1, 5)
    res = anchor_stats.paired_test(base, noisy, again)
    assert not res.judge_drift and 0 < res.changed_share < 1
    res = anchor_stats.paired_test(base, np.clip(base + 1, 1, 5), again)
    assert res.judge_drift and res.shift > 0.5 and res.p_shift < 0.005


def test_permutation_rule_false_rate_on_a_noisy_judge_is_within_alpha():
    # A judge sampled at temperature > 0: scores vary call to call around a per-anchor
    # value. On clean days (same judge) the rule must find drift in at most alpha of days.
    found = []
    for s in range(300):
        rng = np.random.default_rng([7, s])
        true = rng.uniform(1, 5, 50)

        def draw(rng=rng, true=true):
            return np.clip(np.rint(true + rng.normal(0, 0.5, 50)), 1, 5)

        first, reps, today = draw(), [draw() for _ in range(3)], draw()
        found.append(anchor_stats.paired_test(first, today, reps).judge_drift)
    assert np.mean(found) <= 0.02  # alpha 0.01; 300 days: a binomial margin


def test_spread_test_uses_every_repeat_of_the_first_scoring():
    rng = np.random.default_rng(3)
    true = rng.uniform(1, 5, 50)

    def draw(center):
        return np.clip(np.rint(center + rng.normal(0, 0.5, 50)), 1, 5)

    first, reps = draw(true), [draw(true) for _ in range(3)]
    # Another judge: its own per-anchor errors, the same mean.
    other = draw(true + rng.normal(0, 0.8, 50))
    res = anchor_stats.paired_test(first, other, reps)
    assert res.judge_drift and res.p_spread < 0.005 and res.spread_excess > 0.3
    assert anchor_stats.paired_test(first, other).p_spread is None  # no repeats: no noise measure


def test_spread_test_catches_a_new_judge_with_the_same_mean():
    rng = np.random.default_rng(8)
    base = rng.integers(2, 5, 50)
    other = base.copy()
    rng.shuffle(other)  # the same scores, given to other answers: the mean does not move
    res = anchor_stats.paired_test(base, other, base)  # a deterministic judge: repeat == first
    assert res.shift == 0 and res.p_shift > 0.5
    assert res.judge_drift and res.p_spread < 0.005 and res.spread_excess > 0.2
    assert not anchor_stats.paired_test(base, base, base).judge_drift


# --- Dagster ------------------------------------------------------------------------------


class SimJudgeResource(JudgeResource):
    bias: int = 0

    def build(self):
        return SimJudge(bias=self.bias)


def test_assets_show_calibration_and_judge_drift():
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 60, SimJudge())
        _label_all(conn, 55)
    instance = dg.DagsterInstance.ephemeral()
    res = {"store": EvalStore(), "judge": SimJudgeResource()}
    cal = dg.materialize([judge_trust.judge_calibration], resources=res, instance=instance)
    meta = {
        k: v.value
        for k, v in cal.asset_materializations_for_node("judge_calibration")[0].metadata.items()
    }
    assert meta["trust_status"] == "validated" and meta["n_labels"] == 55
    assert meta["kappa"] == pytest.approx(1.0) and isinstance(meta["kappa_low"], float)
    for day, bias in ((DAY, 0), (DAY + dt.timedelta(days=1), 1)):
        out = dg.materialize(
            [judge_trust.judge_anchors],
            resources={**res, "judge": SimJudgeResource(bias=bias)},
            instance=instance,
            partition_key=day.isoformat(),
        )
        m = out.asset_materializations_for_node("judge_anchors")[0].metadata
        assert m["judge_drift"].value is bool(bias)
        check = out.get_asset_check_evaluations()[0]
        assert check.passed is not bool(bias)
        # The anchors and their repeats are their own lines in the judge's daily ledger.
        repeats = 150 if day == DAY else 0  # the first scoring is repeated 3 times
        assert m["anchors_calls"].value == 50 and m["repeats_calls"].value == repeats
        assert m["judge_spend_lines"].value == {
            "anchors": {"calls": 50, "cost": None},
            "repeats": {"calls": repeats, "cost": None},
        }
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        assert trust.judge_trust_status(conn, IDENT).status == "unvalidated"
        ledger = conn.execute(
            "SELECT partition_date, judge, purpose, calls FROM judge_spend ORDER BY 1, 3"
        ).fetchall()
        # The judge's accounting against its budget shows them as lines of their own.
        key = "sim/sim-model/sim-v1"
        acct = budget.accounting(conn, DAY, budget.Budget(key, calls_per_day=1000))
        assert acct["lines"]["anchors"]["calls"] == 50 and acct["calls"] == 200
        assert acct["lines"]["repeats"]["calls"] == 150
    assert ledger == [
        (DAY, key, "anchors", 50),
        (DAY, key, "repeats", 150),
        (DAY + dt.timedelta(days=1), key, "anchors", 50),
        (DAY + dt.timedelta(days=1), key, "repeats", 0),
    ]


def test_no_anchor_finding_without_judged_traces():
    # An empty store: the asset says why, and the judge is never asked.
    res = {"store": EvalStore(), "judge": SimJudgeResource()}
    out = dg.materialize([judge_trust.judge_anchors], resources=res, partition_key=DAY.isoformat())
    m = out.asset_materializations_for_node("judge_anchors")[0].metadata
    assert "0 judged traces" in m["anchor_set"].value


def test_store_judgments_unrelated_to_anchor_rows():
    # The anchors never write the judgment cache: a cached score stays what the drift loop
    # stored, even after the anchors were re-judged by a different judge.
    judge = SimJudge()
    with store.connect(settings.duckdb_path()) as conn:
        add_day(conn, DAY, 50, judge)
        before = conn.execute("SELECT count(*), sum(score) FROM judgments").fetchone()
        _anchor_day(conn, DAY, SimJudge(bias=2))
        after = conn.execute("SELECT count(*), sum(score) FROM judgments").fetchone()
        assert before == after
