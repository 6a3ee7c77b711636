"""The verdict rule on constructed data: a clear effect, no effect, a reversed effect, too few seeds, the gate."""
import math

import numpy as np
import pytest
from scipy import stats

from bnext_lib.verdicts import combine, compare, gate


def test_a_clear_effect_is_reproduced_with_its_interval():
    a, b = [90.1, 90.4, 89.9, 90.2], [88.0, 88.3, 87.9, 88.1]
    r = compare(a, b)
    assert r["verdict"] == "reproduced" and r["p_value"] < 0.05
    assert r["ci_low"] < r["delta"] < r["ci_high"] and r["ci_low"] > 0
    assert r["delta"] == pytest.approx(np.mean(a) - np.mean(b))
    # the same numbers as scipy's Welch test, halved for the one-sided alternative
    two_sided = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert r["p_value"] == pytest.approx(two_sided / 2)


def test_no_effect_is_inconclusive_and_the_interval_covers_zero():
    rng = np.random.default_rng(0)
    a, b = 90 + rng.normal(0, 0.5, 5), 90 + rng.normal(0, 0.5, 5)
    r = compare(a, b)
    assert r["verdict"] == "inconclusive" and r["ci_low"] < 0 < r["ci_high"]


def test_a_reversed_effect_is_contradicted():
    r = compare([88.0, 88.3, 87.9], [90.1, 90.4, 89.9])
    assert r["verdict"] == "contradicted" and r["p_value"] > 0.95 and r["p_opposite"] < 0.05


def test_lower_is_better_flips_the_direction():
    assert compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], lower=True)["verdict"] == "reproduced"
    assert compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])["verdict"] == "contradicted"


def test_too_few_seeds_is_inconclusive_however_large_the_effect():
    r = compare([99.0, 99.1], [10.0, 10.2])
    assert r["verdict"] == "inconclusive" and "fewer than 3 seeds" in r["text"]
    one = compare([99.0], [10.0, 10.1, 10.2])
    assert one["verdict"] == "inconclusive" and math.isnan(one["p_value"])


def test_constant_samples_do_not_break_the_test():
    assert compare([2.0] * 3, [1.0] * 3)["verdict"] == "reproduced"
    assert compare([1.0] * 3, [1.0] * 3)["verdict"] == "inconclusive"


def test_combine_needs_every_part():
    yes, no = compare([3, 3.1, 2.9], [1, 1.1, 0.9]), compare([1, 1.1, 0.9], [3, 3.1, 2.9])
    maybe = compare([1, 2, 3], [2, 1, 3])
    assert combine([yes, yes])["verdict"] == "reproduced"
    assert combine([yes, maybe])["verdict"] == "inconclusive"
    assert combine([yes, no])["verdict"] == "contradicted"


def test_a_failed_regime_check_means_not_tested():
    r = compare([90.1, 90.4, 89.9], [88.0, 88.3, 87.9])
    ok = {"check": "teacher top-1", "value": 94.0, "threshold": ">= 93.0", "passed": True}
    bad = {"check": "train-test gap", "value": 1.2, "threshold": ">= 3.0", "passed": False}
    assert gate(r, [ok])["verdict"] == "reproduced"
    gated = gate(r, [ok, bad])
    assert gated["verdict"] == "not tested" and "train-test gap" in gated["text"]
    assert gated["delta"] == r["delta"]  # the numbers stay for the reader
    assert gate(combine([r, r]), [bad])["verdict"] == "not tested"
