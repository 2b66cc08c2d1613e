"""Helpers for Dagster assets that loop over the days of a (possibly ranged) run.

A single-run backfill hands one run a range of days. Dagster attaches one output's metadata
to every partition of the range, so the per-day figures are logged as an observation per
day (the UI plots them per partition) and the materialization carries the day's figures only
when the run is for a single day.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg


def run_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in context.partition_keys]


def record_day(context: dg.AssetExecutionContext, day: dt.date, metadata: dict) -> None:
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key, partition=day.isoformat(), metadata=metadata
        )
    )


def result(
    days: list[dt.date],
    per_day: dict[dt.date, dict],
    check_results: list[dg.AssetCheckResult] | None = None,
) -> dg.MaterializeResult:
    if len(days) == 1:
        metadata = per_day.get(days[0], {})
    else:
        metadata = {
            "days_in_run": dg.MetadataValue.int(len(days)),
            "first_day": dg.MetadataValue.text(days[0].isoformat()),
            "last_day": dg.MetadataValue.text(days[-1].isoformat()),
            "note": dg.MetadataValue.text(
                "ranged run: per-day figures are in this asset's observations"
            ),
        }
    return dg.MaterializeResult(metadata=metadata, check_results=check_results or [])
