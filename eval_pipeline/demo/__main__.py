"""`make demo`: the whole product on bundled demo data, through Dagster, then a summary.

1. Generates the seeded demo traffic into the trace inbox (if missing).
2. Runs the daily drift loop over every demo day as ONE ranged Dagster run (the same thing a
   backfill from the UI does), in the project's Dagster home, so the UI shows it afterwards.
3. Runs the other loops' demo steps (regression gate, A/B test, feedback), when present.
4. Prints what it found and writes it to data/demo/summary.json; exits non-zero if the drift
   loop did not open exactly one incident for the injected regression (paged on its first
   day, resolved after the fix, prompt_version named, two notifications) or paged on a
   clean day, the gate let the regressed
   prompt through, or no feedback candidate is left to review; or if the groundedness
   regression on the shipping segment (judged by rules with quality and safety) opened no
   incident of its own, did not resolve, or another criterion incident opened.
"""

from __future__ import annotations

import json
import os

from eval_pipeline import settings
from eval_pipeline.demo import ab, feedback, health, judge, regression
from eval_pipeline.demo.dagster_cli import dagster_materialize, demo_dir
from eval_pipeline.demo.drift import (
    DEMO_CRITERIA,
    drift_summary,
    ensure_traffic,
    incidents_config,
    print_drift,
)
from eval_pipeline.demo.receiver import DemoReceiver

CHANNEL_VARIABLES = (
    "EVAL_ALERT_WEBHOOK_URL",
    "EVAL_NOTIFY_WEBHOOK_URL",
    "EVAL_NOTIFY_WEBHOOK_SECRET",
    "EVAL_PAGERDUTY_ROUTING_KEY",
)
# The other loops' steps, in the order the story is told; each adds to the summary.
CRITERIA_STEPS = [judge]  # run with the drift step's criteria
DEMO_STEPS = [regression, ab, feedback, health]


def main() -> int:
    os.environ.setdefault("DAGSTER_HOME", str(settings.data_dir() / "dagster_home"))
    demo_dir().mkdir(parents=True, exist_ok=True)
    manifest = ensure_traffic()
    # Notifications go to a Slack-compatible receiver the demo runs on 127.0.0.1, never to
    # a channel configured in the environment; other steps run with no channel at all.
    for name in CHANNEL_VARIABLES:
        os.environ.pop(name, None)
    # The drift step and the judge step (its re-run of a day, all from the cache) judge
    # several criteria (a criteria setting of your own wins); the later steps judge quality,
    # as their stories are told.
    own_criteria = "EVAL_JUDGE_CRITERIA" in os.environ
    if not own_criteria:
        os.environ["EVAL_JUDGE_CRITERIA"] = DEMO_CRITERIA
    try:
        with DemoReceiver() as receiver:
            os.environ["EVAL_ALERT_WEBHOOK_URL"] = receiver.url
            code, _ = dagster_materialize(
                "group:drift",
                "dagster_drift.log",
                partition_range=f"{manifest['first_day']}...{manifest['last_day']}",
                config=incidents_config(manifest),
            )
            posts = list(receiver.posts)
        os.environ.pop("EVAL_ALERT_WEBHOOK_URL", None)
        if code != 0:
            raise SystemExit(f"the drift backfill failed (exit {code}); see {demo_dir()}")
        summary: dict = {"drift": drift_summary(manifest, posts)}
        print_drift(summary)
        for step in CRITERIA_STEPS:
            step.run(summary)
    finally:
        os.environ.pop("EVAL_ALERT_WEBHOOK_URL", None)
        if not own_criteria:
            os.environ.pop("EVAL_JUDGE_CRITERIA", None)
    for step in DEMO_STEPS:
        step.run(summary)
    out = demo_dir() / "summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nsummary written to {out}")
    print("open the Dagster UI on the same runs and data: make ui  (http://127.0.0.1:3000)")
    problems = demo_problems(summary)
    for problem in problems:
        print(f"DEMO CHECK FAILED: {problem}")
    return 1 if problems else 0


def demo_problems(summary: dict) -> list[str]:
    """What the demo promises and did not deliver (an empty list: everything held)."""
    problems = []
    chk = summary["drift"]["check"]
    inj = summary["drift"]["injected_regression"]
    if not chk["regression_detected"]:
        problems.append("the drift loop missed the injected regression")
    else:
        if chk["first_page"] != inj["from_day"]:
            problems.append(f"the first page came on {chk['first_page']}, not {inj['from_day']}")
        if not chk["resolved_on"]:
            problems.append("the incident did not resolve after the fix")
        if not chk["cause_names_prompt_version"]:
            problems.append(f"the cause named is {chk['cause_key']!r}, not prompt_version")
    if chk["incidents"] != 1:
        problems.append(f"{chk['incidents']} incidents instead of one")
    if chk["notifications_received"] != 2:
        problems.append(f"{chk['notifications_received']} notifications instead of two")
    if chk["clean_day_alerts"]:
        problems.append(f"{chk['clean_day_alerts']} incidents paged on clean days")
    crit = summary["drift"].get("criteria", {}).get("check")
    if crit is not None:
        if not crit["detected"]:
            problems.append("the drift loop missed the injected groundedness regression")
        elif not crit["resolved_after_end"]:
            problems.append("the groundedness incident did not resolve after the regression")
        if crit["detected"] and crit["notified"] != ["opened", "resolved"]:
            problems.append(f"the groundedness incident notified {crit['notified']}")
        if crit["other_incidents"]:
            problems.append(f"{crit['other_incidents']} other criterion incidents (false alarms)")
    if "regression" in summary and not summary["regression"].get("gate_blocked_regressed"):
        problems.append("the golden-set gate did not block the regressed prompt")
    if "feedback" in summary and not summary["feedback"].get("pending_candidates"):
        problems.append("no feedback candidates are pending review")
    if "health" in summary and not summary["health"].get("opened_and_resolved"):
        problems.append("the pipeline-health incident did not open and resolve")
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
