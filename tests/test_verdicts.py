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


def test_the_notebooks_verdicts_are_the_statistical_ones():
    """The notebooks' one import (bnext_lib.report) hands them these very functions."""
    from bnext_lib import report
    assert report.compare is compare and report.combine is combine and report.gate is gate
    r = compare([80.1, 80.9, 80.5], [78.2, 79.0, 78.6], "A", "B")
    assert r["verdict"] == "reproduced" and "Δ +1.90" in r["text"] and "n=3/3" in r["text"]


def test_contradicted_needs_the_whole_two_sided_interval_on_the_other_side():
    """A reversed effect significant one-sided but whose 95 % interval still covers 0 is inconclusive."""
    base = [0.0, 1.0, 2.0]  # sd 1, n 3: Welch's t(4) puts one-sided 5 % at 1.74 and two-sided 95 % at 2.27
    near = compare([x - 2.0 for x in base], base)
    assert near["p_opposite"] < 0.05 and near["ci_low"] < near["ci_high"] and near["ci_high"] > 0
    assert near["verdict"] == "inconclusive"
    far = compare([x - 2.5 for x in base], base)
    assert far["ci_high"] < 0 and far["verdict"] == "contradicted"
    assert compare(base, [x - 2.5 for x in base], lower=True)["verdict"] == "contradicted"


def test_a_claim_with_a_comparison_not_run_is_partly_tested():
    from bnext_lib.verdicts import cut

    yes = compare([3, 3.1, 2.9], [1, 1.1, 0.9])
    assert combine([yes, cut("A", "C", "C not trained")])["verdict"] == "partly tested"
    assert combine([compare([1, 1.1, 0.9], [3, 3.1, 2.9]), cut("A", "C", "x")])["verdict"] == "contradicted"
    assert combine([compare([1, 2, 3], [2, 1, 3]), cut("A", "C", "x")])["verdict"] == "inconclusive"
    assert combine([cut("A", "C", "x")])["verdict"] == "not tested"
    with pytest.raises(ValueError, match="primary must index"):
        combine([yes], primary=1)


def test_holm_adjusts_the_primaries_and_demotes_what_does_not_survive():
    from statsmodels.stats.multitest import multipletests

    from bnext_lib.verdicts import holm

    def claim(p, verdict="reproduced", primary=0):
        other = {"p_value": 0.001}
        comps = [other, {"p_value": p}] if primary else [{"p_value": p}, other]
        return {"verdict": verdict, "evidence": "e", "primary": primary, "comparisons": comps}

    claims = [claim(0.01), claim(0.03, primary=1), claim(0.04), claim(0.2, "inconclusive"),
              {"verdict": "not tested", "comparisons": [{"p_value": 0.001}]}, {"verdict": "reproduced"}]
    out = holm(claims)
    # by hand: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, made monotone: 0.04, 0.09, 0.09, 0.2
    assert [c["p_holm"] for c in out[:4]] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert [c["p_holm"] for c in out[:4]] == pytest.approx(list(multipletests([0.01, 0.03, 0.04, 0.2],
                                                                              method="holm")[1]))
    assert [c["verdict"] for c in out] == ["reproduced", "inconclusive", "inconclusive", "inconclusive",
                                           "not tested", "reproduced"]
    assert "after Holm" in out[1]["evidence"] and out[1]["p_primary"] == 0.03
    assert math.isnan(out[4]["p_holm"]) and math.isnan(out[5]["p_holm"])  # not tested; no comparison of runs


def test_the_detectable_effect_is_the_power_analysis_of_the_samples():
    from bnext_lib.verdicts import detectable_effect

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    normal = (stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) * math.sqrt(2 / 200) * pooled  # large-n approximation
    assert detectable_effect(a, b) == pytest.approx(normal, rel=0.01)
    assert detectable_effect(2 * a, 2 * b) == pytest.approx(2 * detectable_effect(a, b))
    few = detectable_effect([0, 1, 2], [0, 1, 2])  # sd 1, 3 a side: t(4) makes it larger than the normal's 2.03
    assert 2.3 < few < 2.7 and compare([0, 1, 2], [0, 1, 2])["detectable"] == pytest.approx(few)
    assert math.isnan(detectable_effect([1.0], [1.0, 2.0])) and detectable_effect([1.0] * 3, [2.0] * 3) == 0.0
