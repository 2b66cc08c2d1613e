"""A/B variants: what is compared. One variant per prompt file on one target, or one per
runner target; the first is the baseline ("A")."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval_pipeline.core.regression.runners import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    Runner,
    runner_from_target,
)

DEFAULT_PROMPT_KWARG = "prompt_path"
VARIANT_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Variant:
    name: str  # "A" (the baseline), "B", ...
    runner: Runner
    label: str  # what a person recognises: the prompt file name or the target
    prompt_file: str | None = None
    prompt_sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "runner_kind": self.runner.kind,
            "target": self.runner.target,
            "prompt_file": self.prompt_file,
            "prompt_sha256": self.prompt_sha256,
        }


def variants_from_prompts(
    target: str,
    prompt_files: Sequence[str | Path],
    *,
    model: str | None = None,
    prompt_kwarg: str = DEFAULT_PROMPT_KWARG,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    api_key_env: str = DEFAULT_API_KEY_ENV,
) -> list[Variant]:
    """One variant per prompt file, all against the same target.

    An HTTP target gets the file's text as its system prompt; a callable target gets the
    file's path as the keyword argument ``prompt_kwarg`` (``fn(input, prompt_path=...)``,
    as the demo app takes it).
    """
    if len(prompt_files) < 2:
        raise ValueError("an A/B test needs at least two prompt files")
    out = []
    for name, path in zip(VARIANT_NAMES, prompt_files, strict=False):
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read prompt file {path}: {exc.strerror or exc}") from exc
        if target.startswith(("http://", "https://")):
            runner = runner_from_target(
                target,
                model=model,
                system_prompt_file=path,
                concurrency=concurrency,
                timeout=timeout,
                api_key_env=api_key_env,
            )
        else:
            runner = runner_from_target(
                target,
                kwargs={prompt_kwarg: str(path)},
                concurrency=concurrency,
                timeout=timeout,
            )
        out.append(
            Variant(
                name,
                runner,
                path.name,
                str(path),
                hashlib.sha256(text.encode("utf-8")).hexdigest(),
            )
        )
    return out


def variants_from_targets(
    targets: Sequence[str],
    *,
    model: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Variant]:
    """One variant per runner target (an http(s) base URL or ``module:function``)."""
    if len(targets) < 2:
        raise ValueError("an A/B test needs at least two targets")
    return [
        Variant(
            name, runner_from_target(t, model=model, concurrency=concurrency, timeout=timeout), t
        )
        for name, t in zip(VARIANT_NAMES, targets, strict=False)
    ]
