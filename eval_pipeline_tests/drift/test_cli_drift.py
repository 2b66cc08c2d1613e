"""`eval-pipeline drift`: the history and alerts, filtered the way the options say."""

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
        for day, seg in ((dt.date(2026, 10, 22), "billing"), (dt.date(2026, 10, 23), "billing"),
                         (dt.date(2026, 10, 22), "__all__")):  # fmt: skip
            conn.execute(
                "INSERT INTO drift_alerts VALUES (?, ?, ?, 4.9, 3.0, -1.9, 0.001, 'm', now())",
                [f"{day}{seg}", day, seg],
            )


def test_segment_and_since_filter_rows_and_alerts(capsys):
    seed()
    assert main(["drift", "--segment", "billing", "--since", "2026-10-23"]) == 0
    out = capsys.readouterr().out
    assert "2026-10-23" in out and "2026-10-22" not in out
    assert "1 alerts" in out and "__all__" not in out
    assert main(["drift"]) == 0
    assert "3 alerts" in capsys.readouterr().out


def test_a_missing_store_is_a_clear_message_not_a_traceback(tmp_path, capsys):
    assert main(["drift", "--db", str(tmp_path / "typo.duckdb")]) == 2
    assert "no store at" in capsys.readouterr().out
    assert (
        main(["review", "--export", str(tmp_path / "x.jsonl"), "--db", str(tmp_path / "t.duckdb")])
        == 2
    )
    assert not (tmp_path / "t.duckdb").exists()
