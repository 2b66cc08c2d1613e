"""The trust status of a judge identity, for every report that rests on the judge's scores.

``judge_trust_status(conn, identity)`` reads the labels and the anchor findings:

- *validated*: at least ``min_labels`` labels and the lower bound of kappa's 95% interval at
  least ``bar``, and the judge has not changed since (its latest anchor run found no judge
  drift);
- *unvalidated* otherwise, with the reason ("23 labels; κ 0.71 [0.48, 0.86]; needs 50
  labels"). A judge whose latest anchor run found judge drift is unvalidated whatever its
  labels say: they were given against the judge it was before.

When test-retest repeats have run, a judge that agrees with itself less than with people
(retest kappa below human kappa) is flagged in the reason.
"""

from __future__ import annotations

import math

import duckdb

from eval_pipeline.core.judge import agreement as ag
from eval_pipeline.core.judge import labels
from eval_pipeline.core.judge.agreement import TrustStatus


def identity_key(judge_identity: str | labels.JudgeIdentity) -> str:
    if isinstance(judge_identity, labels.JudgeIdentity):
        return judge_identity.key
    return labels.JudgeIdentity.parse(judge_identity).key


def agreement_for(
    conn: duckdb.DuckDBPyConnection, judge_identity: str | labels.JudgeIdentity, **kwargs
) -> ag.Agreement:
    pairs = labels.paired_scores(conn, identity_key(judge_identity))
    names = [f"{d}/{t}" for d, t in zip(pairs["partition_date"], pairs["trace_id"], strict=True)]
    return ag.agreement(
        pairs["judge_score"].to_numpy(int), pairs["human_score"].to_numpy(int), names, **kwargs
    )


def judge_trust_status(
    conn: duckdb.DuckDBPyConnection,
    judge_identity: str | labels.JudgeIdentity,
    min_labels: int = ag.MIN_LABELS,
    bar: float = ag.KAPPA_BAR,
    result: ag.Agreement | None = None,
) -> TrustStatus:
    """The trust status of a judge identity ('name|model|rubric_version' or a JudgeIdentity).

    Never raises for a judge with no labels or no anchors: it is then unvalidated, saying so.
    """
    key = identity_key(judge_identity)
    result = result if result is not None else agreement_for(conn, key)
    status = ag.trust_from(key, result, min_labels, bar)
    latest = conn.execute(
        "SELECT run_date, judge_drift, mean_shift FROM judge_drift_findings"
        " WHERE judge_identity = ? ORDER BY run_date DESC LIMIT 1",
        [key],
    ).fetchone()
    if latest is not None and latest[1]:
        status.judge_changed_on = latest[0].isoformat()
        status.status = "unvalidated"
        status.reason += (
            f"; judge changed on {latest[0]} (anchor scores {latest[2]:+.2f}): "
            "its labels describe the judge before the change"
        )
    retest = conn.execute(
        "SELECT retest_kappa FROM judge_drift_findings WHERE judge_identity = ?"
        " AND retest_kappa IS NOT NULL ORDER BY run_date DESC LIMIT 1",
        [key],
    ).fetchone()
    if retest is not None and not math.isnan(result.kappa) and retest[0] < result.kappa:
        status.reason += f"; disagrees with itself (retest κ {retest[0]:.2f}) more than with people"
    return status
