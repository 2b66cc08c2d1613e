"""Budgeted allocation: Neyman shares, floors, caps, pooling, risk oversampling, the
same-day follow-up, reproducibility."""

from __future__ import annotations

import pandas as pd
import pytest

from eval_pipeline.core.drift.budget_sampling import (
    BudgetedSamplingConfig,
    follow_up,
    plan_budgeted,
    risk_stratum,
)
from eval_pipeline.core.drift.sampling import (
    OTHER_SEGMENTS,
    equal_power_allocate,
    neyman_allocate,
    split_risk,
    watch_set,
    watch_weights,
    watched_allocate,
)


def population(sizes: dict[str, int], risk: dict[str, int] | None = None) -> pd.DataFrame:
    risk = risk or {}
    rows = []
    for seg, n in sizes.items():
        for i in range(n):
            rows.append((f"{seg}-{i:05d}", seg, i < risk.get(seg, 0)))
    return pd.DataFrame(rows, columns=["trace_id", "segment", "risk"])


def test_neyman_shares_follow_traffic_times_spread():
    # a: 900 x 1, b: 90 x 2; c is held at its floor, the other 90 split 900:180.
    alloc = neyman_allocate({"a": 900, "b": 90, "c": 10}, {"a": 1, "b": 2, "c": 1}, 100, 10)
    assert alloc == {"a": 75, "b": 15, "c": 10}
    # Equal spreads: proportional to traffic above the floors.
    assert neyman_allocate({"a": 900, "b": 90, "c": 10}, {}, 100, 10) == {"a": 80, "b": 10, "c": 10}


def test_floors_protect_small_segments_and_shrink_to_fit():
    alloc = neyman_allocate({"big": 10_000, "tiny": 40}, {"big": 1, "tiny": 1}, 60, 10)
    assert alloc["tiny"] == 10 and sum(alloc.values()) == 60
    alloc = neyman_allocate({s: 100 for s in "abcdefghij"}, {}, 50, 10)
    assert set(alloc.values()) == {5}  # ten floors of 10 cannot fit in 50


def test_caps_never_exceed_a_segment_and_the_total_is_hard():
    alloc = neyman_allocate({"a": 3, "b": 1000}, {"a": 5.0, "b": 0.1}, 50, 2)
    assert alloc["a"] == 3 and alloc["b"] == 47
    assert neyman_allocate({"a": 3, "b": 4}, {}, 50, 2) == {"a": 3, "b": 4}
    for total in (0, 1, 7, 33):
        assert (
            sum(neyman_allocate({"a": 50, "b": 20, "c": 5}, {"a": 2}, total, 3).values()) == total
        )


def test_a_moved_signal_raises_a_segments_share():
    base = neyman_allocate({"a": 500, "b": 500}, {}, 40, 5)
    boosted = neyman_allocate({"a": 500, "b": 500}, {}, 40, 5, boost={"b": 2.0})
    assert base == {"a": 20, "b": 20}
    assert boosted["b"] > boosted["a"] and sum(boosted.values()) == 40


def test_segments_beyond_the_cap_are_pooled():
    sizes = {"s1": 400, "s2": 300, "s3": 20, "s4": 10, "s5": 5}
    plan = plan_budgeted(population(sizes), BudgetedSamplingConfig(calls=40, reserve_fraction=0,
                                                                   max_segments=2))  # fmt: skip
    assert set(plan.allocation) == {"s1", "s2", OTHER_SEGMENTS}
    rows = plan.rows()
    assert set(rows["segment"]) == {"s1", "s2", OTHER_SEGMENTS}
    assert plan.stratum_size[OTHER_SEGMENTS] == 35
    assert len(rows) == 40 and plan.notes


def test_risk_traces_are_oversampled_and_weighted_back():
    assert split_risk(40, risk=100, base=900, oversample=3.0) == (10, 30)
    assert split_risk(40, risk=100, base=900, oversample=1.0) == (4, 36)  # proportional
    assert split_risk(40, risk=20, base=25, oversample=3.0) == (20, 20)  # the slice ran out
    plan = plan_budgeted(
        population({"billing": 1000}, risk={"billing": 100}),
        BudgetedSamplingConfig(calls=40, reserve_fraction=0, floor_per_segment=0,
                               risk_oversample=3.0),
    )  # fmt: skip
    rows = plan.rows()
    risky = rows[rows["stratum"] == risk_stratum("billing")]
    assert len(risky) == 10  # 25% of the sample from 10% of the traffic
    weights = rows["stratum_size"] / rows["stratum_sample"]
    assert set(weights.round(6)) == {10.0, 30.0}
    assert (rows["stratum_size"] / rows["stratum_sample"]).sum() == pytest.approx(1000)


