"""The gate's reports: the text the CLI prints and the asset logs, and the markdown summary
a CI job posts. (JUnit XML is :mod:`eval_pipeline.core.regression.junit`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval_pipeline.core.regression.gate import RegressionRun, verdict
from eval_pipeline.core.regression.history import Comparison


def _one_line(text: str | None, limit: int = 160) -> str:
    s = (text or "").replace("\r", " ").replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def text_report(run: RegressionRun, cmp: Comparison, max_listed: int = 50) -> str:
    lines = []
    bad = [r for r in run.results if r.outcome != "pass"]
    for r in [r for r in bad if r.outcome == "fail"][:max_listed]:
        lines.append(f"FAIL  {r.case_id} [{r.grader}]: {_one_line(r.reason)}")
    errors = [r for r in bad if r.outcome == "error"]
    if len(errors) <= 5:
        for r in errors:
            lines.append(f"ERROR {r.case_id} [{r.grader}]: {_one_line(r.reason)}")
    else:  # an outage: one line per distinct reason, not one per case
        by_reason: dict[str, list[str]] = {}
        for r in errors:
            by_reason.setdefault(r.reason, []).append(r.case_id)
        for reason, ids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            more = f" (+{len(ids) - 3} more)" if len(ids) > 3 else ""
            lines.append(
                f"ERROR {len(ids)} cases ({', '.join(ids[:3])}{more}): {_one_line(reason)}"
            )
    if len(bad) > 2 * max_listed:
        lines.append(f"... ({len(bad)} cases did not pass in all)")
    if lines:
        lines.append("")
    lines.append(
        f"{run.n} cases: {run.passed} passed, {run.failed} failed, {run.errors} errors; "
        f"pass rate {run.pass_rate:.1%} (threshold {run.threshold:.0%})"
    )
    lines.append(
        f"target {run.target}  deploy {run.deploy_id}  golden {run.golden_version}  "
        f"{run.duration_s:.1f}s"
    )
    lines.extend(criteria_lines(run))
    if run.judge_mean is not None:
        lines.append(f"judge-scored mean {run.judge_mean:.2f} (n={run.judge_n}, {run.judge_name})")
    if cmp.previous_run_id:
        lines.append(
            f"since the previous run (deploy {cmp.previous_deploy_id}): "
            f"{len(cmp.newly_failing)} newly failing, {len(cmp.newly_passing)} newly passing"
            + (f", {len(cmp.newly_erroring)} newly erroring" if cmp.newly_erroring else "")
            + (f", {len(cmp.new_cases)} new cases" if cmp.new_cases else "")
        )
        for label, ids in (
            ("newly failing", cmp.newly_failing),
            ("newly passing", cmp.newly_passing),
            ("newly erroring", cmp.newly_erroring),
        ):
            if ids:
                lines.append(f"  {label}: {', '.join(ids[:max_listed])}")
    elif not cmp.compared:
        lines.append("history not compared (the run was not recorded in the store)")
    else:
        lines.append("no previous completed run against this target to compare with")
    lines.append(f"verdict: {verdict(run)}")
    lines.extend(judge_trust_lines(run))
    return "\n".join(lines)


def _mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def criteria_lines(run: RegressionRun) -> list[str]:
    """One line per criterion the golden set names (none when it names none)."""
    return [
        f"criterion {c.criterion}: {c.passed}/{c.n} passed, {c.failed} failed, "
        f"{c.errors} errors; pass rate {c.pass_rate:.1%}, mean score {_mean(c.mean_score)}"
        for c in run.criteria_summary
    ]


def judge_trust_lines(run: RegressionRun) -> list[str]:
    """The judge's trust status, led by a warning when it is unvalidated (no judge: none)."""
    if run.judge_name is None:
        return []
    t = run.judge_trust
    if t is None:
        return ["judge trust: not looked up (the run was not recorded in the store)"]
    return [t.line()] + ([t.warning()] if t.warning() else [])


def _md_cell(text: Any) -> str:
    return _one_line(str(text), 200).replace("|", "\\|")


def markdown_report(run: RegressionRun, cmp: Comparison) -> str:
    icon = {"pass": "✅", "fail": "❌", "outage": "⚠️"}[run.status]
    out = [f"## Golden-set regression: {icon} {verdict(run)}", ""]
    t = run.judge_trust
    if t is not None and t.warning():
        out += [f"> ⚠️ **{_one_line(t.warning(), 600)}**", ""]
    out += [
        "| | |",
        "|---|---|",
        f"| pass rate | **{run.pass_rate:.1%}** (threshold {run.threshold:.0%}) |",
        f"| cases | {run.n}: {run.passed} passed, {run.failed} failed, {run.errors} errors |",
        f"| target | `{_md_cell(run.target)}` |",
        f"| deploy | `{_md_cell(run.deploy_id)}` |",
        f"| golden set | `{run.golden_version}` |",
    ]
    if run.judge_mean is not None:
        out.append(
            f"| judge-scored mean | {run.judge_mean:.2f} (n={run.judge_n}, {run.judge_name}) |"
        )
    if run.judge_name is not None:
        trust_text = "not looked up" if t is None else t.line()
        out.append(f"| judge trust | {_md_cell(trust_text)} |")
    if cmp.previous_run_id:
        out.append(
            f"| since previous run | {len(cmp.newly_failing)} newly failing, "
            f"{len(cmp.newly_passing)} newly passing (deploy `{_md_cell(cmp.previous_deploy_id)}`) |"
        )
    out.append("")
    for label, ids in (
        ("Newly failing", cmp.newly_failing),
        ("Newly passing", cmp.newly_passing),
        ("Newly erroring", cmp.newly_erroring),
    ):
        if ids:
            out.append(f"**{label}:** " + ", ".join(f"`{i}`" for i in ids))
            out.append("")
    summary = run.criteria_summary
    if summary:
        out += [
            "| criterion | cases | passed | failed | errors | pass rate | mean score |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in summary:
            out.append(
                f"| {_md_cell(c.criterion)} | {c.n} | {c.passed} | {c.failed} | {c.errors} | "
                f"{c.pass_rate:.1%} | {_mean(c.mean_score)} |"
            )
        out.append("")
    bad = [r for r in run.results if r.outcome != "pass"]
    if bad:
        out += ["| case | outcome | grader | reason |", "|---|---|---|---|"]
        for r in bad:
            out.append(
                f"| `{_md_cell(r.case_id)}` | {r.outcome} | {r.grader} | {_md_cell(r.reason)} |"
            )
        out.append("")
    return "\n".join(out)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
