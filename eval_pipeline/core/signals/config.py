"""Signals configuration, in one place: the patterns, the fixed binnings, the floors, and
which signals page and which only inform.

Everything is validated when it is built (``SignalsConfig(...)`` or ``load_config``): a
pattern that is not a valid regular expression *for DuckDB* (RE2, which the SQL uses, and
which differs from Python's ``re``), an unknown signal, a floor out of range are refused
with a message that names the offending entry.

The defaults are tuned to keep a clean month quiet (see docs/signals.md and
``python -m bench.signals_eval``): a rate pages only when it is significantly higher than
the healthy reference AND at least ``rate_abs_floor`` higher AND at least
``rate_rel_floor`` times the reference; a distribution pages only when it differs
significantly AND its PSI on the fixed binning is at least ``psi_floor``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import duckdb

# Case-insensitive (RE2 (?i) folds Unicode case). Refusals open an answer, so the patterns
# are matched against its first ``refusal_window_chars`` characters only: cheaper, and "I
# can't wait to help" deep inside a long answer is not a refusal.
APOS = "['’]"
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    # English
    rf"\bi{APOS}?(?:m| am) (?:sorry|afraid),? (?:but )?(?:i )?(?:can{APOS}?t|cannot|can not|am unable|{APOS}?m unable|won{APOS}t|will not|am not able|{APOS}?m not able)\b",
    rf"\bi(?: can{APOS}?t| cannot| can not| won{APOS}t| will not| am unable to|{APOS}m unable to| am not able to|{APOS}m not able to) (?:help|assist|provide|answer|do that|comply|fulfil|fulfill|support|share|discuss|respond)",
    r"\bas an ai(?: language model| assistant)?,? i\b",
    rf"\bi{APOS}?(?:m| am) not (?:allowed|permitted|authori[sz]ed|able) to\b",
    r"\bi must (?:decline|refuse)\b",
    r"\b(?:unable|not able) to (?:help|assist) with (?:that|this|your request)\b",
    # Spanish
    r"\b(?:lo siento|disculpa|disculpe),? (?:pero )?no (?:puedo|me es posible)\b",
    r"\bno puedo (?:ayudar|ayudarte|ayudarle|proporcionar|responder|hacer eso|asistir)",
    # French
    r"\b(?:je suis )?d[ée]sol[ée]e?,? (?:mais )?je ne (?:peux|suis) pas\b",
    rf"\bje ne peux pas (?:vous aider|t{APOS}aider|aider|r[ée]pondre|fournir|faire cela|faire ça)",
    r"\bje ne suis pas en mesure de\b",
    # German
    r"\b(?:es tut mir leid|leider),? (?:aber )?(?:ich kann|kann ich)\b.{0,30}\bnicht\b",
    r"\bich kann (?:ihnen |dir )?(?:dabei |damit |hierbei )?nicht (?:helfen|weiterhelfen|behilflich)",
    r"\bich darf (?:ihnen |dir )?(?:das |dazu |dabei )?(?:nicht|keine)\b",
    # Portuguese
    r"\b(?:desculpe|desculpa|sinto muito|lamento),? (?:mas )?n[ãa]o (?:posso|consigo)\b",
    r"\bn[ãa]o posso (?:ajudar|fornecer|responder|fazer isso|auxiliar)",
)
# An answer is cut off when its last non-blank character could not end a sentence: a
# letter, a digit, a comma or semicolon, a hyphen or dash, an opening bracket or quote.
# Emoji, closing brackets, code fences and terminal punctuation (in any script) end fine.
DEFAULT_CUTOFF_PATTERN = r"[\p{L}\p{N},;\-–—(\[{«“„]\s*$"

# Signal name -> (kind, SQL expression of the per-trace value for distributions).
RATE_SIGNALS = ("refusal_rate", "empty_rate", "cutoff_rate", "error_rate")
DIST_SIGNALS = (
    "answer_chars",
    "answer_words",
    "query_chars",
    "query_words",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)
MIX_SIGNALS = ("segment_share", "prompt_version_share", "model_share")
ALL_SIGNALS = RATE_SIGNALS + DIST_SIGNALS + MIX_SIGNALS
# Values never seen before in a mix dimension: always information, never a page.
NEW_VALUE_SIGNALS = ("new_prompt_version", "new_model")

# Fixed log binning for distributions: bin = floor(ln(1 + x * scale) / ln(base)), capped.
# The edges never move, so days compare bin by bin; cost is binned in micro-dollars.
DEFAULT_SCALE = {"cost_usd": 1e6}


def _check_regex(what: str, pattern: Any) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{what}: a pattern must be a non-empty string, got {pattern!r}")
    try:
        duckdb.sql("SELECT regexp_matches('', ?)", params=[pattern]).fetchall()
    except duckdb.Error as exc:
        reason = str(exc).split("\n")[0]
        raise ValueError(
            f"{what}: {pattern!r} is not a valid regular expression (RE2 syntax, as DuckDB "
            f"runs it): {reason}"
        ) from None


@dataclass(frozen=True)
class SignalsConfig:
    refusal_patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS
    refusal_window_chars: int = 400
    cutoff_pattern: str = DEFAULT_CUTOFF_PATTERN
    # metadata keys the optional per-trace figures are read from (and the error flag)
    metadata_keys: Mapping[str, str] = field(
        default_factory=lambda: {
            "latency_ms": "latency_ms",
            "prompt_tokens": "prompt_tokens",
            "completion_tokens": "completion_tokens",
            "cost_usd": "cost_usd",
            "error": "error",
            "status": "status",
        }
    )
    bin_base: float = 1.5
    n_bins: int = 30
    bin_scale: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SCALE))
    # detection
    alpha: float = 0.01  # Holm-adjusted, over the day's whole family of paging tests
    rate_abs_floor: float = 0.02  # today - reference, in rate units (2 percentage points)
    rate_rel_floor: float = 2.0  # today / reference
    share_abs_floor: float = 0.02  # a segment's share fell by at least this ...
    share_rel_floor: float = 0.5  # ... and to at most this fraction of its reference share
    # PSI on the fixed binning. About the square of a shift in standard deviations of the log
    # values: 1.0 is a one-sd shift; a weekend's latency or length wobble reaches 0.3-0.5.
    psi_floor: float = 1.0
    min_dist_n: int = 100  # fewer values today (or in the reference): no distribution verdict
    min_reference_days: int = 3
    pages: tuple[str, ...] = (
        "refusal_rate",
        "empty_rate",
        "cutoff_rate",
        "error_rate",
        "answer_chars",
        "latency_ms",
        "segment_share",
    )
    informs: tuple[str, ...] = (
        "answer_words",
        "query_chars",
        "query_words",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "prompt_version_share",
        "model_share",
        "new_prompt_version",
        "new_model",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "refusal_patterns", tuple(self.refusal_patterns))
        object.__setattr__(self, "pages", tuple(self.pages))
        object.__setattr__(self, "informs", tuple(self.informs))
        if not self.refusal_patterns:
            raise ValueError("refusal_patterns: at least one pattern is needed")
        for i, p in enumerate(self.refusal_patterns):
            _check_regex(f"refusal_patterns[{i}]", p)
        _check_regex("cutoff_pattern", self.cutoff_pattern)
        known = set(ALL_SIGNALS) | set(NEW_VALUE_SIGNALS)
        for name in ("pages", "informs"):
            unknown = sorted(set(getattr(self, name)) - known)
            if unknown:
                raise ValueError(f"{name}: unknown signals {unknown} (known: {sorted(known)})")
        for s in NEW_VALUE_SIGNALS:
            if s in self.pages:
                raise ValueError(f"pages: {s} is information, never a page on its own")
        both = sorted(set(self.pages) & set(self.informs))
        if both:
            raise ValueError(f"signals both page and inform: {both}")
        for key in set(self.metadata_keys) - {*DIST_SIGNALS, "error", "status"}:
            raise ValueError(f"metadata_keys: unknown field {key!r}")
        for key, name in self.metadata_keys.items():
            if not isinstance(name, str) or not name.replace("_", "").isalnum():
                raise ValueError(f"metadata_keys[{key!r}]: {name!r} is not a plain key name")
        checks = [
            ("refusal_window_chars", self.refusal_window_chars >= 1, ">= 1"),
            ("bin_base", self.bin_base > 1, "> 1"),
            ("n_bins", 2 <= self.n_bins <= 200, "between 2 and 200"),
            ("alpha", 0 < self.alpha < 1, "in (0, 1)"),
            ("rate_abs_floor", 0 <= self.rate_abs_floor < 1, "in [0, 1)"),
            ("rate_rel_floor", self.rate_rel_floor >= 1, ">= 1"),
            ("share_abs_floor", 0 <= self.share_abs_floor < 1, "in [0, 1)"),
            ("share_rel_floor", 0 < self.share_rel_floor <= 1, "in (0, 1]"),
            ("psi_floor", self.psi_floor >= 0, ">= 0"),
            ("min_dist_n", self.min_dist_n >= 1, ">= 1"),
            ("min_reference_days", self.min_reference_days >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        for key, scale in self.bin_scale.items():
            if key not in DIST_SIGNALS or not scale > 0:
                raise ValueError(f"bin_scale[{key!r}]: must name a distribution and be > 0")

    def pages_on(self, signal: str) -> bool:
        return signal in self.pages

    def refusal_regex(self) -> str:
        """One RE2 alternation of every pattern, case-insensitive."""
        return "(?i)" + "|".join(f"(?:{p})" for p in self.refusal_patterns)


DEFAULT = SignalsConfig()


def load_config(source: Mapping[str, Any] | str | Path | None = None) -> SignalsConfig:
    """Build the configuration from a mapping or a JSON file; unknown keys are refused.

    ``extra_refusal_patterns`` adds patterns to the defaults instead of replacing them.
    """
    if source is None:
        return SignalsConfig()
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"signals config {path}: cannot read it as JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"signals config {path}: the top level must be an object")
    else:
        data = dict(source)
    names = {f.name for f in fields(SignalsConfig)}
    extra = data.pop("extra_refusal_patterns", None)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"signals config: unknown keys {unknown} (known: {sorted(names)})")
    for key in ("refusal_patterns", "pages", "informs"):
        if key in data and (isinstance(data[key], str) or not hasattr(data[key], "__iter__")):
            raise ValueError(f"signals config: {key} must be a list")
    cfg = SignalsConfig(**data)
    if extra is not None:
        if isinstance(extra, str) or not hasattr(extra, "__iter__"):
            raise ValueError("signals config: extra_refusal_patterns must be a list")
        extra = list(extra)
        for i, p in enumerate(extra):
            _check_regex(f"extra_refusal_patterns[{i}]", p)
        cfg = replace(cfg, refusal_patterns=cfg.refusal_patterns + tuple(extra))
    return cfg
