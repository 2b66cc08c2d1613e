"""The demo traffic's RAG segment and its groundedness regression: the shipping traces carry
their retrieved documents, and on the ungrounded days only a groundedness check sees the
change (the heuristic quality judge, the answers' lengths and the billing story do not)."""

from __future__ import annotations

import datetime as dt
import json
import statistics

from scipy.stats import mannwhitneyu

from eval_pipeline.core import store
from eval_pipeline.core.judge import rules
from eval_pipeline.core.judge.base import HeuristicJudge, JudgeRequest
from eval_pipeline.core.sources.inbox import InboxSource
from eval_pipeline.core.sources.ingest import ingest_day
from eval_pipeline.demo import traffic

BEFORE = [traffic.UNGROUNDED_START - dt.timedelta(days=d) for d in range(1, 6)]
DURING = [
    traffic.UNGROUNDED_START + dt.timedelta(days=d)
    for d in range((traffic.UNGROUNDED_END - traffic.UNGROUNDED_START).days + 1)
]


def shipping(days: list[dt.date]) -> list[dict]:
    return [t for d in days for t in traffic.day_traces(d) if t["segment"] == traffic.RAG_SEGMENT]


def test_the_groundedness_regression_does_not_overlap_the_billing_one():
    assert traffic.START < traffic.UNGROUNDED_START <= traffic.UNGROUNDED_END
    assert traffic.UNGROUNDED_END < traffic.REGRESSION_START
    assert traffic.RAG_SEGMENT != traffic.REGRESSED_SEGMENT


def test_only_shipping_carries_documents_and_only_its_ungrounded_days_are_ungrounded():
    for day in (BEFORE[0], DURING[0], traffic.REGRESSION_START):
        for t in traffic.day_traces(day):
            flaw = t["metadata"]["flaw"]
            if t["segment"] == traffic.RAG_SEGMENT:
                assert len(t["retrieved_documents"]) == 3
            else:
                assert "retrieved_documents" not in t
            assert (flaw == "ungrounded") <= (day in DURING and t["segment"] == "shipping")
    # the billing regression is as it was: v2 and refusals on its days only
    billing = [t for t in traffic.day_traces(traffic.REGRESSION_START) if t["segment"] == "billing"]
    refusals = sum(t["metadata"]["flaw"] == "refusal" for t in billing) / len(billing)
    assert 0.3 < refusals < 0.5
    assert {t["prompt_version"] for t in billing} == {"v2"}
    assert all(t["prompt_version"] == "v1" for d in DURING for t in traffic.day_traces(d))


def test_only_groundedness_sees_the_ungrounded_days():
    """One-sided Mann-Whitney U tests, shipping traces of the five days before against the
    ungrounded days (independent traces; ordinal scores, ties handled by the test)."""
    before, during = shipping(BEFORE), shipping(DURING)
    judge = HeuristicJudge()

    def quality(ts):
        return [
            judge.judge_one(JudgeRequest(t["user_query"], t["assistant_response"])).score
            for t in ts
        ]

    def grounded(ts):
        scores = [
            rules.groundedness(t["assistant_response"], t["retrieved_documents"], t["user_query"])
            for t in ts
        ]
        return [s.score for s in scores if s.score is not None]

    q_before, q_during = quality(before), quality(during)
    g_before, g_during = grounded(before), grounded(during)
    assert mannwhitneyu(g_during, g_before, alternative="less").pvalue < 1e-12
    assert statistics.mean(g_before) - statistics.mean(g_during) > 1.5
    # The quality judge sees no drop (its rules score the ungrounded answers like good ones).
    assert mannwhitneyu(q_during, q_before, alternative="less").pvalue > 0.05
    assert abs(statistics.mean(q_before) - statistics.mean(q_during)) < 0.1
    # Answer lengths stay about the same.
    mean_len = [
        statistics.mean(len(t["assistant_response"]) for t in ts) for ts in (before, during)
    ]
    assert abs(mean_len[0] - mean_len[1]) / mean_len[0] < 0.05


def test_a_generated_day_ingests_with_its_documents(tmp_path):
    inbox = tmp_path / "inbox"
    traffic.generate(inbox)  # every day's file; one is ingested
    day = DURING[0]
    with store.connect(tmp_path / "t.duckdb") as conn:
        res = ingest_day(conn, InboxSource(inbox, settle_seconds=0), day)
        assert res.rows_rejected == 3  # only the deliberately malformed lines
        rows = conn.execute(
            "SELECT segment, context FROM raw_traces WHERE segment IN ('shipping', 'billing')"
        ).fetchall()
    for segment, context in rows:
        if segment == "shipping":
            docs = json.loads(context)
            assert [d["id"] for d in docs][-1] == "kb-freight" and all(d["text"] for d in docs)
        else:
            assert context is None
