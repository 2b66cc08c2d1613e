"""The judge interface, the offline heuristic judge, and the judgment cache.

A judgment ends in exactly one state:
- ``ok``: a score 1-5 and a reason;
- ``unparseable``: the judge answered but not with a valid score (raw output kept);
- ``error``: no answer (timeout, HTTP failure, ...), with the reason.
Nothing is dropped and no failure is turned into a score.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from eval_pipeline.core.judge import trace_view
from eval_pipeline.core.judge.criteria import PARTS, request_inputs

State = Literal["ok", "unparseable", "error"]
STATES: tuple[State, ...] = ("ok", "unparseable", "error")


@dataclass(frozen=True)
class JudgeRequest:
    """What the judge sees: untrusted text, fenced by the judge before it reaches a model.

    ``context``, ``conversation``, ``tool_calls``: the trace's parts as ``raw_traces``
    stores them (JSON text; a list is turned into that text); None: the trace has none.
    """

    query: str
    response: str
    reference: str | None = None
    context: str | None = None
    conversation: str | None = None
    tool_calls: str | None = None

    def __post_init__(self) -> None:
        # JSON text, not lists: a request is hashed and grouped by its inputs.
        for name in PARTS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, json.dumps(value, ensure_ascii=False))

    def parts(self) -> dict[str, str | None]:
        """The parts by name, for trace_view's keyword arguments."""
        return {name: getattr(self, name) for name in PARTS}


@dataclass
class Judgment:
    state: State
    score: int | None
    reason: str
    raw_output: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    attempts: int = 1

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown judgment state {self.state!r}")
        if (self.state == "ok") != (self.score is not None):
            raise ValueError("a judgment has a score if and only if it is ok")
        if self.score is not None and not 1 <= self.score <= 5:
            raise ValueError(f"score {self.score} is outside 1-5")


@dataclass(frozen=True)
class PairRequest:
    """Two answers to one question, for a judge that compares them side by side."""

    query: str
    first: str
    second: str
    reference: str | None = None


@dataclass(frozen=True)
class PairPick:
    pick: Literal["first", "second", "tie"] | None  # None: the judge failed
    reason: str


Progress = Callable[[int, int], None]


class Judge(Protocol):
    """Scores (query, response[, reference]) pairs on the 1-5 quality rubric."""

    name: str  # identifies the judge in reports and cache keys, e.g. "heuristic"
    model: str | None  # the model behind it, if any
    rubric_version: str

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Progress | None = None
    ) -> list[Judgment]:
        """One judgment per request, in order. Never raises for a single bad call."""
        ...


def judgment_key(judge: Judge, request: JudgeRequest, version: str | None = None) -> str:
    """Content hash that identifies a judgment: same judge, rubric and text = same key.

    ``version``: the criterion's version (``judge_versions``); None: the judge's rubric
    version (its first criterion). Inputs beyond query, response and reference (retrieved
    context, a conversation, tool calls) are hashed only when present, with their name,
    so the keys of judgments made before they existed are unchanged.
    """
    parts = [
        judge.name,
        judge.model or "",
        version or judge.rubric_version,
        request.query,
        request.response,
        request.reference or "",
    ]
    if trace_view.has_parts(**request.parts()):
        parts += ["parts", trace_view.parts_digest(**request.parts())]
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", errors="surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def judge_versions(judge: Judge) -> dict[str, str]:
    """The judge's criteria, in order, and the version each is keyed and reported by. A
    judge without criteria (the heuristic) scores one, ``quality``, by its rubric version."""
    versions = getattr(judge, "versions", None)
    return dict(versions) if versions else {"quality": judge.rubric_version}


def applicable(judge: Judge, request: JudgeRequest) -> list[str]:
    """The judge's criteria that this request has the inputs for, in order."""
    applies = getattr(judge, "applies", None)
    if callable(applies):  # a judge whose criteria decide from the trace's content
        return applies(request)
    criteria = getattr(judge, "criteria", None)
    if not criteria:
        return list(judge_versions(judge))
    inputs = request_inputs(request)
    return [c.name for c in criteria if c.applies_to(inputs)]


