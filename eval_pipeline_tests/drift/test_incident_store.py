"""The incident history against the store: the replay writes incidents, day states and the
report columns; backfills build history without paging; re-runs send nothing twice; the
CLI lists, shows, acknowledges, resolves and rebaselines."""

from __future__ import annotations

import datetime as dt

import pytest

from eval_pipeline import settings
from eval_pipeline.cli import main
from eval_pipeline.core import store
from eval_pipeline.core.drift import history
from eval_pipeline.core.notify.config import ChannelConfig
from eval_pipeline.core.notify.events import IncidentEvent
from eval_pipeline.core.notify.lifecycle import deliver
from eval_pipeline.demo.receiver import DemoReceiver
from eval_pipeline_tests.drift.incident_data import BROKEN, HEALTHY, day, insert_day

BROKEN_FROM, LAST = 8, 13


def seed(conn, last: int = LAST) -> None:
    for i in range(last + 1):
        insert_day(conn, day(i), "shipping", HEALTHY)
        if i < BROKEN_FROM:
            insert_day(conn, day(i), "billing", HEALTHY)
        else:  # the same traffic with a broken v2 prompt on half of it
            insert_day(conn, day(i), "billing", HEALTHY, "v1")
            insert_day(conn, day(i), "billing-v2-part", BROKEN, "v2")
        conn.execute(
            "INSERT INTO drift_reports (partition_date, segment, n, n_failed, baseline_kind, "
            "alert, verdict) VALUES (?, 'billing', 40, 0, 'trailing', false, 'v')",
            [day(i)],
        )
    # The v2 part is billing traffic: one segment, half of it on the new prompt.
    conn.execute("UPDATE raw_traces SET segment = 'billing' WHERE segment = 'billing-v2-part'")
    conn.execute("UPDATE judge_scores SET segment = 'billing' WHERE segment = 'billing-v2-part'")


def rows(conn):
    inc = conn.execute(
        "SELECT * EXCLUDE (computed_at) FROM drift_incidents ORDER BY incident_id"
    ).fetchall()
    states = conn.execute("SELECT * FROM drift_day_states ORDER BY 1, 2").fetchall()
    return inc, states


def test_the_replay_stores_incidents_day_states_and_report_columns():
    with store.connect(settings.duckdb_path()) as conn:
        seed(conn)
        h = history.recompute(conn)
        assert len(h.incidents) == 1
        inc = conn.execute(
            "SELECT segments, opened_on, status, cause_key, cause FROM drift_incidents"
        ).fetchone()
        assert "billing" in inc[0] and inc[1] == day(BROKEN_FROM) and inc[2] == "open"
        assert inc[3] == "prompt_version=v2" and "explains" in inc[4]
        report = conn.execute(
            "SELECT partition_date, reference_mean, incident_id FROM drift_reports ORDER BY 1"
        ).fetchall()
    assert report[-1][1] == pytest.approx(HEALTHY.mean)
    assert report[-1][2] == h.incidents[0].incident_id and report[BROKEN_FROM - 1][2] is None


def test_day_by_day_and_a_rerun_give_the_same_rows_as_one_backfill(tmp_path):
    with store.connect(tmp_path / "ranged.duckdb") as conn:
        seed(conn)
        history.recompute(conn)
        ranged = rows(conn)
    with store.connect(tmp_path / "daily.duckdb") as conn:
        for last in range(LAST + 1):  # the schedule: one more day each run
            conn.execute("DELETE FROM raw_traces")
            conn.execute("DELETE FROM judge_scores")
            conn.execute("DELETE FROM drift_reports")
            seed(conn, last)
            history.recompute(conn)
        assert rows(conn) == ranged
        history.recompute(conn)  # a past day re-run: the whole history is replayed again
        assert rows(conn) == ranged


def events_of(conn) -> list[IncidentEvent]:
    h = history.recompute(conn)
    return [IncidentEvent(**e) for e in history.events(h, through=day(LAST))]


