"""A golden case as a value: the :class:`Case` record and the text and message forms of its input.

The file format that reads and writes cases is :mod:`eval_pipeline.core.regression.cases`;
graders, runners and the A/B test need only this module.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
KNOWN_KEYS = ("id", "input", "expected", "grader", "tags", "provenance", "criteria")

Message = dict[str, str]
Input = str | list[Message]


@dataclass(frozen=True)
class Case:
    id: str
    input: Input
    expected: Any
    grader: dict[str, Any]  # normalised: always {"type": name, **params}
    tags: tuple[str, ...] = ()
    provenance: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # "file:line" it was loaded from (not part of the content)
    criteria: tuple[str, ...] = ()  # judge criteria this case is graded on; () = the default

    @property
    def grader_type(self) -> str:
        return self.grader["type"]

    @property
    def grader_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.grader.items() if k != "type"}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "input": self.input,
            "expected": self.expected,
            "grader": _ordered_grader(self.grader),
        }
        if self.tags:
            out["tags"] = list(self.tags)
        if self.provenance:
            out["provenance"] = self.provenance
        if self.criteria:  # only when named, so golden versions of older files stay the same
            out["criteria"] = list(self.criteria)
        for key in sorted(self.extra):
            out[key] = self.extra[key]
        return out


def _ordered_grader(grader: dict[str, Any]) -> dict[str, Any]:
    return {"type": grader["type"], **{k: grader[k] for k in sorted(grader) if k != "type"}}


_SPACE = re.compile(r"\s+")


def input_text(value: Input) -> str:
    """The text a case asks: the string itself, or the last user message (else the last one)."""
    if isinstance(value, str):
        return value
    for msg in reversed(value):
        if msg.get("role") == "user":
            return msg.get("content", "")
    return value[-1].get("content", "") if value else ""


def reference_text(expected: Any) -> str | None:
    """A case's expected answer as the judge's reference text (JSON for a structured one)."""
    if expected is None:
        return None
    return expected if isinstance(expected, str) else json.dumps(expected, ensure_ascii=False)


def normalise_input(value: Input) -> str:
    """Input text for duplicate detection: NFKC, case-folded, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", input_text(value))
    return _SPACE.sub(" ", text.casefold()).strip()


def as_messages(value: Input) -> list[Message]:
    """The case input as a chat message list."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [dict(m) for m in value]
