"""Graders: decide whether an answer to a golden case is right, and say why.

Every grader returns a :class:`Grade` with an outcome (``pass``, ``fail`` or ``error``) and a
human-readable reason. ``error`` means the grader could not decide (the judge failed); a
wrong answer is ``fail``. Built-in types:

- ``exact``    expected string equals the answer after normalisation.
               ``normalize``: list of ``strip`` (default), ``whitespace`` (collapse runs),
               ``case`` (case-fold), ``unicode`` (NFKC); or ``[]`` for byte-exact.
- ``contains`` ``values`` (default: the expected string or list), ``mode`` all|any
               (default all), ``case_sensitive`` (default false). Text is NFKC-normalised.
- ``regex``    ``pattern`` (default: the expected string), ``flags`` (letters from "imsx"),
               ``fullmatch`` (default false: search anywhere).
- ``json``     the answer parses as JSON (a lone ```json fence is allowed); ``schema``: a
               JSON Schema it must match; ``fields``: {name: value} top-level equality
               (default: the expected object, if it is one).
- ``numeric``  the number in the answer is within ``tolerance`` (default 0) of expected;
               ``mode`` abs|rel (default abs); ``pick`` only|first|last (default only: an
               answer with several numbers fails rather than guess).
- ``judge``    the LLM judge (``judge_from_env()``) scores the answer 1-5 with the expected
               answer as reference; passes at ``threshold`` (default 4). A case that
               names ``criteria`` is scored on each (regression/criteria.py).

Custom graders register by name::

    @register_grader("starts_with_greeting")
    def _(case, output, params):
        return Grade.of(output.startswith("Hello"), "does not greet")

A grader may return a Grade, a bool, or (bool, reason). Load a module of custom graders
with ``eval-pipeline regress --grader-module my_graders`` before the golden set is loaded.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema

from eval_pipeline.core.judge.base import JudgeRequest
from eval_pipeline.core.judge.factory import judge_from_env
from eval_pipeline.core.regression import criteria
from eval_pipeline.core.regression.case import Case, input_text, reference_text
from eval_pipeline.core.regression.criteria import CriterionGrade

Outcome = Literal["pass", "fail", "error"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "error")


@dataclass(frozen=True)
class Grade:
    outcome: Outcome
    reason: str
    score: float | None = None  # e.g. the judge's 1-5 score (the lowest, with criteria)
    criteria: tuple[CriterionGrade, ...] = ()  # per named criterion, when the case names some

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @classmethod
    def of(cls, passed: bool, reason_if_failed: str, reason_if_passed: str = "ok") -> Grade:
        return cls("pass", reason_if_passed) if passed else cls("fail", reason_if_failed)


GradeFn = Callable[[Case, str, dict[str, Any]], Any]
ValidateFn = Callable[[Case, dict[str, Any]], None]
BatchFn = Callable[[Sequence[tuple[Case, str]], "GradingContext"], list[Grade]]


@dataclass(frozen=True)
class GraderDef:
    name: str
    grade: GradeFn | None = None
    validate: ValidateFn | None = None
    batch: BatchFn | None = None  # graders that are cheaper in bulk (the judge)


_REGISTRY: dict[str, GraderDef] = {}


def register_grader(
    name: str, *, validate: ValidateFn | None = None, replace: bool = False
) -> Callable[[GradeFn], GradeFn]:
    """Decorator: register ``fn(case, output, params)`` as grader type ``name``."""

    def deco(fn: GradeFn) -> GradeFn:
        if name in _REGISTRY and not replace:
            raise ValueError(f"a grader named {name!r} is already registered")
        _REGISTRY[name] = GraderDef(name, grade=fn, validate=validate)
        return fn

    return deco


def unregister_grader(name: str) -> None:
    _REGISTRY.pop(name, None)


def grader_types() -> list[str]:
    return sorted(_REGISTRY)


def validate_case_grader(case: Case) -> None:
    """Raise ValueError if the case's grader is unknown or its parameters are invalid."""
    gdef = _REGISTRY.get(case.grader_type)
    if gdef is None:
        raise ValueError(
            f"unknown grader type {case.grader_type!r} (known: {', '.join(grader_types())})"
        )
    if gdef.validate:
        gdef.validate(case, case.grader_params)


