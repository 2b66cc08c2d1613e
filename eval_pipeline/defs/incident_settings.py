"""The incident engine's settings as Dagster config: the drift_incidents asset's, and the
defaults the judge asset's follow-up and stated MDE use for the same reference."""

import datetime as dt
import os

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.core.drift import detectors, incidents
from eval_pipeline.core.drift.reference import ReferenceConfig


class IncidentsConfig(dg.Config):
    """How incidents are detected and announced (secrets come from the environment only)."""

    reference_mode: str = "trailing"  # trailing | window | value
    reference_days: int = 21
    min_reference_days: int = 5
    min_reference_n: int = 100
    reference_window_start: str | None = None  # window mode: YYYY-MM-DD
    reference_window_end: str | None = None
    reference_value: float | None = None  # value mode: the pinned mean
    cusum_k: float = detectors.CUSUM_K
    cusum_h: float = detectors.CUSUM_H
    day_alpha: float = detectors.DAY_ALPHA
    min_drop: float = 0.2
    resolve_after: int = 2
    # level of the recovery test an incident must also pass to resolve (0: K days are enough)
    recovery_alpha: float = 0.2
    # Fewer judged traces in a segment-day: no verdict. Unset: $EVAL_DRIFT_MIN_N, else 10.
    # A budgeted sample's floor_per_segment should be at least this (docs/sampling.md).
    min_n: int | None = None
    # While a segment's CUSUM run is above this, its days stay out of its reference, in
    # segment-days with fewer than hold_max_n judged scores (small segments, whose drop
    # would otherwise sink into the reference before the CUSUM pages). None: never held.
    hold_run_s: float | None = incidents.IncidentConfig().hold_run_s
    hold_max_n: int | None = incidents.IncidentConfig().hold_max_n
    # Metadata keys a cause may name, next to prompt_version and model.
    metadata_keys: list[str] = []
    notify_within_days: int = 3
    # The day notifications count "recent" from; unset: today's UTC date. The demo sets it
    # to its last day, because its traffic is dated in the past.
    today: str | None = None
    digest: bool = False

    def incident_config(self) -> incidents.IncidentConfig:
        window = None
        if self.reference_window_start and self.reference_window_end:
            window = (
                dt.date.fromisoformat(self.reference_window_start),
                dt.date.fromisoformat(self.reference_window_end),
            )
        return incidents.IncidentConfig(
            reference=ReferenceConfig(
                mode=self.reference_mode,
                days=self.reference_days,
                min_days=self.min_reference_days,
                min_n=self.min_reference_n,
                window=window,
                value=self.reference_value,
            ),
            k=self.cusum_k,
            h=self.cusum_h,
            day_alpha=self.day_alpha,
            min_drop=self.min_drop,
            resolve_after=self.resolve_after,
            recovery_alpha=self.recovery_alpha if self.recovery_alpha > 0 else None,
            hold_run_s=self.hold_run_s,
            hold_max_n=self.hold_max_n,
            min_n=settings.resolve(
                self.min_n, os.environ, "EVAL_DRIFT_MIN_N", incidents.IncidentConfig().min_n, int
            ),
        )