CriteriaItem = tuple[JudgeRequest, tuple[str, ...]]  # a request and the criteria to judge


def judge_criteria(
    judge: Judge, items: Sequence[CriteriaItem], progress: Progress | None = None
) -> list[dict[str, Judgment]]:
    """Per item, a judgment for each criterion asked. A judge of several criteria does it
    itself (one call per trace or one per criterion); a judge of one uses judge_many."""
    own = getattr(judge, "judge_criteria", None)
    if callable(own):
        return own(items, progress)
    (name,) = judge_versions(judge)
    unknown = {n for _, names in items for n in names} - {name}
    if unknown:
        raise ValueError(f"judge {judge.name} cannot judge {', '.join(sorted(unknown))}")
    asked = [req for req, names in items if names]
    fresh = iter(judge.judge_many(asked, progress=progress) if asked else [])
    return [{name: next(fresh)} if names else {} for _, names in items]


# --- the heuristic judge ---------------------------------------------------------------

_REFUSAL = re.compile(
    r"\b(i(?:'| a)?m (?:sorry|afraid),? but i (?:can(?:'|no)t|am unable|won't)"
    r"|i can(?:'|no)t (?:help|assist|answer|discuss|provide)"
    r"|i(?:'| a)?m (?:unable|not able) to (?:help|assist|answer|discuss)"
    r"|as an ai,? i (?:can(?:'|no)t|don't))",
    re.IGNORECASE,
)
# Words with an inner apostrophe ("don't"), never a quote mark stuck to a word ("'reset").
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = frozenset(
    """a an the and or but if of to in on at for with by from is are was were be been am i you
    your my me we our it its this that these those do does did can could would should will
    how what when where why which who whom there here have has had not no yes please thanks
    thank hi hello hey so just about as up out any some get got""".split()
)
_ACTIONABLE = re.compile(
    r"\b(you can|go to|click|open|select|steps?|first|then|within \d+|we(?:'ve| have)"
    r"|i(?:'ve| have) (?:updated|issued|sent|started|processed))\b",
    re.IGNORECASE,
)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


@dataclass
class HeuristicJudge:
    """Deterministic rules that need no model: the offline demo default.

    It is not a quality model. It catches the failures that rules can see: empty answers,
    refusals, truncated answers, answers that share no words with the question, and answers
    too short to help. Every report names it, so nobody mistakes it for an LLM judge.
    """

    name: str = "heuristic"
    model: str | None = None
    rubric_version: str = "heuristic-v2"
    rules: dict[str, int] = field(
        default_factory=lambda: {"truncated": 2, "off_topic": 2, "too_short": 1, "vague": 1}
    )

    def judge_one(self, request: JudgeRequest) -> Judgment:
        answer = request.response.strip()
        if not answer:
            return Judgment("ok", 1, "empty answer")
        if _REFUSAL.search(answer):
            return Judgment("ok", 1, "refuses to help")
        score = 5
        reasons = []
        if answer[-1] not in ".!?)\"'`*" and not answer.endswith("```"):
            score -= self.rules["truncated"]
            reasons.append("answer stops mid-sentence")
        q_words = _content_words(request.query)
        a_words = _content_words(answer)
        reference_words = _content_words(request.reference or "")
        if q_words and not (q_words & a_words) and not (reference_words & a_words):
            score -= self.rules["off_topic"]
            reasons.append("shares no content words with the question")
        if len(answer.split()) < 8:
            score -= self.rules["too_short"]
            reasons.append("too short to be helpful")
        if not _ACTIONABLE.search(answer):
            score -= self.rules["vague"]
            reasons.append("no concrete next step")
        score = max(1, min(5, score))
        return Judgment("ok", score, "; ".join(reasons) or "direct, on-topic, actionable")

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Progress | None = None
    ) -> list[Judgment]:
        out = []
        for i, req in enumerate(requests, 1):
            try:
                out.append(self.judge_one(req))
            except Exception as exc:  # a rule bug must not lose the row
                out.append(Judgment("error", None, f"heuristic judge failed: {exc!r}"))
            if progress and (i % 500 == 0 or i == len(requests)):
                progress(i, len(requests))
        return out