def test_a_backfill_of_old_history_builds_incidents_without_paging_and_reruns_send_once():
    with DemoReceiver() as receiver, store.connect(settings.duckdb_path()) as conn:
        seed(conn)
        channels = ChannelConfig(slack_url=receiver.url)
        # Backfilled long after: the incident exists, nothing is sent.
        report = deliver(conn, events_of(conn), channels, today=day(LAST) + dt.timedelta(days=60))
        assert report.sent == 0 and report.suppressed >= 1
        assert receiver.posts == []
        assert conn.execute("SELECT count(*) FROM drift_incidents").fetchone()[0] == 1
    with DemoReceiver() as receiver, store.connect(tmp_store := settings.duckdb_path()) as conn:
        conn.execute("DELETE FROM notifications")
        channels = ChannelConfig(slack_url=receiver.url)
        for _ in range(3):  # the same days re-run three times: one page
            deliver(conn, events_of(conn), channels, today=day(LAST))
        assert len(receiver.posts) == 1
        assert "billing" in receiver.posts[0]["text"] and tmp_store


def test_cli_list_show_ack_resolve(capsys):
    with store.connect(settings.duckdb_path()) as conn:
        seed(conn)
        iid = history.recompute(conn).incidents[0].incident_id
    assert main(["incidents", "list", "--status", "open"]) == 0
    out = capsys.readouterr().out
    assert iid in out and "prompt_version v2" in out
    assert main(["incidents", "show", iid]) == 0
    assert "recovering" not in (shown := capsys.readouterr().out) and "degraded" in shown
    assert main(["incidents", "ack", iid, "--by", "carol"]) == 0
    assert main(["incidents", "resolve", iid, "--by", "carol"]) == 2  # a reason is required
    assert main(["incidents", "resolve", iid, "--by", "carol", "--reason", "rolled back"]) == 0
    assert main(["incidents", "show", "inc-nope"]) == 1
    capsys.readouterr()
    with store.connect(settings.duckdb_path()) as conn:
        history.recompute(conn)  # the next asset run replays the recorded actions
        row = conn.execute(
            "SELECT status, resolution, resolved_by, acknowledged_by, resolved_on "
            "FROM drift_incidents"
        ).fetchone()
    assert row == ("resolved", "manual", "carol", "carol", day(LAST))
    assert main(["incidents", "list", "--status", "resolved"]) == 0
    assert iid in capsys.readouterr().out


def test_cli_rebaseline_is_recorded_and_resolves_the_incident(capsys):
    with store.connect(settings.duckdb_path()) as conn:
        seed(conn)
        history.recompute(conn)
    args = ["drift", "rebaseline", "--segment", "billing", "--from", str(day(11))]
    assert main([*args, "--reason", "v2 is the product now", "--by", "dan"]) == 0
    assert main([*args, "--reason", "again"]) == 1  # already recorded
    assert main([*args[:3], "nope", *args[4:], "--reason", "x"]) == 2  # unknown segment
    assert "unknown segment" in capsys.readouterr().out
    with store.connect(settings.duckdb_path()) as conn:
        h = history.recompute(conn)
        who = conn.execute("SELECT created_by, reason FROM drift_rebaselines").fetchone()
    assert who == ("dan", "v2 is the product now")
    billing = next(i for i in h.incidents if "billing" in i.segments)
    # The overall row is in the same incident and still below its own reference: accepting
    # billing's new normal does not accept the overall one, so the incident stays open.
    assert billing.segments == ["billing", "__all__"] and billing.resolved_on is None
    overall = ["drift", "rebaseline", "--segment", "__all__", "--from", str(day(11))]
    assert main([*overall, "--reason", "v2 is the product now", "--by", "dan"]) == 0
    with store.connect(settings.duckdb_path()) as conn:
        h = history.recompute(conn)
    billing = next(i for i in h.incidents if "billing" in i.segments)
    assert billing.resolution == "rebaseline" and billing.resolved_on == day(11)
    assert billing.resolved_by == "dan" and len(h.incidents) == 1
    assert main(["drift", "--segment", "billing"]) == 0
    out = capsys.readouterr().out
    assert "incidents" in out and billing.incident_id in out
