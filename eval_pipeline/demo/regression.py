"""`make demo` step: the golden-set regression gate against the demo app, through Dagster.

Materializes ``golden_regression`` twice with ``dagster asset materialize`` in the project's
Dagster home: first with the good prompt (the gate passes), then with the regressed prompt
(its blocking ``pass_rate`` check fails the run, and the billing cases are listed as newly
failing), and shows that the drift baseline comes from the passing run, not the rejected
one. Then shows the CLI's exit codes: 0 pass, 1 below the threshold, 3 outage (an
endpoint that is down). Results go into the demo summary under ``"regression"``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.cli import main as cli_main
from eval_pipeline.core import store
from eval_pipeline.core.regression.history import latest_baseline
from eval_pipeline.demo.dagster_cli import dagster_materialize

DEMO_TARGET = "eval_pipeline.demo.app:answer"


def _materialize(prompt: str, deploy_id: str, log_path: Path) -> int:
    config = {
        "ops": {
            "golden_regression": {
                "config": {
                    "target": DEMO_TARGET,
                    "target_args": {"prompt_path": prompt},
                    "deploy_id": deploy_id,
                }
            }
        }
    }
    print(f"(prompt: {prompt})")
    code, _ = dagster_materialize("golden_regression", log_path.name, config=config)
    return code


def _run_row(deploy_id: str, since: float) -> dict:
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        row = conn.execute(
            "SELECT run_id, pass_rate, n_cases, n_passed, n_failed, n_errors, status, "
            "judge_mean, golden_version FROM regression_runs "
            "WHERE deploy_id = ? AND epoch(finished_at) >= ? ORDER BY finished_at DESC LIMIT 1",
            [deploy_id, since - 5],
        ).fetchone()
        if row is None:
            raise SystemExit(f"the regression asset ran but no run for {deploy_id} is stored")
        keys = ("run_id", "pass_rate", "cases", "passed", "failed", "errors", "status",
                "judge_mean", "golden_version")  # fmt: skip
        out = dict(zip(keys, row, strict=True))
        prev = conn.execute(
            "SELECT list(cur.case_id ORDER BY cur.case_id) FROM regression_results cur "
            "JOIN regression_runs r USING (run_id) "
            "JOIN regression_results old ON old.case_id = cur.case_id "
            "AND old.run_id = r.previous_run_id "
            "WHERE cur.run_id = ? AND old.outcome = 'pass' AND cur.outcome = 'fail'",
            [out["run_id"]],
        ).fetchone()
    out["newly_failing"] = prev[0] or []
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(summary: dict) -> None:
    print("\n== Golden-set regression gate: the demo app, good prompt then regressed prompt ==")
    logs = settings.data_dir() / "demo"
    started = time.time()
    good_rc = _materialize("good", "demo-good-prompt", logs / "regression_good.log")
    good = _run_row("demo-good-prompt", started)
    bad_rc = _materialize("regressed", "demo-regressed-prompt", logs / "regression_regressed.log")
    bad = _run_row("demo-regressed-prompt", started)
    print(
        f"  good prompt:      pass rate {good['pass_rate']:.1%} -> gate "
        f"{'PASSED' if good_rc == 0 else 'FAILED'}"
    )
    print(
        f"  regressed prompt: pass rate {bad['pass_rate']:.1%} -> gate "
        f"{'PASSED' if bad_rc == 0 else 'FAILED (blocking check pass_rate)'}"
    )
    print(f"  newly failing: {', '.join(bad['newly_failing']) or 'none'}")
    if good_rc != 0 or bad_rc == 0:
        print("  UNEXPECTED: the gate should pass on the good prompt and fail on the regressed one")
    with store.connect(settings.duckdb_path(), read_only=True) as conn:
        baseline = latest_baseline(conn, DEMO_TARGET)
    if baseline is not None:
        print(
            f"  drift baseline (latest passing run): judge mean {baseline['judge_mean']:.2f} "
            f"from deploy {baseline['deploy_id']} (the rejected deploy is not a baseline)"
        )

    print("\n$ eval-pipeline regress  (CLI exit codes: 0 pass, 1 below threshold, 3 not run)")
    out_dir = logs / "regression"
    golden = str(settings.golden_path())
    common = ["regress", "--golden", golden, "--quiet", "--no-store"]
    runs = {
        "pass": ["--target", DEMO_TARGET],
        "fail": ["--target", DEMO_TARGET, "--arg", "prompt_path=regressed",
                 "--junit-xml", str(out_dir / "junit.xml"),
                 "--markdown", str(out_dir / "summary.md")],
        "outage": ["--target", f"http://127.0.0.1:{_free_port()}/v1", "--model", "demo",
                   "--retries", "0", "--timeout", "2"],
    }  # fmt: skip
    codes = {}
    for name, args in runs.items():
        print(f"\n$ eval-pipeline regress {' '.join(args)}")
        codes[name] = cli_main([*common, *args])
        print(f"(exit {codes[name]})")
    print(
        f"  exit codes: good prompt {codes['pass']}, regressed prompt {codes['fail']}, "
        f"endpoint down {codes['outage']}  (JUnit XML and markdown in {out_dir})"
    )
    summary["regression"] = {
        "good_prompt": {**good, "dagster_exit": good_rc},
        "regressed_prompt": {**bad, "dagster_exit": bad_rc},
        "gate_blocked_regressed": good_rc == 0 and bad_rc != 0,
        "drift_baseline_deploy": baseline["deploy_id"] if baseline else None,
        "cli_exit_codes": codes,
        "junit_xml": str(out_dir / "junit.xml"),
        "markdown": str(out_dir / "summary.md"),
    }
