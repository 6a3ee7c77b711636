"""Verdicts on the paper's claims: a statistical test per comparison, a gate on the regime the claim needs, and
Holm's correction across claims.

A comparison "A is higher than B" (or lower) is judged from per-seed values of both sides. Where both sides ran at
the same seeds, the arms share each seed's training subset, data order and (for one architecture) initialisation,
so the test is **paired by seed** (:func:`scipy.stats.ttest_rel` on the per-seed differences, with a t interval, a
bootstrap interval, :func:`scipy.stats.bootstrap`, and the share of seeds where A is better); otherwise Welch's
t-test (:func:`scipy.stats.ttest_ind`, ``equal_var=False``, with the probability that a run of A beats one of B):

* **reproduced**: one-sided p < 0.05 in the claimed direction (the paper's claim is the alternative);
* **contradicted**: the two-sided 95 % confidence interval of the difference of means lies wholly on the other
  side of 0 (a stronger demand than the one-sided test in the claimed direction: saying the paper is wrong needs
  more than failing to show it right);
* **inconclusive**: neither, or fewer than :data:`MIN_SEEDS` values on a side whatever the values; the interval
  says how large an effect the data can still hide, and ``detectable`` the smallest true difference the comparison
  would find at 80 % power (one-sided, α = 0.05, the samples' pooled standard deviation; :mod:`statsmodels`);
* **not tested**: the regime the claim needs was measured and does not hold (:func:`gate`), so the data cannot
  show the claim either way.

A claim resting on several comparisons (:func:`combine`) is reproduced only when every comparison ran and is
reproduced (an intersection-union test: each at level 0.05, so the claim's p is the largest of its parts');
**partly tested** when those that ran are reproduced but a profile cut some (:func:`cut`); contradicted when any
comparison is (the claim's p of contradiction: the smallest two-sided p the other way, Bonferroni over its parts);
inconclusive otherwise; not tested when none ran. Across the claims of a report, :func:`holm` adjusts the claims'
p-values (Holm, :func:`statsmodels.stats.multitest.multipletests`) and, as a second family, their p-values of
contradiction: a claim stays reproduced (or partly tested), or contradicted, only if it survives the adjustment.

"Does not help" is a claim of equivalence, tested by two one-sided tests within a margin fixed beforehand
(:func:`equivalence`, statsmodels' ``ttost_paired``/``ttost_ind``). :func:`seeds_needed` is the power analysis that
gives a comparison its seeds: paired, one-sided, at the Holm level of a family of claims.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

__all__ = ["VERDICTS", "MIN_SEEDS", "ALPHA", "POWER", "compare", "cut", "combine", "gate", "holm", "claim_p", "detectable_shift",
           "detectable_effect", "equivalence", "seeds_needed", "paired_by_seed"]

VERDICTS = ("reproduced", "partly tested", "contradicted", "inconclusive", "not tested")
MIN_SEEDS = 3
ALPHA = 0.05
POWER = 0.8


def _welch(a, b, alternative: str):
    """Welch's test of mean(a) - mean(b) with scipy: (one-sided p in ``alternative``'s direction, the one-sided p
    the other way, two-sided 95 % CI low, high). Two constant samples give p = 0 or 1 and a zero-width interval
    (scipy leaves them undefined)."""
    import numpy as np
    from scipy import stats

    if np.var(a) == 0 and np.var(b) == 0:
        d = float(a.mean() - b.mean())
        towards, against = (d > 0, d < 0) if alternative == "greater" else (d < 0, d > 0)
        return (0.0 if towards else 1.0), (0.0 if against else 1.0), d, d
    p = float(stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return p, 1.0 - p, float(ci.low), float(ci.high)  # the t distribution is continuous: the two sides sum to 1


def _paired(d, alternative: str):
    """The paired t-test of the per-seed differences ``d``: (one-sided p in ``alternative``'s direction, the other
    way, two-sided 95 % CI low, high); constant differences give p = 0 or 1 and a zero-width interval."""
    import numpy as np
    from scipy import stats

    if np.var(d) == 0:
        m = float(d.mean())
        towards, against = (m > 0, m < 0) if alternative == "greater" else (m < 0, m > 0)
        return (0.0 if towards else 1.0), (0.0 if against else 1.0), m, m
    test = stats.ttest_1samp(d, 0.0, alternative=alternative)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    return float(test.pvalue), 1.0 - float(test.pvalue), float(ci.low), float(ci.high)


def _bootstrap(a, b, paired: bool) -> tuple[float, float]:
    """A percentile bootstrap 95 % interval of mean(A) - mean(B) (of the per-seed differences when paired); NaN
    below two values a side, the point itself when nothing varies."""
    import numpy as np
    from scipy import stats

    if min(len(a), len(b)) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(0)  # the same data give the same interval
    if paired:
        d = a - b
        if np.var(d) == 0:
            return float(d.mean()), float(d.mean())
        ci = stats.bootstrap((d,), np.mean, method="percentile", rng=rng).confidence_interval
    else:
        if np.var(a) == 0 and np.var(b) == 0:
            return float(a.mean() - b.mean()), float(a.mean() - b.mean())
        ci = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), method="percentile",
                             rng=rng).confidence_interval
    return float(ci.low), float(ci.high)


def _improvement(a, b, paired: bool, lower: bool) -> float:
    """The probability of improvement: the share of seeds where A beats B (paired), else of all (run of A, run of B)
    pairs (ties count half), "beats" in the claimed direction."""
    sign = -1.0 if lower else 1.0
    diff = sign * ((a - b) if paired else (a[:, None] - b[None, :]).ravel())
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def paired_by_seed(values_a, values_b, seeds_a, seeds_b):
    """``(a, b)`` aligned seed by seed when both sides ran at the same distinct seeds, else None (Welch)."""
    import numpy as np

    if seeds_a is None or seeds_b is None or len(seeds_a) != len(values_a) or len(seeds_b) != len(values_b):
        return None
    if len(set(seeds_a)) != len(seeds_a) or sorted(seeds_a) != sorted(seeds_b):
        return None
    where = {s: i for i, s in enumerate(seeds_b)}
    return np.asarray(values_a, float), np.asarray([values_b[where[s]] for s in seeds_a], float)


def compare(a: Sequence[float], b: Sequence[float], label_a: str = "A", label_b: str = "B", unit: str = "%",
            lower: bool = False, seeds_a: Sequence[int] | None = None, seeds_b: Sequence[int] | None = None) -> dict:
    """Verdict on "A is higher than B" (``lower=True``: "A is lower than B") from per-seed values; paired by seed
    when ``seeds_a`` and ``seeds_b`` name the same distinct seeds (:func:`paired_by_seed`), else Welch.

    Returns:
        ``verdict``, ``delta`` (mean(A) - mean(B)), ``ci_low``/``ci_high`` (its two-sided 95 % t interval),
        ``boot_low``/``boot_high`` (a bootstrap interval), ``p_improve`` (the probability of improvement),
        ``p_value`` (one-sided, claimed direction), ``p_opposite``, ``paired``, ``detectable``
        (:func:`detectable_effect`), ``n_a``/``n_b``, ``values_a``/``values_b`` (the per-seed values), ``test`` and
        a one-line ``text``.
    """
    import numpy as np

    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("compare needs at least one value on each side")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("compare needs finite values")
    aligned = paired_by_seed(a, b, seeds_a, seeds_b)
    paired = aligned is not None
    if paired:
        a, b = aligned
        seeds_b = list(seeds_a)
    delta = float(a.mean() - b.mean())
    claimed = "less" if lower else "greater"
    if min(len(a), len(b)) < 2:
        p, p_opp, lo, hi = math.nan, math.nan, math.nan, math.nan
    else:
        p, p_opp, lo, hi = _paired(a - b, claimed) if paired else _welch(a, b, claimed)
    against = hi < 0 if not lower else lo > 0  # the whole two-sided interval on the other side of 0
    if min(len(a), len(b)) < MIN_SEEDS or math.isnan(p):
        v = "inconclusive"
    elif p < ALPHA:
        v = "reproduced"
    elif against:
        v = "contradicted"
    else:
        v = "inconclusive"

    def fmt(x):
        return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}{unit}" if len(x) > 1 else f"{x.mean():.2f}{unit}"
    few = f"; fewer than {MIN_SEEDS} seeds" if min(len(a), len(b)) < MIN_SEEDS else ""
    ci = "CI n/a" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
    boot_low, boot_high = _bootstrap(a, b, paired)
    improve = _improvement(a, b, paired, lower)
    how = "paired by seed" if paired else "Welch"
    text = (f"{label_a} {fmt(a)} vs {label_b} {fmt(b)}: Δ {delta:+.2f} {ci}, "
            f"p = {_p(p)} ({how}, n={len(a)}/{len(b)}{few}; P(better) {improve:.2f})")
    out = {"verdict": v, "delta": delta, "ci_low": lo, "ci_high": hi, "boot_low": boot_low, "boot_high": boot_high,
           "p_value": p, "p_opposite": p_opp, "p_improve": improve, "paired": paired,
           "detectable": detectable_effect(a, b, paired=paired), "n_a": len(a), "n_b": len(b),
           "values_a": a.tolist(), "values_b": b.tolist(),
           "comparison": f"{label_a} {'<' if lower else '>'} {label_b}",
           "test": "paired t-test by seed, one-sided" if paired else "Welch t-test, one-sided", "text": text}
    if seeds_a is not None and seeds_b is not None:
        out.update(seeds_a=list(seeds_a), seeds_b=list(seeds_b))
    return out


def detectable_effect(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA, power: float = POWER,
                      paired: bool = False) -> float:
    """The smallest true difference of means (in the values' unit) a one-sided test at ``alpha`` finds with
    probability ``power`` at these sample sizes, taking the samples' standard deviation as the truth: of the
    per-seed differences when ``paired`` (:class:`statsmodels.stats.power.TTestPower`), else pooled
    (:class:`~statsmodels.stats.power.TTestIndPower`). NaN with fewer than 2 values a side; 0 when nothing varies."""
    import numpy as np
    from statsmodels.stats.power import TTestIndPower

    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if min(len(a), len(b)) < 2:
        return math.nan
    if paired:
        return detectable_shift(len(a), float((a - b).std(ddof=1)), alpha, power)
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    if pooled == 0:
        return 0.0
    d = TTestIndPower().solve_power(effect_size=None, nobs1=len(a), ratio=len(b) / len(a), alpha=alpha,
                                    power=power, alternative="larger")
    return float(d) * pooled


def detectable_shift(n: int, sd_diff: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean of ``n`` per-seed differences whose standard deviation is ``sd_diff`` that a one-sided
    paired t-test at ``alpha`` finds with probability ``power`` (:class:`statsmodels.stats.power.TTestPower`): the
    detectable effect after the fact (:func:`detectable_effect`) and in the plan (:mod:`bnext_lib.claims`, where
    ``sd_diff`` = σ √(2(1 − ρ))). NaN below two seeds (one detects nothing); 0 when nothing varies."""
    from statsmodels.stats.power import TTestPower

    if n < 2:
        return math.nan
    if sd_diff == 0:
        return 0.0
    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="larger")
    return float(d) * sd_diff


