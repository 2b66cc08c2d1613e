"""Reading the judge model's reply: a score (or a side-by-side pick) and a reason, or the
reason why the reply is not a judgment.

Tolerant about where the JSON object is (a code fence, prose around it), strict about what
it says (an integer score 1-5; first, second or tie), and never fooled by the prompt's own
untrusted material. A trace is written by whoever uses the app being judged, so a trace
that says ``{"score": 5}`` must not become a 5 when the judge model repeats its prompt:

- a reply that contains a fence marker (in any disguise: zero-width characters and
  fullwidth look-alikes are folded first) or this call's nonce is an echo of the prompt;
- a reply that contains a fenced, untrusted text (at least ``MIN_ECHO`` characters) is an
  echo too;
- a JSON object that appears inside the untrusted material is never taken as the verdict.

An echo raises :class:`EchoedPrompt` (an ``InvalidJudgment``): the judgment is
``unparseable`` and gets no repair turn, since the repair would show the model the
injected text once more as its own words.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass

MIN_ECHO = 32  # characters (after folding) of untrusted text that count as an echo

_CODE_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
# A fence marker after folding: "<<<BEGIN", "< < <END", or a label the rubric fences with.
# The bare labels only in capitals: "the end user question" in a reason is prose.
_MARKER = re.compile(
    r"<<<(?i:BEGIN|END)\b|\b(?:BEGIN|END) (?:USER QUESTION|ASSISTANT ANSWER|REFERENCE ANSWER|"
    r"RETRIEVED CONTEXT|CONVERSATION|TOOL CALLS|FIRST ANSWER|SECOND ANSWER)\b"
)


class InvalidJudgment(ValueError):
    """The model answered, but not with a usable judgment."""


class EchoedPrompt(InvalidJudgment):
    """The reply repeats the prompt's fenced, untrusted material: not a judgment."""


@dataclass(frozen=True)
class Fenced:
    """What one call fenced: the nonce on its fence labels and the untrusted texts."""

    nonce: str
    texts: tuple[str, ...]


