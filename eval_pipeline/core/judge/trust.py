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

import datetime as dt
import math
import os
from dataclasses import dataclass

import duckdb

from eval_pipeline.core.judge import agreement as ag
from eval_pipeline.core.judge import anchors, labels
from eval_pipeline.core.judge.agreement import TrustStatus

# Whether drift on the scores of an unvalidated judge may page someone (default: yes, since
# a new installation has no labels yet; set "false" once labelling is routine).
PAGE_ENV = "EVAL_UNVALIDATED_JUDGE_MAY_PAGE"


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


def for_judge(
    conn: duckdb.DuckDBPyConnection,
    name: str | None,
    model: str | None,
    rubric_version: str | None,
    **kwargs,
) -> TrustStatus | None:
    """The trust status of the judge that scored a gate run or an A/B test (None: no judge)."""
    if not name or not rubric_version:
        return None
    return judge_trust_status(conn, labels.JudgeIdentity(name, model, rubric_version), **kwargs)


@dataclass
class DayJudgeTrust:
    """What a day's drift report, incident or notification says about its judge."""

    day: dt.date
    status: TrustStatus | None  # None: nothing was judged that day
    judge_changed: list[str]  # verdicts of that day's judge-drift findings (empty: none)

    @property
    def app_drift_is_judge(self) -> bool:
        """True: the day's score drift is the judge's; mark app findings "judge changed"."""
        return bool(self.judge_changed)

    def line(self) -> str:
        if self.status is None:
            return "judge: nothing judged this day"
        text = self.status.line()
        return f"{text}; JUDGE CHANGED this day" if self.judge_changed else text


def for_day(conn: duckdb.DuckDBPyConnection, day: dt.date, **kwargs) -> DayJudgeTrust:
    """The trust status of the judge that scored ``day`` and that day's judge-drift findings."""
    identity = anchors.identity_of_day(conn, day)
    status = judge_trust_status(conn, identity, **kwargs) if identity else None
    return DayJudgeTrust(day, status, anchors.judge_changed(conn, day))


def may_page(day_trust: DayJudgeTrust, env: dict[str, str] | None = None) -> bool:
    """May the day's app-drift findings page someone?

    Never when the judge changed that day (a judge-drift incident is opened instead); when
    the judge is unvalidated, as $EVAL_UNVALIDATED_JUDGE_MAY_PAGE says (default true).
    """
    if day_trust.app_drift_is_judge:
        return False
    if day_trust.status is None or day_trust.status.validated:
        return True
    value = (os.environ if env is None else env).get(PAGE_ENV, "true").strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{PAGE_ENV} must be true or false, not {value!r}")
    return value in ("true", "1", "yes")