def cut(label_a: str, label_b: str, why: str, lower: bool = False) -> dict:
    """The place of a comparison that was not run (``why``: e.g. which variant the profile cut): not tested."""
    nan = math.nan
    return {"verdict": "not tested", "cut": True, "delta": nan, "ci_low": nan, "ci_high": nan, "p_value": nan,
            "p_opposite": nan, "detectable": nan, "n_a": None, "n_b": None,
            "comparison": f"{label_a} {'<' if lower else '>'} {label_b} (not run: {why})", "test": "not run",
            "text": f"{label_a} vs {label_b}: {why}"}


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def combine(parts: Iterable[dict], primary: int = 0) -> dict:
    """One verdict from a claim's comparisons (see the module's rule): every part reproduced -> reproduced; those
    that ran reproduced but some cut -> partly tested; any part contradicted -> contradicted; any part not tested
    (a failed gate) -> not tested; else inconclusive. ``primary`` indexes the comparison that stands for the claim
    in :func:`holm` (a cut primary leaves the claim out of the correction; it is partly tested at best)."""
    parts = list(parts)
    if not parts:
        raise ValueError("combine needs at least one comparison")
    if not 0 <= primary < len(parts):
        raise ValueError(f"primary must index one of the {len(parts)} comparisons, got {primary}")
    ran = [p for p in parts if not p.get("cut")]
    vs = {p["verdict"] for p in ran} or {"not tested"}
    if "not tested" in vs:
        v = "not tested"
    elif "contradicted" in vs:
        v = "contradicted"
    elif vs == {"reproduced"}:
        v = "reproduced" if len(ran) == len(parts) else "partly tested"
    else:
        v = "inconclusive"
    return {"verdict": v, "parts": parts, "primary": primary,
            "text": "; ".join(f"{p['text']} [{p['verdict']}]" for p in parts)}


