"""Verdicts on the paper's claims: a statistical test per comparison, and a gate on the regime the claim needs.

A claim "A is higher than B" (or lower) is judged from per-seed values of both sides with Welch's t-test
(:func:`scipy.stats.ttest_ind`, ``equal_var=False``), one-sided in the claimed direction:

* **reproduced**: p < 0.05 in the claimed direction;
* **contradicted**: p < 0.05 in the opposite direction;
* **inconclusive**: neither; the 95 % confidence interval of the difference of means (two-sided, Welch) says how
  large an effect the data can still hide. Fewer than :data:`MIN_SEEDS` values on a side is inconclusive
  whatever the values;
* **not tested**: the regime the claim needs was measured and does not hold (:func:`gate`), so the data cannot
  show the claim either way.

A claim resting on several comparisons (:func:`combine`) is reproduced only when every comparison is (an
intersection-union test: each at level 0.05, no multiplicity correction is needed for "all must hold"), contradicted
when any comparison is contradicted, inconclusive otherwise. A comparison whose variant a profile does not train
(:func:`cut`) is listed but left out of the combination; a claim left with no comparison is not tested.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

__all__ = ["VERDICTS", "MIN_SEEDS", "ALPHA", "compare", "cut", "combine", "gate"]

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not tested")
MIN_SEEDS = 3
ALPHA = 0.05


def _welch(a, b, alternative: str):
    """Welch's test of mean(a) - mean(b) with scipy: (one-sided p in ``alternative``'s direction, the one-sided p
    the other way, 95 % CI low, high). Two constant samples give p = 0 or 1 and a zero-width interval (scipy leaves
    them undefined)."""
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
        ``verdict``, ``delta`` (mean(A) - mean(B)), ``ci_low``/``ci_high`` (its 95 % CI), ``p_value`` (one-sided,
        claimed direction), ``p_opposite``, ``n_a``/``n_b``, ``test`` and a one-line ``text``.
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
    if min(len(a), len(b)) < MIN_SEEDS or math.isnan(p):
        v = "inconclusive"
    elif p < ALPHA:
        v = "reproduced"
    elif p_opp < ALPHA:
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
            "n_a": len(a), "n_b": len(b), "comparison": f"{label_a} {'<' if lower else '>'} {label_b}",
            "test": "Welch t-test, one-sided", "text": text}


def cut(label_a: str, label_b: str, why: str, lower: bool = False) -> dict:
    """The place of a comparison that was not run (``why``: e.g. which variant the profile cut): not tested."""
    nan = math.nan
    return {"verdict": "not tested", "cut": True, "delta": nan, "ci_low": nan, "ci_high": nan, "p_value": nan,
            "p_opposite": nan, "n_a": None, "n_b": None,
            "comparison": f"{label_a} {'<' if lower else '>'} {label_b} (not run: {why})", "test": "not run",
            "text": f"{label_a} vs {label_b}: {why}"}


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def combine(parts: Iterable[dict]) -> dict:
    """All parts reproduced -> reproduced; any part contradicted -> contradicted; else inconclusive (any part not
    tested -> not tested). Parts from :func:`cut` are listed and left out; all of them cut -> not tested."""
    parts = list(parts)
    if not parts:
        raise ValueError("combine needs at least one comparison")
    vs = {p["verdict"] for p in parts if not p.get("cut")} or {"not tested"}
    if "not tested" in vs:
        v = "not tested"
    elif vs == {"reproduced"}:
        v = "reproduced"
    elif "contradicted" in vs:
        v = "contradicted"
    else:
        v = "inconclusive"
    return {"verdict": v, "parts": parts, "text": "; ".join(f"{p['text']} [{p['verdict']}]" for p in parts)}


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
