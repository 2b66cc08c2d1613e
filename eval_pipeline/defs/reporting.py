"""Helpers for Dagster assets that loop over the days of a (possibly ranged) run.

A single-run backfill hands one run a range of days, and Dagster attaches the one output's
metadata to every partition of the range. So for a ranged run the asset first yields its
MaterializeResult (a summary of the range, plus check results), then one
AssetMaterialization per day with that day's figures: the latest materialization of each
partition carries its own numbers, and the UI's plots show them day by day. A single-day
run (the daily schedule) yields just one MaterializeResult with the day's figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg


def run_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in context.partition_keys]


def materialize_days(
    context: dg.AssetExecutionContext,
    days: list[dt.date],
    per_day: dict[dt.date, dict],
    check_results: list[dg.AssetCheckResult] | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
    if len(days) == 1:
        yield dg.MaterializeResult(
            metadata=per_day.get(days[0], {}), check_results=check_results or []
        )
        return
    yield dg.MaterializeResult(
        metadata={
            "days_in_run": dg.MetadataValue.int(len(days)),
            "first_day": dg.MetadataValue.text(days[0].isoformat()),
            "last_day": dg.MetadataValue.text(days[-1].isoformat()),
        },
        check_results=check_results or [],
    )
    for day in days:
        yield dg.AssetMaterialization(
            asset_key=context.asset_key, partition=day.isoformat(), metadata=per_day.get(day, {})
        )


def plot_float(value) -> dg.FloatMetadataValue:
    """A float for the UI's plots: a missing figure is NaN (a gap), never a fake zero; numpy
    scalars become plain floats (Dagster cannot serialise them)."""
    return dg.MetadataValue.float(float("nan") if value is None or value != value else float(value))