def _coerce(result: Any) -> Grade:
    if isinstance(result, Grade):
        return result
    if isinstance(result, bool):
        return Grade.of(result, "custom grader returned false")
    if isinstance(result, tuple) and len(result) == 2:
        return Grade("pass" if result[0] else "fail", str(result[1]))
    raise TypeError(f"a grader returned {type(result).__name__}, not a Grade/bool/(bool, reason)")


class GradingContext:
    """What graders may need beyond the answer: the judge, built only when first used."""

    def __init__(self, judge_factory: Callable[[], Any] | None = None):
        self._judge_factory = judge_factory
        self._judge = None

    @property
    def judge(self):
        if self._judge is None:
            self._judge = (self._judge_factory or judge_from_env)()
        return self._judge


def grade_many(
    items: Sequence[tuple[Case, str]], context: GradingContext | None = None
) -> list[Grade]:
    """Grade (case, answer) pairs, in order. A grader that raises gives an ``error`` grade."""
    context = context or GradingContext()
    out: list[Grade | None] = [None] * len(items)
    batches: dict[str, list[int]] = {}
    for i, (case, output) in enumerate(items):
        gdef = _REGISTRY.get(case.grader_type)
        if gdef is None:
            out[i] = Grade("error", f"unknown grader type {case.grader_type!r}")
        elif gdef.batch is not None:
            batches.setdefault(gdef.name, []).append(i)
        else:
            try:
                out[i] = _coerce(gdef.grade(case, output, case.grader_params))
            except Exception as exc:  # a grader bug must not lose the case
                out[i] = Grade("error", f"grader {gdef.name!r} raised {exc!r}")
    for name, idx in batches.items():
        try:
            grades = _REGISTRY[name].batch([items[i] for i in idx], context)
        except Exception as exc:
            grades = [Grade("error", f"grader {name!r} raised {exc!r}")] * len(idx)
        for i, g in zip(idx, grades, strict=True):
            out[i] = g
    return [g for g in out if g is not None]


def grade(case: Case, output: str, context: GradingContext | None = None) -> Grade:
    return grade_many([(case, output)], context)[0]


# --- helpers ---------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def _short(text: Any, limit: int = 80) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    s = s.replace("\n", "\\n")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _check_keys(params: dict, allowed: set[str], grader: str) -> None:
    unknown = set(params) - allowed
    _require(not unknown, f"{grader} grader: unknown parameter(s) {sorted(unknown)}")


# --- exact -----------------------------------------------------------------------------

NORMALIZE = ("strip", "whitespace", "case", "unicode")


def _exact_normalize(params: dict) -> list[str]:
    norm = params.get("normalize", ["strip"])
    if isinstance(norm, str):
        norm = [norm]
    if isinstance(norm, dict):  # {"whitespace": true, ...}
        norm = [k for k, v in norm.items() if v]
    return norm


def _normalize_text(text: str, options: Sequence[str]) -> str:
    if "unicode" in options:
        text = unicodedata.normalize("NFKC", text)
    if "case" in options:
        text = text.casefold()
    if "whitespace" in options:
        text = _SPACE.sub(" ", text).strip()
    elif "strip" in options:
        text = text.strip()
    return text


def _validate_exact(case: Case, params: dict) -> None:
    _check_keys(params, {"normalize"}, "exact")
    norm = _exact_normalize(params)
    _require(
        isinstance(norm, list) and all(n in NORMALIZE for n in norm),
        f"exact grader: normalize must be a list of {', '.join(NORMALIZE)}",
    )
    _require(
        isinstance(case.expected, str | int | float) and not isinstance(case.expected, bool),
        "exact grader: expected must be a string (or a number)",
    )


def _grade_exact(case: Case, output: str, params: dict) -> Grade:
    norm = _exact_normalize(params)
    expected = case.expected if isinstance(case.expected, str) else str(case.expected)
    ok = _normalize_text(output, norm) == _normalize_text(expected, norm)
    return Grade.of(
        ok, f"expected exactly {_short(expected)!s}, got {_short(output)!s}", "exact match"
    )


# --- contains --------------------------------------------------------------------------


def _contains_values(case: Case, params: dict) -> list[str] | None:
    values = params.get("values", params.get("value", case.expected))
    if isinstance(values, str):
        values = [values]
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        return values
    return None