def test_the_sample_is_reproducible_and_content_ordered():
    pop = population({"a": 300, "b": 100}, risk={"a": 30})
    cfg = BudgetedSamplingConfig(calls=50, reserve_fraction=0)
    first = set(plan_budgeted(pop, cfg).rows()["trace_id"])
    shuffled = pop.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert set(plan_budgeted(shuffled, cfg).rows()["trace_id"]) == first
    other = BudgetedSamplingConfig(calls=50, reserve_fraction=0, seed="another")
    assert set(plan_budgeted(pop, other).rows()["trace_id"]) != first


def test_follow_up_spends_the_reserve_on_suspects_only_and_keeps_prefixes():
    pop = population({"a": 300, "b": 300, "c": 300}, risk={"b": 30})
    cfg = BudgetedSamplingConfig(calls=50, reserve_fraction=0.4)
    plan = plan_budgeted(pop, cfg)
    stage1 = plan.rows()
    assert len(stage1) == cfg.stage1_calls == 30
    got = follow_up(plan, ["b"], cfg.reserve, cfg.risk_oversample)
    rows = plan.rows()
    assert got == {"b": 20} and len(rows) == 50
    assert set(rows[rows["stage"] == 2]["segment"]) == {"b"}
    assert set(stage1["trace_id"]) <= set(rows["trace_id"])
    # Each stratum's draw is still the first k of its content order: a simple random sample.
    for stratum, ids in plan.ordered.items():
        assert set(rows[rows["stratum"] == stratum]["trace_id"]) == set(
            ids[: plan.drawn.get(stratum, 0)]
        )
    # A segment with little left takes what it has; the reserve is a cap.
    small = plan_budgeted(
        population({"a": 12, "b": 300}), BudgetedSamplingConfig(calls=30, reserve_fraction=0.5)
    )
    assert small.allocation == {"a": 7, "b": 8}
    assert follow_up(small, ["a", "b"], 15, 3.0) == {"a": 5, "b": 10}
    assert follow_up(small, [], 15, 3.0) == {}


def test_watched_segments_get_the_calls_above_the_floors_evenly():
    counts = {"big": 1000, "mid": 400, "tiny": 40}
    alloc = watched_allocate(counts, {}, 60, 8, {"tiny"})
    # tiny is capped at its traffic; the 4 calls it cannot take go by Neyman to the rest.
    assert alloc == {"big": 11, "mid": 9, "tiny": 40}
    alloc = watched_allocate(counts, {}, 60, 8, {"tiny", "mid"})
    assert alloc["big"] == 8 and alloc["mid"] + alloc["tiny"] == 52
    assert abs(alloc["mid"] - alloc["tiny"]) <= 1  # even, not by traffic
    # What a capped watched segment cannot take goes by Neyman to the others.
    alloc = watched_allocate({"big": 1000, "mid": 400, "tiny": 12}, {}, 60, 8, {"tiny"})
    assert alloc["tiny"] == 12 and sum(alloc.values()) == 60 and alloc["big"] > alloc["mid"]
    # No watched segment present: plain Neyman.
    assert watched_allocate(counts, {}, 60, 8, {"gone"}) == neyman_allocate(counts, {}, 60, 8)


def test_watched_calls_split_by_cusum_when_given_weights():
    counts = {"big": 1000, "mid": 400, "small": 400, "tiny": 40}
    # 80 calls, floors 8 each: 48 above the floors, split 3:1 by CUSUM.
    alloc = watched_allocate(counts, {}, 80, 8, {"mid": 3.0, "small": 1.0})
    assert alloc == {"big": 8, "mid": 44, "small": 20, "tiny": 8}
    # Equal weights are the even split.
    even = watched_allocate(counts, {}, 80, 8, {"mid", "small"})
    assert watched_allocate(counts, {}, 80, 8, {"mid": 2.0, "small": 2.0}) == even
    # A capped heavy segment's surplus goes to the other watched one, then by Neyman.
    alloc = watched_allocate(counts, {}, 80, 8, {"tiny": 9.0, "small": 1.0})
    assert alloc["tiny"] == 40 and sum(alloc.values()) == 80
    assert alloc["small"] == 80 - 40 - 16
    alloc = watched_allocate({"big": 1000, "tiny": 12}, {}, 60, 8, {"tiny": 5.0})
    assert alloc == {"big": 48, "tiny": 12}
    # Weights only of absent segments: plain Neyman.
    assert watched_allocate(counts, {}, 80, 8, {"gone": 4.0}) == neyman_allocate(counts, {}, 80, 8)


def test_a_watch_floor_is_paid_by_the_other_floors_down_to_keep():
    counts = {"a": 400, "b": 400, "c": 400, "d": 400, "e": 400, "tiny": 40}
    assert watched_allocate(counts, {}, 66, 10, {"tiny"})["tiny"] == 16
    alloc = watched_allocate(counts, {}, 66, 10, {"tiny"}, watch_floor=24, keep=8)
    assert alloc["tiny"] == 24 and sum(alloc.values()) == 66
    assert min(alloc[s] for s in "abcde") >= 8
    # The others never go below keep: the watched floor gives way instead.
    alloc = watched_allocate(counts, {}, 66, 10, {"tiny", "a"}, watch_floor=30, keep=8)
    assert sum(alloc.values()) == 66 and min(alloc[s] for s in "bcde") == 8
    assert abs(alloc["a"] - alloc["tiny"]) <= 1
    # A watch floor at or under the floor changes nothing.
    assert watched_allocate(counts, {}, 66, 10, {"tiny"}, watch_floor=10, keep=8) == (
        watched_allocate(counts, {}, 66, 10, {"tiny"})
    )


