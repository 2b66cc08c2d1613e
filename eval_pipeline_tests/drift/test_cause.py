"""Cause attribution on constructed traffic: a real cause, none, and a mix shift."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from eval_pipeline.core.drift.cause import attribute

REF_DAYS = [dt.date(2026, 5, 1) + dt.timedelta(days=i) for i in range(7)]
CUR_DAYS = [dt.date(2026, 5, 8) + dt.timedelta(days=i) for i in range(3)]
GOOD = [5] * 9 + [4] * 7 + [3] * 3 + [2]  # mean 4.15
BAD = [1] * 6 + [2] * 5 + [3] * 4 + [4] * 3 + [5] * 2  # mean 2.5
OTHER = [5] * 6 + [4] * 8 + [3] * 5 + [2]  # mean 4.0


def rows(days, scores, **dims) -> pd.DataFrame:
    out = []
    for d in days:
        for s in scores:
            out.append({"day": d, "score": float(s), **dims})
    return pd.DataFrame(out)


def test_a_new_prompt_version_with_lower_scores_is_named():
    ref = rows(REF_DAYS, GOOD, prompt_version="v1", model="m")
    cur = pd.concat(
        [
            rows(CUR_DAYS, GOOD, prompt_version="v1", model="m"),
            rows(CUR_DAYS, BAD[:10], prompt_version="v2", model="m"),
        ]  # fmt: skip
    )
    cause = attribute(ref, cur, ["prompt_version", "model"], where="billing")
    assert cause.key == "prompt_version=v2"
    f = cause.finding
    assert f.share_ref == 0 and f.share_cur == pytest.approx(1 / 3)
    assert f.compared_with == "other values on the same days"
    assert f.within_share == pytest.approx(1.0, abs=0.05)  # all of the drop: v1 did not move
    assert "prompt_version v2: 33% (new) of billing traffic since 2026-05-08" in cause.text
    assert "explains" in cause.text and "p=" in cause.text


def test_a_whole_segment_drop_names_no_dimension():
    # Everything got worse the same way: the model (all of the traffic before and after)
    # and the channel (both values dropped alike) separate nothing.
    ref = pd.concat([rows(REF_DAYS, GOOD, model="m", channel=c) for c in ("web", "app")])
    cur = pd.concat([rows(CUR_DAYS, BAD, model="m", channel=c) for c in ("web", "app")])
    cause = attribute(ref, cur, ["model", "channel"])
    assert cause.key is None
    assert cause.text.startswith("no single dimension explains it")


def test_a_traffic_mix_shift_with_no_quality_change_is_not_a_cause():
    # Model "small" was always a bit worse; its share doubles, its scores do not change.
    ref = pd.concat([rows(REF_DAYS, GOOD * 3, model="large"), rows(REF_DAYS, OTHER, model="small")])
    cur = pd.concat([rows(CUR_DAYS, GOOD, model="large"), rows(CUR_DAYS, OTHER, model="small")])
    cause = attribute(ref, cur, ["model"])
    assert cause.drop > 0  # the mean did move, by mix alone
    assert cause.key is None
    assert cause.mix["model"] == pytest.approx(cause.drop)  # the mix term is the whole drop


def test_noise_is_rarely_named_after_multiple_testing():
    # Every value dropped alike (0.2 points): no value is the cause. Holm over the eight
    # values keeps the share of runs that name one near alpha (5%), not 8 x 5%.
    named = 0
    runs = 100
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        ref = pd.DataFrame({"day": REF_DAYS[0], "score": rng.choice(GOOD, 400).astype(float),
                            "k": rng.choice(list("abcdefgh"), 400)})  # fmt: skip
        cur = pd.DataFrame({"day": CUR_DAYS[0],
                            "score": rng.choice(GOOD, 200).astype(float) - 0.2,
                            "k": rng.choice(list("abcdefgh"), 200)})  # fmt: skip
        named += attribute(ref, cur, ["k"]).key is not None
    assert named / runs <= 0.08, named


def test_too_little_data_says_so():
    cause = attribute(rows(REF_DAYS[:1], [5, 4]), rows(CUR_DAYS[:1], [1]), ["model"])
    assert cause.key is None and "not enough" in cause.text