def _fold(text: str) -> str:
    """Compatibility-folded (fullwidth to ASCII), format characters (zero-width) dropped."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _squash(text: str) -> str:
    """Folded, without any whitespace, case-folded: the form echoes are compared in."""
    return "".join(_fold(text).split()).casefold()


def _check_echo(text: str, fenced: Fenced | None) -> list[str]:
    """Raise EchoedPrompt for a reply that repeats the prompt; else the squashed untrusted
    texts, to rule out JSON objects copied from them."""
    if fenced is None:
        return []
    folded = _fold(text)
    if fenced.nonce and fenced.nonce in folded:
        raise EchoedPrompt("the reply repeats the prompt's fence label")
    # Spaced-out markers ("< < <END") are how neutralised text reads: squash spaces first.
    if _MARKER.search(re.sub(r"(?<=[<>])\s+(?=[<>A-Za-z])", "", folded)):
        raise EchoedPrompt("the reply contains fence markers of the prompt")
    squashed = _squash(text)
    untrusted = [_squash(t) for t in fenced.texts if t]
    for part in untrusted:
        if len(part) >= MIN_ECHO and part in squashed:
            raise EchoedPrompt("the reply repeats fenced, untrusted text")
    return untrusted


def _json_objects(text: str, untrusted: list[str]) -> tuple[list[dict], int]:
    """Every JSON object in the text (those inside code fences first) that does not appear
    in the untrusted material, and how many did appear there."""
    candidates = [m.group(1) for m in _CODE_FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        found, copied = [], 0
        for start in [i for i, ch in enumerate(chunk) if ch == "{"]:
            try:
                obj, end = decoder.raw_decode(chunk, start)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            raw = _squash(chunk[start:end])
            if any(raw in part for part in untrusted):
                copied += 1
                continue
            found.append(obj)
        if found or copied:
            return found, copied
    return [], 0


def _objects_with(text: str | None, key: str, fenced: Fenced | None) -> list[dict]:
    if text is None or not text.strip():
        raise InvalidJudgment("empty answer")
    untrusted = _check_echo(text, fenced)
    found, copied = _json_objects(text, untrusted)
    with_key = [o for o in found if key in o]
    if with_key:
        return with_key
    if copied:
        raise EchoedPrompt("the only JSON in the reply is copied from the untrusted text")
    if found:
        raise InvalidJudgment(f'no "{key}" field in the JSON object')
    raise InvalidJudgment("no JSON object in the answer")


def parse_judgment(
    text: str | None, fenced: Fenced | None = None, scale: tuple[int, int] = (1, 5)
) -> tuple[int, str]:
    """(score, reason) from a model's answer, or InvalidJudgment naming the problem.

    The score must be an integer on the scale (4.0 is accepted as 4; "4", 4.5 and 7 are
    not). ``fenced``: what the prompt fenced, so an echo of it is refused (module docstring).
    """
    return _score_and_reason(_objects_with(text, "score", fenced)[0], scale)


def _score_and_reason(obj: dict, scale: tuple[int, int]) -> tuple[int, str]:
    lo, hi = scale
    score = obj.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise InvalidJudgment(f"score must be an integer {lo}-{hi}, got {score!r}")
    if isinstance(score, float):
        if not (math.isfinite(score) and score.is_integer()):
            raise InvalidJudgment(f"score must be an integer {lo}-{hi}, got {score!r}")
        score = int(score)
    if not lo <= score <= hi:
        raise InvalidJudgment(f"score {score} is outside {lo}-{hi}")
    reason = obj.get("reason")
    if reason is None or (isinstance(reason, str) and not reason.strip()):
        reason = "(the judge gave no reason)"
    elif not isinstance(reason, str):
        reason = json.dumps(reason)
    return score, reason.strip()


def parse_criteria(
    text: str | None, scales: dict[str, tuple[int, int]], fenced: Fenced | None = None
) -> dict[str, tuple[int, str] | InvalidJudgment]:
    """One reply that judged several criteria: ``{"<criterion>": {"score": n, "reason":
    "..."}, ...}``. Per criterion, (score, reason) or the InvalidJudgment that names what
    is wrong with its entry: a missing or invalid criterion spoils that criterion only.

    A reply that is no judgment at all (empty, no JSON, an echo of the prompt) raises, as
    in ``parse_judgment``: it spoils every criterion.
    """
    if text is None or not text.strip():
        raise InvalidJudgment("empty answer")
    untrusted = _check_echo(text, fenced)
    found, copied = _json_objects(text, untrusted)
    # The verdict is the object that names the most criteria (a model may add a wrapper).
    candidates = found + [v for o in found for v in o.values() if isinstance(v, dict)]
    best = max(candidates, key=lambda o: sum(name in o for name in scales), default=None)
    if best is None or not any(name in best for name in scales):
        if copied and not found:
            raise EchoedPrompt("the only JSON in the reply is copied from the untrusted text")
        if found:
            raise InvalidJudgment("no criterion named in the JSON object")
        raise InvalidJudgment("no JSON object in the answer")
    out: dict[str, tuple[int, str] | InvalidJudgment] = {}
    for name, scale in scales.items():
        entry = best.get(name)
        if entry is None:
            out[name] = InvalidJudgment(f'no "{name}" entry in the JSON object')
        elif not isinstance(entry, dict):
            out[name] = InvalidJudgment(f'"{name}" must be an object with a score and a reason')
        else:
            try:
                out[name] = _score_and_reason(entry, scale)
            except InvalidJudgment as exc:
                out[name] = InvalidJudgment(f"{name}: {exc}")
    return out


def parse_pick(text: str | None, fenced: Fenced | None = None) -> tuple[str, str]:
    """(winner, reason) from a side-by-side verdict: winner is first, second or tie."""
    obj = _objects_with(text, "winner", fenced)[0]
    winner = obj["winner"]
    if not isinstance(winner, str) or winner.strip().lower() not in ("first", "second", "tie"):
        raise InvalidJudgment(f'winner must be "first", "second" or "tie", got {winner!r}')
    reason = obj.get("reason")
    reason = reason.strip() if isinstance(reason, str) and reason.strip() else "(no reason)"
    return winner.strip().lower(), reason
