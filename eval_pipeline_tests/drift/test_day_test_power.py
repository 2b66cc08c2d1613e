"""bench.day_test_power: its tests are compared at equal size, and the likelihood-ratio
ceiling is the most powerful of them (Neyman-Pearson), as the docs' arithmetic relies on."""

from __future__ import annotations

from bench import day_test_power


def test_the_ceiling_is_the_most_powerful_and_the_step_is_found_more_often_than_not():
    power = day_test_power.powers(39, 0.8, "billing", 5e-3, null_sims=40_000, hit_sims=4_000)
    ceiling = power.pop("likelihood ratio (ceiling)")
    # Monte Carlo error of a power near 0.9 over 4,000 days is about 0.005.
    assert all(ceiling >= p - 0.02 for p in power.values()), (ceiling, power)
    assert power["difference of means"] > 0.5
    assert power["share of 5s"] < power["difference of means"]


def test_without_a_drop_each_test_fires_at_about_its_level():
    power = day_test_power.powers(39, 0.0, "billing", 0.02, null_sims=40_000, hit_sims=10_000)
    for name, p in power.items():
        if name == "likelihood ratio (ceiling)":
            continue  # with no alternative its statistic is constant
        # discrete statistics fire at or under their level; binomial sd at 10,000 is 0.0014
        assert p < 0.02 + 0.006, (name, p)
