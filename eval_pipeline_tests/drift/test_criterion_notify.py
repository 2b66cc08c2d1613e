"""A criterion's incidents notify through quality's lifecycle: ids of their own, the
criterion named in the message, one message per (incident, event, channel) across re-runs."""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np

from eval_pipeline.core import store
from eval_pipeline.core.drift.criteria_history import criteria_events, recompute_criteria
from eval_pipeline.core.drift.history import events as quality_events
from eval_pipeline.core.drift.history import recompute
from eval_pipeline.core.notify import lifecycle as notify
from eval_pipeline.core.notify.events import IncidentEvent
from eval_pipeline.core.notify.lifecycle import ChannelConfig
from eval_pipeline_tests.webhook_server import WebhookReceiver

START = dt.date(2026, 9, 1)
DAYS = 36
deliver = functools.partial(notify.deliver, sleep=lambda seconds: None)


def _insert(conn, day, criterion, scores, segment):
    conn.executemany(
        "INSERT INTO judge_scores (partition_date, trace_id, segment, judgment_key, state, "
        "score, judge_name, judge_model, rubric_version, cache_hit, criterion) "
        "VALUES (?, ?, ?, ?, 'ok', ?, 'openai', 'm', ?, false, ?)",
        [
            (
                day,
                f"{segment}-{i}",
                segment,
                f"{criterion}-{segment}-{day}-{i}",
                int(x),
                f"{criterion}-v1#x",
                criterion,
            )
            for i, x in enumerate(scores)
        ],
    )


def _store(conn, billing: bool = True):
    """Quality steady; groundedness drops on days 24-29 in docs and recovers after; billing
    stays healthy."""
    rng = np.random.default_rng(11)
    for k in range(DAYS):
        day = START + dt.timedelta(days=k)
        _insert(conn, day, "quality", rng.choice([3, 4, 5], size=80), "docs")
        grounded = rng.choice([1, 2, 3] if 24 <= k <= 29 else [4, 5], size=80)
        _insert(conn, day, "groundedness", grounded, "docs")
        for criterion in ("quality", "groundedness") if billing else ("quality",):
            _insert(conn, day, criterion, rng.choice([4, 5], size=80), "billing")


def test_a_criterion_incident_is_notified_on_open_and_resolve_once(tmp_path):
    last = START + dt.timedelta(days=DAYS - 1)
    with (
        store.connect(tmp_path / "d.duckdb") as conn,
        WebhookReceiver(path="/services/T0/B0/slacktoken123") as slack,
    ):
        _store(conn)
        quality = recompute(conn)
        histories = recompute_criteria(conn)
        planned = quality_events(quality, through=last) + criteria_events(histories, through=last)
        events = [IncidentEvent(**e) for e in planned]
        cfg = ChannelConfig(slack_url=slack.url)
        first = deliver(conn, events, cfg, today=last, notify_within_days=DAYS)
        again = deliver(conn, events, cfg, today=last, notify_within_days=DAYS)
        sent = conn.execute(
            "SELECT incident_id, event FROM notifications WHERE status = 'sent' ORDER BY day"
        ).fetchall()
    assert not quality.incidents
    # One incident: the overall row's alarm joins docs' (its cause names the segment).
    (inc,) = histories["groundedness"].incidents
    assert inc.segments[0] == "docs"
    assert inc.resolved_on is not None
    ident = f"groundedness:{inc.incident_id}"
    assert {e.incident_id for e in events} == {ident}
    assert all(e.details["criterion"] == "groundedness" for e in events)
    assert sent == [(ident, "opened"), (ident, "resolved")]
    assert (first.sent, again.sent, again.already_sent) == (2, 0, 2)
    texts = [p["json"]["text"] for p in slack.posts]
    assert len(texts) == 2
    assert "LLM groundedness drop in" in texts[0] and "quality" not in texts[0].split("\n")[0]
    assert texts[1].startswith("Resolved") or "Resolved" in texts[1]
    assert all("groundedness" in t for t in texts)
    assert not any("Cause:" in t for t in texts)  # a segment names no cause of its own


def test_a_criterion_judged_on_one_segment_opens_one_incident_not_two(tmp_path):
    """Only docs has groundedness scores: its overall row is docs, and joins its incident."""
    with store.connect(tmp_path / "d.duckdb") as conn:
        _store(conn, billing=False)
        histories = recompute_criteria(conn)
    (inc,) = histories["groundedness"].incidents
    assert inc.segments == ["docs", "__all__"]
