"""What a study writes: tables, figures, claims with their verdicts, the regime checks they rest on, notes, and the
results file the report is assembled from (``results/<study>.json``).

:class:`Record` is the writing half of :class:`bnext_lib.study.Study` (which schedules the runs); every write is
atomic and lands in the study's ``out`` folder (:func:`bnext_lib.study.report_dir` of its profile by default).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .checkpoints import atomic_write_text
from .verdicts import VERDICTS

__all__ = ["Record", "COMPARISON_FIELDS", "SOURCES", "last_quarter_rise"]

# the fields of a comparison (bnext_lib.verdicts.compare) that claims.csv and the results file keep
COMPARISON_FIELDS = ("comparison", "verdict", "delta", "ci_low", "ci_high", "p_value", "detectable", "n_a", "n_b",
                     "values_a", "values_b", "seeds_a", "seeds_b")
# whose hypothesis a claim is: the paper's, or this project's own (a question the paper does not ask)
SOURCES = ("paper", "project")


def last_quarter_rise(epochs, top1, run_epochs: int) -> float:
    """How much ``top1`` still rose over the last quarter of a run of ``run_epochs``: the slope of the
    least-squares line through the evaluations in that quarter times the quarter's length (points; <= 0: flat or
    falling). NaN with fewer than two evaluations there."""
    import numpy as np

    e, y = np.asarray(epochs, float), np.asarray(top1, float)
    last = e > run_epochs * 0.75
    if last.sum() < 2:
        return float("nan")
    return float(np.polyfit(e[last], y[last], 1)[0] * run_epochs / 4)


class Record:
    """The tables, figures, claims, regime checks and notes of one study, written into ``out``.

    Args:
        name: the study's (notebook's) name; its prefix before ``_`` (``01``) names its files.
        out: the report folder (``figures/``, ``tables/``, ``results/`` are made in it).
        thresholds: what a claim's regime must show (:attr:`bnext_lib.profiles.Profile.thresholds`).
        regime: ``"full"`` or ``"overfitting"``, named in the regime checks.
    """

    def __init__(self, name: str, out: Path, thresholds: Mapping[str, float], regime: str = "full"):
        self.name, self.key, self.out = name, name.split("_")[0], Path(out)
        self.thresholds, self.regime = dict(thresholds), regime
        for sub in ("figures", "tables", "results"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.tables: list[dict] = []
        self.figures: list[dict] = []
        self.claims: list[dict] = []
        self.regime_checks: list[dict] = []
        self.notes: list[str] = []

    def table(self, df, name: str, caption: str, floatfmt: str = ".2f"):
        """Write ``tables/<key>_<name>.csv`` and ``.md``; returns ``df`` for display."""
        stem = f"{self.key}_{name}"
        atomic_write_text(self.out / "tables" / f"{stem}.csv", df.to_csv())
        atomic_write_text(self.out / "tables" / f"{stem}.md", df.to_markdown(floatfmt=floatfmt) + "\n")
        self.tables = [t for t in self.tables if t["name"] != stem]
        self.tables.append({"name": stem, "caption": caption, "csv": f"tables/{stem}.csv", "md": f"tables/{stem}.md"})
        return df

    def figure(self, fig, name: str, caption: str) -> None:
        """Write ``figures/<key>_<name>.png`` and ``.svg``."""
        stem = f"{self.key}_{name}"
        fig.savefig(self.out / "figures" / f"{stem}.png", dpi=130, bbox_inches="tight")
        fig.savefig(self.out / "figures" / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None})
        self.figures = [f for f in self.figures if f["name"] != stem]
        self.figures.append({"name": stem, "caption": caption, "png": f"figures/{stem}.png",
                             "svg": f"figures/{stem}.svg"})

    def claim(self, key: str, claim: str, result: Mapping[str, Any], where: str, source: str = "paper") -> dict:
        """Record a claim with our verdict (``result`` from :func:`~bnext_lib.verdicts.compare`,
        :func:`~bnext_lib.verdicts.combine`, :func:`~bnext_lib.verdicts.gate`, or a dict with ``verdict`` and
        ``text`` for a claim that is not a comparison of runs), where the evidence is, and whose hypothesis it is
        (``source``: ``"paper"``, or ``"project"`` for this project's own). Its primary comparison (the one
        :func:`~bnext_lib.verdicts.holm` adjusts) is ``result["primary"]``, the first by default."""
        if result["verdict"] not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {result['verdict']!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        parts = result.get("parts") or ([result] if "delta" in result else [])
        entry = {"key": key, "claim": claim, "verdict": result["verdict"], "evidence": result["text"],
                 "where": f"{self.name}: {where}", "source": source, "primary": result.get("primary", 0),
                 "comparisons": [{k: p.get(k) for k in COMPARISON_FIELDS} for p in parts]}
        self.claims = [c for c in self.claims if c["key"] != key]
        self.claims.append(entry)
        return entry

    def regime_check(self, check: str, value: float, threshold: float, at_least: bool = True) -> dict:
        """Measure one condition a claim's regime needs (``value >= threshold``, or ``<=`` with
        ``at_least=False``); the returned check goes to :func:`~bnext_lib.verdicts.gate` and to
        ``regime_checks.csv``."""
        passed = bool(value >= threshold if at_least else value <= threshold)
        entry = {"study": self.name, "check": check, "value": float(value),
                 "threshold": f"{'>=' if at_least else '<='} {threshold:g}", "passed": passed}
        self.regime_checks = [c for c in self.regime_checks if c["check"] != check] + [entry]
        return entry

    def check_student(self, runs, label: str) -> list[dict]:
        """The CE student learns the task: its mean test top-1 over seeds reaches the profile's ``student_top1``."""
        values = runs.values(label)
        return [self.regime_check(f"CE student test top-1 ({label}, mean of {len(values)} seeds)",
                                  sum(values) / len(values), self.thresholds["student_top1"])]

    def check_teachers(self, ladder, runs, label: str) -> list[dict]:
        """The strongest teacher reaches ``teacher_top1`` and leads the CE student ``label`` of ``runs`` (the
        student it teaches, same regime) by ``teacher_lead`` points."""
        t, ce = self.thresholds, runs.values(label)
        best = float(ladder["test_top1"].max())
        return [self.regime_check("strongest teacher test top-1", best, t["teacher_top1"]),
                self.regime_check(f"strongest teacher minus CE student test top-1 ({self.regime} regime)",
                                  best - sum(ce) / len(ce), t["teacher_lead"])]

    def check_overfitting(self, runs, label: str) -> list[dict]:
        """The CE student ``label`` over-fits: mean train (eval mode) minus test top-1 reaches ``overfit_gap``."""
        gaps = runs.values(label, "gap")
        return [self.regime_check(f"CE student train-minus-test top-1 gap ({self.regime} regime)",
                                  sum(gaps) / len(gaps), self.thresholds["overfit_gap"])]

    def note(self, text: str) -> None:
        """A sentence for the report's section on this study (what was cut, a caveat)."""
        if text not in self.notes:
            self.notes.append(text)

    def write_results(self, parameters: Mapping[str, Any]) -> Path:
        """Write ``results/<name>.json``: ``parameters`` (how the study ran) and everything recorded."""
        result = {**parameters, "tables": self.tables, "figures": self.figures, "claims": self.claims,
                  "regime_checks": self.regime_checks, "notes": self.notes}
        path = self.out / "results" / f"{self.name}.json"
        atomic_write_text(path, json.dumps(result, indent=1, default=str))
        return path
