"""Verdicts on the paper's claims: a statistical test per comparison, a gate on the regime the claim needs, and
Holm's correction across claims.

A comparison "A is higher than B" (or lower) is judged from per-seed values of both sides with Welch's t-test
(:func:`scipy.stats.ttest_ind`, ``equal_var=False``):

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
reproduced (an intersection-union test: each at level 0.05); **partly tested** when those that ran are reproduced
but a profile cut some (:func:`cut`); contradicted when any comparison is; inconclusive otherwise; not tested when
none ran. One comparison per claim is its *primary* one: across the claims of a report, :func:`holm` adjusts the
primaries' one-sided p-values (Holm, :func:`statsmodels.stats.multitest.multipletests`), and a claim stays
reproduced (or partly tested) only if its primary survives the adjustment.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

__all__ = ["VERDICTS", "MIN_SEEDS", "ALPHA", "POWER", "compare", "cut", "combine", "gate", "holm", "detectable_effect"]

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


def compare(a: Sequence[float], b: Sequence[float], label_a: str = "A", label_b: str = "B", unit: str = "%",
            lower: bool = False) -> dict:
    """Verdict on "A is higher than B" (``lower=True``: "A is lower than B") from per-seed values.

    Returns:
        ``verdict``, ``delta`` (mean(A) - mean(B)), ``ci_low``/``ci_high`` (its two-sided 95 % CI), ``p_value``
        (one-sided, claimed direction), ``p_opposite``, ``detectable`` (:func:`detectable_effect`), ``n_a``/``n_b``,
        ``values_a``/``values_b`` (the per-seed values), ``test`` and a one-line ``text``.
    """
    import numpy as np

    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("compare needs at least one value on each side")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("compare needs finite values")
    delta = float(a.mean() - b.mean())
    claimed = "less" if lower else "greater"
    if min(len(a), len(b)) < 2:
        p, p_opp, lo, hi = math.nan, math.nan, math.nan, math.nan
    else:
        p, p_opp, lo, hi = _welch(a, b, claimed)
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
    text = (f"{label_a} {fmt(a)} vs {label_b} {fmt(b)}: Δ {delta:+.2f} {ci}, "
            f"p = {_p(p)} (n={len(a)}/{len(b)}{few})")
    return {"verdict": v, "delta": delta, "ci_low": lo, "ci_high": hi, "p_value": p, "p_opposite": p_opp,
            "detectable": detectable_effect(a, b), "n_a": len(a), "n_b": len(b),
            "values_a": a.tolist(), "values_b": b.tolist(),
            "comparison": f"{label_a} {'<' if lower else '>'} {label_b}", "test": "Welch t-test, one-sided",
            "text": text}


def detectable_effect(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference of means (in the values' unit) a one-sided test at ``alpha`` finds with
    probability ``power`` at these sample sizes, taking the samples' pooled standard deviation as the truth
    (:class:`statsmodels.stats.power.TTestIndPower`). NaN with fewer than 2 values a side; 0 when both samples
    are constant."""
    import numpy as np
    from statsmodels.stats.power import TTestIndPower

    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if min(len(a), len(b)) < 2:
        return math.nan
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    if pooled == 0:
        return 0.0
    d = TTestIndPower().solve_power(effect_size=None, nobs1=len(a), ratio=len(b) / len(a), alpha=alpha,
                                    power=power, alternative="larger")
    return float(d) * pooled


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


def holm(claims: Sequence[Mapping], alpha: float = ALPHA) -> list[dict]:
    """Holm's step-down adjustment over the claims' primary comparisons (one per claim, one-sided p in the claimed
    direction). Returns the claims, each with ``p_primary`` and ``p_holm`` (NaN where the claim has no tested
    primary: not tested, or a claim that is no comparison of runs, which keeps its verdict); a claim reproduced or
    partly tested whose adjusted p reaches ``alpha`` becomes inconclusive, saying so in its ``evidence``."""
    from statsmodels.stats.multitest import multipletests

    def primary_p(c) -> float:
        comps = c.get("comparisons") or []
        if not comps or c["verdict"] == "not tested":
            return math.nan
        p = comps[c.get("primary") or 0].get("p_value")
        return math.nan if p is None else float(p)

    ps = [primary_p(c) for c in claims]
    tested = [i for i, p in enumerate(ps) if not math.isnan(p)]
    adjusted = dict(zip(tested, multipletests([ps[i] for i in tested], alpha=alpha, method="holm")[1])) \
        if tested else {}
    out = []
    for i, c in enumerate(claims):
        c = dict(c, p_primary=ps[i], p_holm=float(adjusted.get(i, math.nan)))
        if c["verdict"] in ("reproduced", "partly tested") and i in adjusted and not c["p_holm"] < alpha:
            c["verdict"] = "inconclusive"
            c["evidence"] = (f"{c.get('evidence', '')} — not significant after Holm's correction over "
                             f"{len(tested)} claims (adjusted p = {_p(c['p_holm'])})")
        out.append(c)
    return out


def gate(result: Mapping, checks: Sequence[Mapping]) -> dict:
    """``result`` unchanged when every regime check passed, else the same numbers with verdict **not tested** and
    the failed checks named. A check is a mapping with ``check``, ``value``, ``threshold`` and ``passed``."""
    failed = [c for c in checks if not c["passed"]]
    if not failed:
        return dict(result)
    why = ", ".join(f"{c['check']} = {c['value']:.2f} (needs {c['threshold']})" for c in failed)
    out = dict(result, verdict="not tested", text=f"{result['text']} — regime not met: {why}")
    if "parts" in out:
        out["parts"] = [dict(p, verdict="not tested") for p in out["parts"]]
    return out
