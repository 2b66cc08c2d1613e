"""Targets and judges for the A/B tests: small, deterministic, each with one behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval_pipeline.core.judge.base import JudgeRequest, Judgment, PairPick, PairRequest


def app(value, prompt_path=None):
    """Answers by the directives in its prompt file: ``mode: good|bad``, ``crash_on: word``."""
    prompt = Path(prompt_path).read_text(encoding="utf-8") if prompt_path else "mode: good"
    question = value if isinstance(value, str) else value[-1]["content"]
    for line in prompt.splitlines():
        if line.startswith("crash_on:") and line.split(":", 1)[1].strip() in question:
            raise RuntimeError("the app crashed")
    if "mode: bad" in prompt and "billing" in question:
        return "no"
    return f"GOOD answer to: {question}"


@dataclass
class LengthJudge:
    """Scores 5 for answers starting with GOOD, 1 otherwise; fails on answers that contain
    JUDGE_FAIL (error) or JUDGE_GARBLE (unparseable)."""

    name: str = "length-test"
    model: str | None = None
    rubric_version: str = "test-v1"

    def judge_many(self, requests: Sequence[JudgeRequest], progress=None) -> list[Judgment]:
        out = []
        for r in requests:
            if "JUDGE_FAIL" in r.response:
                out.append(Judgment("error", None, "timeout: no answer"))
            elif "JUDGE_GARBLE" in r.response:
                out.append(Judgment("unparseable", None, "no score", raw_output="???"))
            else:
                out.append(Judgment("ok", 5 if r.response.startswith("GOOD") else 1, "rule"))
        return out


@dataclass
class FirstPositionJudge:
    """A pairwise judge with total position bias: always picks the answer shown first,
    except when both answers are identical (a tie)."""

    name: str = "first-position-test"

    def compare_many(self, requests: Sequence[PairRequest]) -> list[PairPick]:
        return [
            PairPick("tie" if r.first == r.second else "first", "position bias") for r in requests
        ]
