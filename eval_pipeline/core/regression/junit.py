"""JUnit XML for a regression run, in the shape CI systems render (GitHub, GitLab, Jenkins).

One ``<testsuite>`` per run; one ``<testcase>`` per golden case, named by case id, with
``classname`` ``golden.<first tag>``; a wrong answer is a ``<failure>``, a case that got no
answer an ``<error>``. Run facts (deploy, target, golden version, pass rate, threshold,
status, and per criterion the golden set names its pass rate and mean score) are suite
``<properties>``; a case that names criteria has a ``criterion.<name>`` property each
(outcome and score). Text is stripped of characters XML 1.0 cannot carry.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from eval_pipeline.core.regression.gate import RegressionRun
from eval_pipeline.core.regression.history import Comparison

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str | None, limit: int = 4000) -> str:
    s = _INVALID_XML.sub("\ufffd", text or "")
    return s if len(s) <= limit else s[:limit] + "…"


def to_junit_xml(run: RegressionRun, comparison: Comparison | None = None) -> str:
    seconds = f"{run.duration_s:.3f}"
    root = ET.Element(
        "testsuites",
        name="golden-regression",
        tests=str(run.n),
        failures=str(run.failed),
        errors=str(run.errors),
        time=seconds,
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"golden-regression[{_clean(run.target, 200)}]",
        tests=str(run.n),
        failures=str(run.failed),
        errors=str(run.errors),
        skipped="0",
        time=seconds,
        timestamp=run.started_at.replace(microsecond=0).isoformat(),
    )
    props = ET.SubElement(suite, "properties")
    facts = {
        "deploy_id": run.deploy_id,
        "target": run.target,
        "golden_version": run.golden_version,
        "pass_rate": f"{run.pass_rate:.4f}",
        "threshold": f"{run.threshold:.4f}",
        "status": run.status,
    }
    if run.judge_mean is not None:
        facts["judge_mean"] = f"{run.judge_mean:.4f}"
    if run.judge_trust is not None:
        facts["judge_trust_status"] = run.judge_trust.status
        facts["judge_trust"] = run.judge_trust.line()
    for c in run.criteria_summary:
        facts[f"criterion.{c.criterion}.pass_rate"] = f"{c.pass_rate:.4f}"
        if c.mean_score is not None:
            facts[f"criterion.{c.criterion}.mean_score"] = f"{c.mean_score:.4f}"
    if comparison and comparison.previous_run_id:
        facts["newly_failing"] = ",".join(comparison.newly_failing)
        facts["newly_passing"] = ",".join(comparison.newly_passing)
    for key, value in facts.items():
        ET.SubElement(props, "property", name=key, value=_clean(str(value), 500))
    newly = set(comparison.newly_failing) if comparison else set()
    for r in run.results:
        tc = ET.SubElement(
            suite,
            "testcase",
            name=_clean(r.case_id, 300),
            classname=f"golden.{_clean(r.tags[0], 100) if r.tags else 'cases'}",
            time=f"{(r.latency_ms or 0) / 1000:.3f}",
        )
        if r.criteria:
            case_props = ET.SubElement(tc, "properties")
            for name, got in r.criteria.items():
                value = (
                    got["outcome"] if got["score"] is None else f"{got['outcome']} {got['score']}"
                )
                ET.SubElement(
                    case_props, "property", name=f"criterion.{_clean(name, 100)}", value=value
                )
        if r.outcome == "pass":
            continue
        tag = "failure" if r.outcome == "fail" else "error"
        message = ("[newly failing] " if r.case_id in newly else "") + r.reason
        el = ET.SubElement(tc, tag, message=_clean(message, 500), type=r.grader)
        body = [f"grader: {r.grader}", f"reason: {r.reason}"]
        if r.output is not None:
            body.append(f"output: {r.output}")
        if r.call_error:
            body.append(f"call error: {r.call_error}")
        el.text = _clean("\n".join(body))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit_xml(
    path: str | Path, run: RegressionRun, comparison: Comparison | None = None
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_junit_xml(run, comparison), encoding="utf-8")
