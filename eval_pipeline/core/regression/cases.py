"""Golden cases: the JSONL file format, its loader, and the golden-set version.

One case per line::

    {"id": "billing-refund-1",
     "input": "How do I get a refund?"            # or [{"role": "user", "content": "..."}, ...]
     "expected": "within 5 business days",         # str | number | object | null
     "grader": {"type": "contains", "values": ["5 business days"]},   # or the bare "judge"
     "tags": ["billing"],                          # optional
     "criteria": ["correctness", "safety"],        # optional, judge grader only
     "provenance": {"source_trace_id": "t-123"}}   # optional, free-form object

``load_cases`` validates every line and raises one :class:`GoldenFileError` that names the
file and line of *every* bad line (not just the first), so a person fixes the file in one
pass. Grader types are checked against the registry in :mod:`eval_pipeline.core.regression.graders`
at load time, as are grader parameters that can be checked without an answer (a regex
that does not compile, a JSON Schema that is not a schema).

Unknown top-level keys are kept (``Case.extra``) and written back by ``case_to_json``, so
tools that add their own optional fields do not lose them on a round trip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from eval_pipeline.core.regression import criteria, graders
from eval_pipeline.core.regression.case import (  # noqa: F401  (re-exported: the format's API)
    KNOWN_KEYS,
    ROLES,
    Case,
    Input,
    Message,
    as_messages,
    input_text,
    normalise_input,
)


class GoldenFileError(ValueError):
    """Every problem found in a golden file, each as (path, line number, message)."""

    def __init__(self, problems: list[tuple[str, int, str]]):
        self.problems = problems
        lines = [f"{p}:{n}: {msg}" if n else f"{p}: {msg}" for p, n, msg in problems]
        super().__init__(
            f"{len(problems)} problem(s) in the golden set:\n" + "\n".join("  " + s for s in lines)
        )


def _check_input(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value.strip() else "input is an empty string"
    if isinstance(value, list):
        if not value:
            return "input is an empty message list"
        for i, msg in enumerate(value):
            if not isinstance(msg, dict):
                return f"input[{i}] is not an object"
            if msg.get("role") not in ROLES:
                return (
                    f"input[{i}].role must be one of {', '.join(ROLES)} (got {msg.get('role')!r})"
                )
            if not isinstance(msg.get("content"), str):
                return f"input[{i}].content must be a string"
            unknown = set(msg) - {"role", "content", "name"}
            if unknown:
                return f"input[{i}] has unknown keys {sorted(unknown)}"
        return None
    return f"input must be a string or a list of messages (got {type(value).__name__})"


def _check_expected(value: Any) -> str | None:
    # The spec: str | number | object | null. Lists are accepted too (e.g. contains values).
    if value is None or isinstance(value, str | dict | list):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None
    return f"expected must be a string, number, object or null (got {type(value).__name__})"


def parse_case(obj: Any, source: str | None = None) -> Case:
    """One decoded JSON value -> Case, or ValueError naming what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"a case must be a JSON object (got {type(obj).__name__})")
    missing = [k for k in ("id", "input", "expected", "grader") if k not in obj]
    if missing:
        raise ValueError(f"missing required field(s): {', '.join(missing)}")
    case_id = obj["id"]
    if not isinstance(case_id, str) or not case_id.strip():
        raise ValueError("id must be a non-empty string")
    problem = _check_input(obj["input"]) or _check_expected(obj["expected"])
    if problem:
        raise ValueError(problem)
    grader = obj["grader"]
    if isinstance(grader, str):
        grader = {"type": grader}
    if not isinstance(grader, dict) or not isinstance(grader.get("type"), str):
        raise ValueError('grader must be a name or an object with a string "type"')
    tags = obj.get("tags", [])
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("tags must be a list of strings")
    provenance = obj.get("provenance")
    if provenance is not None and not isinstance(provenance, dict):
        raise ValueError("provenance must be an object")
    names = ()
    if obj.get("criteria") is not None:
        names = criteria.parse_names(obj["criteria"])
        if grader["type"] != "judge":
            raise ValueError("criteria need the judge grader (grader: judge)")
    case = Case(
        id=case_id,
        input=obj["input"],
        expected=obj["expected"],
        grader=dict(grader),
        tags=tuple(tags),
        provenance=provenance or None,
        extra={k: v for k, v in obj.items() if k not in KNOWN_KEYS},
        source=source,
        criteria=names,
    )
    graders.validate_case_grader(case)  # unknown type, bad params -> ValueError
    return case


def load_cases(path: str | Path) -> list[Case]:
    """Every case in a JSONL golden file, validated; raises GoldenFileError listing all problems.

    Blank lines are skipped. Duplicate ids are an error (both lines are named).
    """
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GoldenFileError([(name, 0, f"cannot read the file: {exc.strerror or exc}")]) from exc
    problems: list[tuple[str, int, str]] = []
    cases: list[Case] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append((name, line_no, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append((name, line_no, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        try:
            case = parse_case(obj, source=f"{name}:{line_no}")
        except ValueError as exc:
            label = obj.get("id") if isinstance(obj, dict) else None
            prefix = f"case {label!r}: " if isinstance(label, str) else ""
            problems.append((name, line_no, prefix + str(exc)))
            continue
        if case.id in first_line:
            problems.append(
                (name, line_no, f"duplicate id {case.id!r} (first on line {first_line[case.id]})")
            )
            continue
        first_line[case.id] = line_no
        cases.append(case)
    if problems:
        raise GoldenFileError(problems)
    if not cases:
        raise GoldenFileError([(name, 0, "the golden set has no cases")])
    return cases


def case_to_json(case: Case) -> str:
    """One line of JSON with a stable key order (id, input, expected, grader, tags,
    provenance, then any extra keys sorted); non-ASCII text kept as is."""
    return json.dumps(case.to_dict(), ensure_ascii=False, separators=(", ", ": "))


def write_cases(path: str | Path, cases: Iterable[Case]) -> None:
    """Write cases as JSONL (whole file replaced via a temporary file, so no torn writes)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(case_to_json(c) + "\n" for c in cases), encoding="utf-8")
    tmp.replace(path)


def golden_version(path_or_cases: str | Path | Sequence[Case]) -> str:
    """Content hash of the normalised cases: the golden-set version recorded by regression runs.

    Normalised = parsed and re-serialised with ``case_to_json``, ordered by id: formatting,
    key order, line order and blank lines do not change the version; any change to a case
    does. 16 hex characters of SHA-256.
    """
    cases = load_cases(path_or_cases) if isinstance(path_or_cases, str | Path) else path_or_cases
    h = hashlib.sha256()
    for case in sorted(cases, key=lambda c: c.id):
        h.update(case_to_json(case).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