def claim_p(comparisons: Sequence[Mapping]) -> tuple[float, float]:
    """A claim's (p, p of contradiction) from the comparisons that ran (``n_a`` set): the largest one-sided p in
    the claimed direction (every part must hold: intersection-union), and the smallest two-sided p the other way
    times the number of parts (any part may contradict: Bonferroni). NaN where a p is missing."""
    ran = [c for c in comparisons if c.get("n_a") is not None]
    ps = [c.get("p_value") for c in ran]
    opp = [c.get("p_opposite") for c in ran]
    if not ran or any(v is None or math.isnan(v) for v in ps + opp):
        return math.nan, math.nan
    return float(max(ps)), float(min(1.0, 2 * len(ran) * min(opp)))


def holm(claims: Sequence[Mapping], alpha: float = ALPHA) -> list[dict]:
    """Holm's step-down adjustment over the claims (:func:`claim_p`: one p per claim, its largest part's), and a
    second over their p-values of contradiction. Returns the claims, each with ``p_claim``, ``p_holm``,
    ``p_contra`` and ``p_holm_contra`` (NaN where the claim is not tested, or no comparison of runs, which keeps its
    verdict); a claim reproduced or partly tested whose adjusted p reaches ``alpha`` becomes inconclusive, and so
    does a contradicted one whose adjusted p of contradiction does, each saying so in its ``evidence``."""
    from statsmodels.stats.multitest import multipletests

    pairs = [claim_p(c.get("comparisons") or []) if c["verdict"] != "not tested" else (math.nan, math.nan)
             for c in claims]

    def adjust(ps: list[float]) -> dict[int, float]:
        tested = [i for i, p in enumerate(ps) if not math.isnan(p)]
        if not tested:
            return {}
        return dict(zip(tested, map(float, multipletests([ps[i] for i in tested], alpha=alpha, method="holm")[1])))

    adjusted, contra = adjust([p for p, _ in pairs]), adjust([q for _, q in pairs])
    out = []
    for i, c in enumerate(claims):
        c = dict(c, p_claim=pairs[i][0], p_holm=adjusted.get(i, math.nan), p_contra=pairs[i][1],
                 p_holm_contra=contra.get(i, math.nan))
        if c["verdict"] in ("reproduced", "partly tested") and i in adjusted and not c["p_holm"] < alpha:
            c["verdict"] = "inconclusive"
            c["evidence"] = (f"{c.get('evidence', '')} — not significant after Holm's correction over "
                             f"{len(adjusted)} claims (adjusted p = {_p(c['p_holm'])})")
        elif c["verdict"] == "contradicted" and i in contra and not c["p_holm_contra"] < alpha:
            c["verdict"] = "inconclusive"
            c["evidence"] = (f"{c.get('evidence', '')} — the contradiction does not survive Holm's correction over "
                             f"{len(contra)} claims (adjusted p = {_p(c['p_holm_contra'])})")
        out.append(c)
    return out


