"""One rule for numeric timestamps, shared by trace and feedback ingestion.

A number is epoch **milliseconds**. A value below ``EPOCH_SECONDS_BELOW`` in magnitude is
refused: read as milliseconds it would land quietly in the first days of 1970, and it is
almost always epoch seconds sent by mistake (the trace inbox's SQL applies the same bound).
"""

from __future__ import annotations

import datetime as dt
import math

EPOCH_SECONDS_BELOW = 1e11  # 1e11 ms is 1973-03-03; 1e11 s would be the year 5138


def epoch_ms_to_utc(value: int | float) -> dt.datetime:
    """Naive UTC time of an epoch-milliseconds number; ValueError saying why not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    if abs(value) < EPOCH_SECONDS_BELOW:
        raise ValueError(
            f"{value!r} looks like epoch seconds; expected epoch milliseconds or ISO 8601"
        )
    try:
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"{value!r} is not a valid epoch time in milliseconds") from exc
