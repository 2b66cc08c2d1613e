"""Shared by the demo's steps: where the demo writes, and `dagster asset materialize`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from eval_pipeline import settings


def demo_dir() -> Path:
    return settings.data_dir() / "demo"


def dagster_materialize(
    select: str,
    log_name: str,
    *,
    partition: str | None = None,
    partition_range: str | None = None,
    config: dict | None = None,
) -> tuple[int, float]:
    """`dagster asset materialize` in the project's Dagster home, so the UI shows the run.

    Streams the step results, keeps the full log under data/demo/, and returns
    (exit code, seconds); the caller decides what a failure means for its step.
    """
    args = ["asset", "materialize", "-m", "eval_pipeline.definitions", "--select", select]
    if partition:
        args += ["--partition", partition]
    if partition_range:
        args += ["--partition-range", partition_range]
    shown = " ".join(args)
    if config:
        args += ["--config-json", json.dumps(config)]
        shown += " --config-json '...'"
    log_path = demo_dir() / log_name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ dagster {shown}", flush=True)
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ,
        )
        for line in proc.stdout:
            log.write(line)
            if any(k in line for k in ("STEP_SUCCESS", "STEP_FAILURE", "RUN_FAILURE")):
                print("  " + line.split(" - ")[-1].strip(), flush=True)
        proc.wait()
    seconds = time.monotonic() - started
    print(f"  exit {proc.returncode} in {seconds:.1f} s (log: {log_path})", flush=True)
    return proc.returncode, seconds