def equivalence(a: Sequence[float], b: Sequence[float], margin: float, label_a: str = "A", label_b: str = "B",
                unit: str = "%", seeds_a: Sequence[int] | None = None, seeds_b: Sequence[int] | None = None) -> dict:
    """Verdict on "A and B differ by less than ``margin``" ("does not help", "changes nothing"), by two one-sided
    tests (TOST; statsmodels' :func:`~statsmodels.stats.weightstats.ttost_paired` when paired by seed, else
    :func:`~statsmodels.stats.weightstats.ttost_ind` with unequal variances): **reproduced** when both reject at
    ``ALPHA`` (the 90 % interval of the difference lies within ±margin), **contradicted** when the two-sided 95 %
    interval lies wholly outside it, **inconclusive** otherwise. ``p_value`` is TOST's p (the larger one-sided p)."""
    import numpy as np
    from scipy import stats
    from statsmodels.stats.weightstats import ttost_ind, ttost_paired

    if not margin > 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin}")
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    aligned = paired_by_seed(a, b, seeds_a, seeds_b)
    paired = aligned is not None
    if paired:
        a, b = aligned
    n = min(len(a), len(b))
    delta = float(a.mean() - b.mean())
    if n < 2 or (np.var(a - b) == 0 if paired else np.var(a) == np.var(b) == 0):
        p, lo, hi = math.nan, math.nan, math.nan
    elif paired:
        p = float(ttost_paired(a, b, -margin, margin)[0])
        ci = stats.ttest_1samp(a - b, 0.0).confidence_interval(0.95)
        lo, hi = float(ci.low), float(ci.high)
    else:
        p = float(ttost_ind(a, b, -margin, margin, usevar="unequal")[0])
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        lo, hi = float(ci.low), float(ci.high)
    outside = lo > margin or hi < -margin
    v = ("inconclusive" if n < MIN_SEEDS or math.isnan(p) else "reproduced" if p < ALPHA
         else "contradicted" if outside else "inconclusive")
    ci = "CI n/a" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
    text = (f"{label_a} {a.mean():.2f}{unit} vs {label_b} {b.mean():.2f}{unit}: Δ {delta:+.2f} {ci} within "
            f"±{margin:g}? TOST p = {_p(p)} ({'paired by seed' if paired else 'Welch'}, n={len(a)}/{len(b)})")
    return {"verdict": v, "delta": delta, "ci_low": lo, "ci_high": hi, "p_value": p,
            "p_opposite": math.nan if math.isnan(p) else (0.0 if outside else 1.0), "paired": paired,
            "margin": margin, "n_a": len(a), "n_b": len(b), "values_a": a.tolist(), "values_b": b.tolist(),
            "comparison": f"|{label_a} - {label_b}| < {margin:g}", "test": "TOST equivalence", "text": text}