def test_watch_weights_are_the_cusum_with_the_line_as_the_least():
    rows = [
        ("a", "healthy", 0.4, None),
        ("b", "healthy", 2.5, None),
        ("c", "degraded", None, "inc-1"),
        ("e", "resolved", None, "inc-2"),
    ]
    assert watch_weights(rows, 1.0) == {"b": 2.5, "c": 1.0}
    assert watch_set(rows, 1.0) == set(watch_weights(rows, 1.0))


def test_watch_set_is_open_incidents_and_cusum_at_the_line():
    rows = [
        ("a", "healthy", 0.4, None),
        ("b", "healthy", 1.0, None),
        ("c", "degraded", None, "inc-1"),
        ("d", "recovering", None, "inc-1"),
        ("e", "resolved", None, "inc-2"),
        ("f", "no_verdict", None, "inc-3"),  # an open incident with a thin day
        ("g", "no_verdict", None, None),
    ]
    assert watch_set(rows, 1.0) == {"b", "c", "d", "f"}


def test_the_plan_uses_the_watch_only_when_configured():
    pop = population({"big": 1000, "tiny": 40})
    off = plan_budgeted(pop, BudgetedSamplingConfig(calls=30, reserve_fraction=0.0,
                                                    floor_per_segment=6, watch_cusum=None),
                        watch={"tiny"})  # fmt: skip
    on = plan_budgeted(
        pop,
        BudgetedSamplingConfig(calls=30, reserve_fraction=0.0, floor_per_segment=6, watch_cusum=1),
        watch={"tiny"},
    )
    assert off.allocation == {"big": 24, "tiny": 6}
    assert on.allocation == {"big": 6, "tiny": 24}


def test_equal_power_gives_each_segment_the_same_standard_error_whatever_its_traffic():
    counts, sd = {"a": 900, "b": 90, "c": 40}, {"a": 1.0, "b": 1.0, "c": 2.0}
    alloc = equal_power_allocate(counts, sd, 60, 0)
    # n proportional to sd²: 1:1:4 of 60, so sd/sqrt(n) is the same in every segment.
    assert alloc == {"a": 10, "b": 10, "c": 40}
    se = {s: sd[s] / alloc[s] ** 0.5 for s in alloc}
    assert max(se.values()) == pytest.approx(min(se.values()))
    # Neyman on the same input follows traffic instead.
    assert neyman_allocate(counts, sd, 60, 0)["a"] > 40


def test_equal_power_keeps_floors_caps_boost_and_the_hard_total():
    assert equal_power_allocate({"a": 900, "b": 5}, {}, 40, 2) == {"a": 35, "b": 5}
    alloc = equal_power_allocate({"a": 900, "b": 900, "c": 900}, {"c": 0.1}, 30, 6)
    assert alloc["c"] == 6 and alloc["a"] == alloc["b"] == 12
    assert equal_power_allocate({"a": 500, "b": 500}, {}, 40, 5, {"b": 3.0}) == {"a": 10, "b": 30}
    for total in (0, 1, 7, 33):
        assert sum(equal_power_allocate({"a": 50, "b": 20, "c": 5}, {}, total, 3).values()) == total


def test_the_allocation_option_reaches_the_plan_and_unknown_names_are_refused():
    pop = population({"big": 1000, "mid": 200, "tiny": 40})
    cfg = dict(calls=60, reserve_fraction=0.0, floor_per_segment=10, watch_cusum=None)
    neyman = plan_budgeted(pop, BudgetedSamplingConfig(**cfg))
    equal = plan_budgeted(pop, BudgetedSamplingConfig(**cfg, allocation="equal_power"))
    assert neyman.allocation["big"] > neyman.allocation["tiny"] == 10
    assert equal.allocation == {"big": 20, "mid": 20, "tiny": 20}
    # With a watched segment, what the watched cannot take goes by the same rule.
    w = watched_allocate({"big": 1000, "mid": 200, "tiny": 12}, {}, 60, 10, {"tiny"},
                         allocation="equal_power")  # fmt: skip
    assert w == {"big": 24, "mid": 24, "tiny": 12}
    with pytest.raises(ValueError, match="allocation"):
        BudgetedSamplingConfig(allocation="proportional")
    with pytest.raises(ValueError, match="allocation"):
        watched_allocate({"a": 10}, {}, 5, 1, set(), allocation="x")
