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
    assert "regime not met: train-test gap = 1.20 (needs >= 3.0)" in gated["text"]
    design = {"check": "teachers' training images per image their student learns from", "value": 55.0,
              "threshold": "<= 1", "passed": False, "of": "the profile's design"}
    gated = gate(r, [ok, bad, design])  # a condition of the design: not testable there, whatever the runs
    assert gated["verdict"] == "not tested" and "train-test gap" not in gated["text"]
    assert gated["text"].endswith("not testable at this profile: teachers' training images per image their student "
                                  "learns from = 55.00 (needs <= 1)")


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


def test_holm_adjusts_the_claims_p_the_largest_of_their_parts_and_demotes_what_does_not_survive():
    """A claim of several comparisons stands on its weakest part (intersection-union): Holm adjusts that p."""
    from statsmodels.stats.multitest import multipletests

    from bnext_lib.verdicts import holm

    def claim(*ps, verdict="reproduced"):
        return {"verdict": verdict, "evidence": "e",
                "comparisons": [{"p_value": p, "p_opposite": 1 - p, "n_a": 3} for p in ps]}

    claims = [claim(0.01), claim(0.001, 0.03), claim(0.04), claim(0.2, verdict="inconclusive"),
              {"verdict": "not tested", "comparisons": [{"p_value": 0.001, "p_opposite": 0.999, "n_a": 3}]},
              {"verdict": "reproduced"}]
    out = holm(claims)
    assert [c["p_claim"] for c in out[:4]] == [0.01, 0.03, 0.04, 0.2]  # the second claim: its larger part
    # by hand: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, made monotone: 0.04, 0.09, 0.09, 0.2
    assert [c["p_holm"] for c in out[:4]] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert [c["p_holm"] for c in out[:4]] == pytest.approx(list(multipletests([0.01, 0.03, 0.04, 0.2],
                                                                              method="holm")[1]))
    assert [c["verdict"] for c in out] == ["reproduced", "inconclusive", "inconclusive", "inconclusive",
                                           "not tested", "reproduced"]
    assert "after Holm" in out[1]["evidence"]
    assert math.isnan(out[4]["p_holm"]) and math.isnan(out[5]["p_holm"])  # not tested; no comparison of runs


def test_a_contradiction_must_survive_its_own_correction():
    """Over many claims a single contradiction at two-sided p 0.02 is what chance gives: Holm over the claims' p
    of contradiction (the smallest part's two-sided p the other way, times its parts) demotes it."""
    from bnext_lib.verdicts import holm

    def claim(p_opposite, verdict, parts=1):
        return {"verdict": verdict, "evidence": "e",
                "comparisons": [{"p_value": 1 - p_opposite, "p_opposite": p_opposite, "n_a": 5}] * parts}

    weak = [claim(0.01, "contradicted")] + [claim(0.5, "inconclusive")] * 9  # two-sided 0.02, 10 claims
    out = holm(weak)
    assert out[0]["p_contra"] == pytest.approx(0.02) and out[0]["p_holm_contra"] == pytest.approx(0.2)
    assert out[0]["verdict"] == "inconclusive" and "does not survive" in out[0]["evidence"]
    strong = holm([claim(0.0001, "contradicted", parts=2)] + [claim(0.5, "inconclusive")] * 9)
    assert strong[0]["p_contra"] == pytest.approx(0.0004) and strong[0]["verdict"] == "contradicted"


def test_arms_that_share_their_seeds_are_compared_paired_by_seed():
    """Seeds move both arms together (each seed's subset, data order, initialisation): a consistent +0.3 under a
    seed spread of several points is invisible to Welch and plain to the paired test, whose p is scipy's
    ttest_rel; seeds in another order are aligned; arms on different seeds fall back to Welch."""
    from scipy import stats

    base = np.array([84.0, 87.5, 85.1, 89.0, 86.2])
    a, b = base + 0.3 + np.array([0.05, -0.04, 0.02, -0.03, 0.0]), base
    seeds = [0, 1, 2, 3, 4]
    welch = compare(a, b)
    paired = compare(a, b, seeds_a=seeds, seeds_b=seeds)
    assert not welch["paired"] and welch["verdict"] == "inconclusive"
    assert paired["paired"] and paired["verdict"] == "reproduced" and "paired by seed" in paired["text"]
    assert paired["p_value"] == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue)
    assert paired["p_improve"] == 1.0 and paired["boot_low"] > 0 and paired["ci_low"] > 0
    shuffled = compare(a, b[[4, 3, 2, 1, 0]], seeds_a=seeds, seeds_b=[4, 3, 2, 1, 0])
    assert shuffled["p_value"] == pytest.approx(paired["p_value"])
    assert not compare(a, b, seeds_a=seeds, seeds_b=[5, 6, 7, 8, 9])["paired"]
    assert paired["detectable"] < welch["detectable"]  # the pairing removes the seed spread


def test_equivalence_is_two_one_sided_tests_within_the_margin():
    """'Does not help' as equivalence: TOST's p is statsmodels' own; a clear difference beyond the margin is
    contradicted; too few seeds or too wide an interval is inconclusive."""
    from statsmodels.stats.weightstats import ttost_paired

    from bnext_lib.verdicts import equivalence

    seeds = list(range(6))
    b = np.array([84.0, 87.5, 85.1, 89.0, 86.2, 85.5])
    same = b + np.array([0.1, -0.1, 0.05, -0.05, 0.0, 0.02])
    r = equivalence(same, b, 0.5, seeds_a=seeds, seeds_b=seeds)
    assert r["verdict"] == "reproduced" and r["p_value"] == pytest.approx(ttost_paired(same, b, -0.5, 0.5)[0])
    worse = b - 2.0 + np.array([0.1, -0.1, 0.05, -0.05, 0.0, 0.02])
    assert equivalence(worse, b, 0.5, seeds_a=seeds, seeds_b=seeds)["verdict"] == "contradicted"
    assert equivalence(same[:2], b[:2], 0.5)["verdict"] == "inconclusive"
    with pytest.raises(ValueError, match="margin must be positive"):
        equivalence(same, b, 0.0)


def test_the_seeds_a_comparison_needs_come_from_a_power_analysis_at_the_holm_level():
    """Paired, one-sided, 80 % power at alpha / family; the pairing correlation shrinks the differences' spread."""
    from statsmodels.stats.power import TTestPower

    from bnext_lib.verdicts import seeds_needed

    n = seeds_needed(0.5, 0.4, rho=0.5, family=13)
    sd_diff = 0.4 * math.sqrt(2 * 0.5)
    exact = TTestPower().solve_power(effect_size=0.5 / sd_diff, alpha=0.05 / 13, power=0.8, alternative="larger")
    assert n == math.ceil(exact) and n > 5
    assert seeds_needed(0.5, 0.4, rho=0.9, family=13) < n < seeds_needed(0.5, 0.4, rho=0.0, family=13)
    assert seeds_needed(5.0, 0.1) == 5  # never fewer than five a side
    with pytest.raises(ValueError):
        seeds_needed(0.5, 0.4, rho=1.0)


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