def _validate_contains(case: Case, params: dict) -> None:
    _check_keys(params, {"values", "value", "mode", "case_sensitive"}, "contains")
    _require(
        _contains_values(case, params) is not None,
        "contains grader: values (or expected) must be a non-empty string or list of strings",
    )
    _require(params.get("mode", "all") in ("all", "any"), "contains grader: mode is all or any")
    _require(
        isinstance(params.get("case_sensitive", False), bool),
        "contains grader: case_sensitive must be true or false",
    )


def _grade_contains(case: Case, output: str, params: dict) -> Grade:
    values = _contains_values(case, params) or []
    sensitive = params.get("case_sensitive", False)

    def prep(s: str) -> str:
        s = unicodedata.normalize("NFKC", s)
        return s if sensitive else s.casefold()

    haystack = prep(output)
    found = [v for v in values if prep(v) in haystack]
    missing = [v for v in values if v not in found]
    if params.get("mode", "all") == "any":
        return Grade.of(
            bool(found), f"contains none of {values}", f"contains {found[0]!r}" if found else ""
        )
    return Grade.of(not missing, f"missing {missing}", f"contains all of {values}")


# --- regex -----------------------------------------------------------------------------

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _regex(case: Case, params: dict) -> re.Pattern:
    pattern = params.get("pattern", case.expected)
    _require(isinstance(pattern, str) and pattern != "", "regex grader: pattern must be a string")
    flags = params.get("flags", "")
    if isinstance(flags, list):
        flags = "".join(flags)
    _require(
        isinstance(flags, str) and all(f in _FLAGS for f in flags.lower()),
        "regex grader: flags are letters from 'imsx'",
    )
    bits = 0
    for f in flags.lower():
        bits |= _FLAGS[f]
    try:
        return re.compile(pattern, bits)
    except re.error as exc:
        raise ValueError(f"regex grader: invalid pattern {pattern!r}: {exc}") from exc


def _validate_regex(case: Case, params: dict) -> None:
    _check_keys(params, {"pattern", "flags", "fullmatch"}, "regex")
    _regex(case, params)


def _grade_regex(case: Case, output: str, params: dict) -> Grade:
    rx = _regex(case, params)
    m = rx.fullmatch(output.strip()) if params.get("fullmatch") else rx.search(output)
    return Grade.of(
        m is not None,
        f"does not match /{rx.pattern}/: {_short(output)}",
        f"matches {_short(m.group(0) if m else '', 40)!r}",
    )


# --- json ------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL | re.IGNORECASE)


def _validate_json(case: Case, params: dict) -> None:
    _check_keys(params, {"schema", "fields"}, "json")
    schema = params.get("schema")
    if schema is not None:
        _require(isinstance(schema, dict | bool), "json grader: schema must be an object")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"json grader: invalid JSON Schema: {exc.message}") from exc
    fields = params.get("fields")
    _require(fields is None or isinstance(fields, dict), "json grader: fields must be an object")


def _grade_json(case: Case, output: str, params: dict) -> Grade:
    text = output
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Grade("fail", f"not valid JSON ({exc.msg} at column {exc.colno}): {_short(output)}")
    schema = params.get("schema")
    if schema is not None:
        errors = sorted(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(value),
            key=lambda e: list(e.path),
        )
        if errors:
            err = errors[0]
            where = "/".join(str(p) for p in err.path) or "(root)"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return Grade("fail", f"JSON does not match the schema at {where}: {err.message}{more}")
    fields = params.get("fields")
    if fields is None and isinstance(case.expected, dict):
        fields = case.expected
    if fields:
        if not isinstance(value, dict):
            return Grade("fail", f"expected a JSON object, got {type(value).__name__}")
        wrong = [
            f"{k}: expected {_short(v, 40)}, got "
            + (_short(value[k], 40) if k in value else "nothing")
            for k, v in fields.items()
            if k not in value or value[k] != v
        ]
        if wrong:
            return Grade("fail", "field mismatch: " + "; ".join(wrong))
    return Grade(
        "pass",
        "valid JSON"
        + (", matches the schema" if schema else "")
        + (", fields match" if fields else ""),
    )


