"""`eval-pipeline drift`: the history and incidents, filtered the way the options say."""

from __future__ import annotations

import datetime as dt

from eval_pipeline import settings
from eval_pipeline.cli import main
from eval_pipeline.core import store


def seed() -> None:
    with store.connect(settings.duckdb_path()) as conn:
        for day in (dt.date(2026, 10, 21), dt.date(2026, 10, 22), dt.date(2026, 10, 23)):
            for seg in ("__all__", "billing", "shipping"):
                conn.execute(
                    "INSERT INTO drift_reports (partition_date, segment, n, n_failed, mean_score, "
                    "baseline_kind, alert, verdict) VALUES (?, ?, 40, 0, 4.5, 'trailing', ?, 'v')",
                    [day, seg, seg == "billing" and day > dt.date(2026, 10, 21)],
                )
        conn.execute(
            "INSERT INTO drift_incidents (incident_id, kind, status, segments, opened_on, "
            "detected_on, last_degraded_on, detector, peak_drop, current_drop, cause, "
            "computed_at) VALUES ('inc-1', 'drift', 'open', ['billing', '__all__'], "
            "DATE '2026-10-22', DATE '2026-10-22', DATE '2026-10-23', 'day-test', 1.9, 1.8, "
            "'prompt_version v2: ...', now())"
        )
        conn.execute(
            "INSERT INTO drift_incidents (incident_id, kind, status, segments, opened_on, "
            "detected_on, last_degraded_on, resolved_on, detector, peak_drop, current_drop, "
            "cause, computed_at) VALUES ('inc-2', 'drift', 'resolved', ['shipping'], "
            "DATE '2026-10-01', DATE '2026-10-01', DATE '2026-10-02', DATE '2026-10-04', "
            "'cusum', 0.4, 0.0, 'no single dimension explains it', now())"
        )


def test_segment_and_since_filter_rows_and_incidents(capsys):
    seed()
    assert main(["drift", "--segment", "billing", "--since", "2026-10-23"]) == 0
    out = capsys.readouterr().out
    assert "2026-10-23" in out and "2026-10-22  " not in out
    assert "1 incidents" in out and "inc-1" in out and "inc-2" not in out
    assert main(["drift", "--segment", "shipping"]) == 0
    assert "inc-2" in (out := capsys.readouterr().out) and "inc-1" not in out
    assert main(["drift"]) == 0
    assert "2 incidents" in capsys.readouterr().out


def test_a_missing_store_is_a_clear_message_not_a_traceback(tmp_path, capsys):
    assert main(["drift", "--db", str(tmp_path / "typo.duckdb")]) == 2
    assert "no store at" in capsys.readouterr().out
    assert (
        main(["review", "--export", str(tmp_path / "x.jsonl"), "--db", str(tmp_path / "t.duckdb")])
        == 2
    )
    assert not (tmp_path / "t.duckdb").exists()
