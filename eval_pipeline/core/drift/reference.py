"""The reference a day is compared with: built from healthy days only.

A day enters a segment's reference only when it was judged healthy *at the time*: it was
not inside an open incident (nor inside the run of days an incident was later back-dated
to), it had enough judged traces, and its judge failures were not excessive. So a
regression can never become the baseline by lasting long enough. Accepting a new normal
is an explicit, recorded act (a :class:`Rebaseline`): the reference then restarts from the
day it names.

Modes:
- ``trailing`` (default): the last ``days`` healthy days before today;
- ``window``: the healthy days between two pinned dates;
- ``value``: a pinned mean (e.g. the golden-set judge mean at deploy time).

A reference with fewer than ``min_days`` days or ``min_n`` scores is *thin*: the day gets
"no verdict yet" instead of a verdict, so the first week of a new segment never pages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCORE_LEVELS = np.arange(1, 6, dtype=float)
# A reference whose scores are all equal has zero spread; a floor keeps the standard error
# finite (one score step in 20 traces, roughly).
MIN_VARIANCE = 0.05


@dataclass(frozen=True)
class Counts:
    """How many ok judgments scored 1, 2, 3, 4, 5 (scores are integers on a 1-5 scale)."""

    c: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    @classmethod
    def of(cls, scores: Sequence[float]) -> Counts:
        arr = np.asarray(scores, dtype=int)
        return cls(tuple(int((arr == s).sum()) for s in range(1, 6)))

    def __add__(self, other: Counts) -> Counts:
        return Counts(tuple(a + b for a, b in zip(self.c, other.c, strict=True)))

    @property
    def n(self) -> int:
        return sum(self.c)

    @property
    def mean(self) -> float | None:
        n = self.n
        return float(np.dot(self.c, SCORE_LEVELS) / n) if n else None

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1), floored at MIN_VARIANCE."""
        n = self.n
        if n < 2:
            return MIN_VARIANCE
        mean = np.dot(self.c, SCORE_LEVELS) / n
        var = float(np.dot(self.c, (SCORE_LEVELS - mean) ** 2) / (n - 1))
        return max(var, MIN_VARIANCE)


@dataclass(frozen=True)
class ReferenceConfig:
    mode: str = "trailing"  # trailing | window | value
    days: int = 21  # trailing: how many healthy days
    min_days: int = 5
    min_n: int = 100
    window: tuple[dt.date, dt.date] | None = None  # window: first and last day, inclusive
    value: float | None = None  # value: the pinned mean

    def __post_init__(self) -> None:
        if self.mode not in ("trailing", "window", "value"):
            raise ValueError(f"unknown reference mode {self.mode!r} (trailing, window, value)")
        if self.mode == "window" and self.window is None:
            raise ValueError("reference mode 'window' needs window=(first_day, last_day)")
        if self.mode == "value" and self.value is None:
            raise ValueError("reference mode 'value' needs value=<pinned mean>")


@dataclass(frozen=True)
class Rebaseline:
    """'Accept the new normal' for a segment from a day on, recorded with who and why."""

    segment: str
    from_day: dt.date
    reason: str
    created_by: str = "unknown"
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class HistoryDay:
    """What the reference needs to know of a past day of one segment."""

    day: dt.date
    counts: Counts
    judge: str
    healthy: bool  # eligible for the reference (see the module docstring)


@dataclass(frozen=True)
class Reference:
    days: tuple[dt.date, ...]
    counts: Counts
    pinned: float | None = None
    thin_reason: str | None = None

    @property
    def mean(self) -> float | None:
        return self.pinned if self.pinned is not None else self.counts.mean

    @property
    def thin(self) -> bool:
        return self.thin_reason is not None


def select_reference(
    history: Sequence[HistoryDay],
    day: dt.date,
    judge: str,
    config: ReferenceConfig,
    rebaseline_from: dt.date | None = None,
) -> Reference:
    """The reference for ``day``: healthy past days of the same judge, per the config.

    ``history`` holds the segment's earlier days in any order; days on or after ``day``
    are ignored, as are days of another judge (their scores are not comparable) and days
    before a recorded rebaseline.
    """
    if config.mode == "value":
        return Reference(days=(), counts=Counts(), pinned=config.value)
    eligible = [
        h
        for h in history
        if h.day < day
        and h.healthy
        and h.judge == judge
        and (rebaseline_from is None or h.day >= rebaseline_from)
    ]
    if config.mode == "window":
        first, last = config.window
        chosen = [h for h in eligible if first <= h.day <= last]
    else:
        chosen = sorted(eligible, key=lambda h: h.day)[-config.days :]
    counts = Counts()
    for h in chosen:
        counts = counts + h.counts
    days = tuple(sorted(h.day for h in chosen))
    thin = None
    if len(days) < config.min_days:
        thin = f"reference has {len(days)} healthy days (< {config.min_days}): no verdict yet"
    elif counts.n < config.min_n:
        thin = f"reference has {counts.n} scores (< {config.min_n}): no verdict yet"
    return Reference(days=days, counts=counts, thin_reason=thin)