# --- numeric ---------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", "").strip())
        except ValueError:
            return None
    return None


def _validate_numeric(case: Case, params: dict) -> None:
    _check_keys(params, {"tolerance", "mode", "pick"}, "numeric")
    _require(_as_number(case.expected) is not None, "numeric grader: expected must be a number")
    tol = params.get("tolerance", 0)
    _require(
        isinstance(tol, int | float) and not isinstance(tol, bool) and tol >= 0,
        "numeric grader: tolerance must be a number >= 0",
    )
    _require(params.get("mode", "abs") in ("abs", "rel"), "numeric grader: mode is abs or rel")
    _require(
        params.get("pick", "only") in ("only", "first", "last"),
        "numeric grader: pick is only, first or last",
    )


def _grade_numeric(case: Case, output: str, params: dict) -> Grade:
    expected = _as_number(case.expected)
    text = unicodedata.normalize("NFKC", output)
    whole = _as_number(text.strip().rstrip(".").lstrip("$€£"))
    if whole is not None:
        got = whole
    else:
        found = _NUMBER.findall(text)
        if not found:
            return Grade("fail", f"no number in the answer: {_short(output)}")
        pick = params.get("pick", "only")
        if pick == "only" and len(set(found)) > 1:
            return Grade(
                "fail",
                f"several numbers in the answer ({', '.join(found[:5])}); "
                "set pick: first|last to choose one",
            )
        got = float((found[-1] if pick == "last" else found[0]).replace(",", ""))
    tol = float(params.get("tolerance", 0))
    diff = abs(got - expected)
    allowed = tol * abs(expected) if params.get("mode", "abs") == "rel" else tol
    # A hair of slack so 0.1 + 0.2 equals 0.3 under tolerance 0.
    ok = diff <= allowed + 1e-9 * max(1.0, abs(expected))
    return Grade.of(
        ok,
        f"expected {expected:g} ± {allowed:g}, got {got:g}",
        f"{got:g} is within {allowed:g} of {expected:g}",
    )


# --- judge -----------------------------------------------------------------------------


def _validate_judge(case: Case, params: dict) -> None:
    _check_keys(params, {"threshold"}, "judge")
    criteria.validate(case, params)


def _judge_grade(j: Any, threshold: float, judge_name: str) -> Grade:
    if j.state != "ok":
        return Grade("error", f"judge {judge_name} gave no score ({j.state}): {j.reason}")
    ok = j.score >= threshold
    sign = ">=" if ok else "<"
    reason = f"judge score {j.score} {sign} {threshold}: {j.reason}"
    return Grade("pass" if ok else "fail", reason, j.score)


def _grade_judge_batch(items: Sequence[tuple[Case, str]], context: GradingContext) -> list[Grade]:
    judge = context.judge
    plain = [i for i, (case, _) in enumerate(items) if not case.criteria]
    named = [i for i, (case, _) in enumerate(items) if case.criteria]
    out: dict[int, Grade] = {}
    if plain:
        requests = [
            JudgeRequest(
                query=input_text(items[i][0].input),
                response=items[i][1],
                reference=reference_text(items[i][0].expected),
            )
            for i in plain
        ]
        for i, j in zip(plain, judge.judge_many(requests), strict=True):
            out[i] = _judge_grade(j, items[i][0].grader_params.get("threshold", 4), judge.name)
    if named:
        per_case = criteria.grade_criteria(judge, [items[i] for i in named])
        for i, cgrades in zip(named, per_case, strict=True):
            outcome, reason = criteria.combine(cgrades)
            scores = [g.score for g in cgrades if g.score is not None]
            out[i] = Grade(outcome, reason, min(scores) if scores else None, tuple(cgrades))
    return [out[i] for i in range(len(items))]


for _name, _fn, _val in (
    ("exact", _grade_exact, _validate_exact),
    ("contains", _grade_contains, _validate_contains),
    ("regex", _grade_regex, _validate_regex),
    ("json", _grade_json, _validate_json),
    ("numeric", _grade_numeric, _validate_numeric),
):
    _REGISTRY[_name] = GraderDef(_name, grade=_fn, validate=_val)
_REGISTRY["judge"] = GraderDef("judge", validate=_validate_judge, batch=_grade_judge_batch)