def seeds_needed(effect: float, sd: float, rho: float = 0.0, family: int = 1, alpha: float = ALPHA,
                 power: float = POWER, minimum: int = 5) -> int:
    """Seeds a side for a paired, one-sided t-test to find a true difference ``effect`` with probability ``power``
    at Holm's strictest level, ``alpha / family`` (a family of ``family`` claims), when each arm's per-seed
    standard deviation is ``sd`` and the two arms' per-seed values correlate by ``rho`` (the pairing: the
    differences' deviation is ``sd * sqrt(2 (1 - rho))``); never fewer than ``minimum``
    (:class:`statsmodels.stats.power.TTestPower`)."""
    from statsmodels.stats.power import TTestPower

    if not (effect > 0 and sd > 0 and -1 <= rho < 1 and family >= 1):
        raise ValueError(f"need effect > 0, sd > 0, -1 <= rho < 1, family >= 1; got {effect}, {sd}, {rho}, {family}")
    size, level = effect / (sd * math.sqrt(2 * (1 - rho))), alpha / family
    if TTestPower().power(effect_size=size, nobs=minimum, alpha=level, alternative="larger") >= power:
        return minimum  # (the solver finds no root below two seeds for a large effect)
    n = TTestPower().solve_power(effect_size=size, nobs=None, alpha=level, power=power, alternative="larger")
    if math.isnan(n):
        raise ValueError(f"no number of seeds reaches {power:.0%} power for an effect of {effect} at sd {sd}")
    return max(minimum, math.ceil(float(n)))


def gate(result: Mapping, checks: Sequence[Mapping]) -> dict:
    """``result`` unchanged when every regime check passed, else the same numbers with verdict **not tested** and
    the failed checks named: "not testable at this profile" and the failed conditions of its design where there
    are any (``of``: "the profile's design", :meth:`bnext_lib.record.Record.regime_check`), else "regime not met"
    and the failed measurements. A check is a mapping with ``check``, ``value``, ``threshold`` and ``passed``."""
    failed = [c for c in checks if not c["passed"]]
    if not failed:
        return dict(result)
    design = [c for c in failed if c.get("of") == "the profile's design"]
    why = ", ".join(f"{c['check']} = {c['value']:.2f} (needs {c['threshold']})" for c in design or failed)
    # a condition of the profile's design fails whatever its runs measure: the claim cannot be tested there
    lead = "not testable at this profile" if design else "regime not met"
    out = dict(result, verdict="not tested", text=f"{result['text']} — {lead}: {why}")
    if "parts" in out:
        out["parts"] = [dict(p, verdict="not tested") for p in out["parts"]]
    return out
