"""`eval-pipeline drift | head`: the reader going away is not an error worth a traceback."""

from __future__ import annotations

import subprocess
import sys

from eval_pipeline import settings
from eval_pipeline.core import store


def test_a_closed_pipe_prints_no_traceback():
    with store.connect(settings.duckdb_path()) as conn:
        conn.execute(
            "INSERT INTO drift_reports (partition_date, segment, n, n_failed, mean_score, "
            "baseline_kind, alert, verdict) SELECT DATE '2000-01-01' + i::INTEGER, '__all__', "
            "40, 0, 4.5, 'trailing', false, 'v' FROM range(5000) r(i)"
        )
    for argv in (["drift"], ["drift", "--segment", "__all__"]):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from eval_pipeline.cli import main; sys.exit(main())",
                *argv,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdout.readline()  # like `head -1`: read a line, then go away
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
