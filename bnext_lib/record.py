"""What a study writes: tables, figures, claims with their verdicts, the regime checks they rest on, notes, and the
results file the report is assembled from (``results/<study>.json``).

:class:`Record` is what a :class:`bnext_lib.study.Study` (which schedules the runs) writes through, held by it
(``study.record``); every write is atomic and lands in the study's ``out`` folder (:func:`bnext_lib.study.report_dir` of its profile by default).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from .checkpoints import atomic_write_text
from .config import in_last_quarter, teacher_config
from .data import training_images
from .verdicts import VERDICTS

__all__ = ["Record", "COMPARISON_FIELDS", "SOURCES", "last_quarter_rise"]

# the fields of a comparison (bnext_lib.verdicts.compare) that claims.csv and the results file keep
COMPARISON_FIELDS = ("comparison", "verdict", "test", "paired", "delta", "ci_low", "ci_high", "boot_low", "boot_high",
                     "p_value", "p_opposite", "p_improve", "detectable", "n_a", "n_b", "machines", "values_a",
                     "values_b", "seeds_a", "seeds_b")
# whose hypothesis a claim is: the paper's, or this project's own (a question the paper does not ask)
SOURCES = ("paper", "project")


def last_quarter_rise(epochs, top1, run_epochs: int) -> float:
    """How much ``top1`` still rose over the last quarter of a run of ``run_epochs``: the slope of the
    least-squares line through the evaluations in that quarter times the quarter's length (points; <= 0: flat or
    falling). NaN with fewer than two evaluations there."""
    import numpy as np

    e, y = np.asarray(epochs, float), np.asarray(top1, float)
    last = in_last_quarter(e, run_epochs)
    if last.sum() < 2:
        return float("nan")
    return float(np.polyfit(e[last], y[last], 1)[0] * run_epochs / 4)


def _val_rise(run) -> float:
    """:func:`last_quarter_rise` of a run's validation top-1 (NaN without a validation split)."""
    h = run.history()
    if "val_top1" not in h:
        return float("nan")
    h = h.dropna(subset=["val_top1"])
    return last_quarter_rise(h["epoch"], h["val_top1"], run.config.epochs)


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
        self.tables: list[dict] = []
        self.figures: list[dict] = []
        self.claims: list[dict] = []
        self.regime_checks: list[dict] = []
        self.notes: list[str] = []

    def table(self, df, name: str, caption: str, floatfmt: str = ".2f"):
        """Write ``tables/<key>_<name>.csv`` and ``.md``; returns ``df`` for display."""
        stem = f"{self.key}_{name}"
        tables = self._folder("tables")
        atomic_write_text(tables / f"{stem}.csv", df.to_csv())
        atomic_write_text(tables / f"{stem}.md", df.to_markdown(floatfmt=floatfmt) + "\n")
        self.tables = [t for t in self.tables if t["name"] != stem]
        self.tables.append({"name": stem, "caption": caption, "csv": f"tables/{stem}.csv", "md": f"tables/{stem}.md"})
        return df

    def _folder(self, sub: str) -> Path:
        """``out/<sub>``, made when first written to: opening a study (or planning its runs) writes nothing."""
        folder = self.out / sub
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def figure(self, fig, name: str, caption: str) -> None:
        """Write ``figures/<key>_<name>.png`` and ``.svg``."""
        stem = f"{self.key}_{name}"
        figures = self._folder("figures")
        fig.savefig(figures / f"{stem}.png", dpi=130, bbox_inches="tight")
        fig.savefig(figures / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None})
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

    def regime_check(self, check: str, value: float, threshold: float, at_least: bool = True,
                     design: bool = False) -> dict:
        """Measure one condition a claim's regime needs (``value >= threshold``, or ``<=`` with
        ``at_least=False``); the returned check goes to :func:`~bnext_lib.verdicts.gate` and to
        ``regime_checks.csv``. ``design``: a condition of the profile's design, not of what its runs measured (a
        failed one makes the claim not testable at this profile, whatever the runs)."""
        passed = bool(value >= threshold if at_least else value <= threshold)  # NaN (not measured) fails
        entry = {"study": self.name, "check": check, "value": float(value),
                 "threshold": f"{'>=' if at_least else '<='} {threshold:g}", "passed": passed,
                 "of": "the profile's design" if design else "the runs"}
        self.regime_checks = [c for c in self.regime_checks if c["check"] != check] + [entry]
        return entry

    def check_student(self, runs, label: str) -> list[dict]:
        """The CE student learns the task: its mean top-1 over seeds on the validation split (the test set for
        runs without one) reaches the profile's ``student_top1``."""
        val = runs.values(label, "val_top1") if "val_top1" in runs.df else []
        measured = bool(val) and not any(math.isnan(v) for v in val)
        split, values = ("validation", val) if measured else ("test", runs.values(label))
        return [self.regime_check(f"CE student {split} top-1 ({label}, mean of {len(values)} seeds)",
                                  sum(values) / len(values), self.thresholds["student_top1"])]

    def check_teachers(self, ladder, runs, label: str) -> list[dict]:
        """The teachers play their roles for the CE student ``label`` of ``runs`` (the student they teach, same
        regime), on the validation split where the runs have one (else the test set): the main (strongest)
        teacher leads the student by ``teacher_lead`` points (and reaches ``teacher_top1`` where the profile
        sets it); where the profile sets ``assistant_lead``, the assistant (weakest) leads the student by that
        and trails the main teacher by ``main_lead``."""
        t = self.thresholds
        split = "val" if "val_top1" in ladder and ladder["val_top1"].notna().all() else "test"
        top1 = ladder[f"{split}_top1"]
        ce = runs.values(label, f"{split}_top1")
        ce, main, assistant = sum(ce) / len(ce), float(top1.max()), float(top1.min())
        name = f"{split} top-1, {self.regime} regime"
        checks = [self.regime_check(f"main teacher minus CE student ({name})", main - ce, t["teacher_lead"])]
        if "teacher_top1" in t:
            checks.insert(0, self.regime_check(f"main teacher {split} top-1", main, t["teacher_top1"]))
        if "assistant_lead" in t:
            checks += [self.regime_check(f"assistant minus CE student ({name})", assistant - ce, t["assistant_lead"]),
                       self.regime_check(f"main teacher minus assistant ({name})", main - assistant, t["main_lead"])]
        return checks

    def check_same_images(self, runs) -> dict:
        """The teachers learn from their students' own images, so that a teacher's lead comes from its capacity,
        not from images its student never sees (in the paper both learn from ImageNet's training set): the most
        training images any teacher of ``runs`` learned from per image its student learned from, at most 1 (the
        same subset, drawn with the student's seed, or the same full set). NaN (fails) where a dataset's size is
        not known."""
        ratios = []
        for run in runs.runs.values():
            cfg = run.config
            mine = training_images(cfg.dataset, cfg.train_subset, cfg.val_split)
            for name in cfg.teachers:
                t = teacher_config(name, cfg)
                theirs = training_images(t.dataset, t.train_subset, t.val_split)
                ratios.append(theirs / mine if mine and theirs else math.nan)
        value = max(ratios, default=math.nan) if not any(r != r for r in ratios) else math.nan
        return self.regime_check(f"teachers' training images per image their student learns from ({self.regime} "
                                 "regime)", value, 1.0, at_least=False, design=True)

    def check_overfitting(self, runs, label: str) -> list[dict]:
        """The CE student ``label`` over-fits, as means over its seeds: train top-1 (eval mode, no augmentation)
        minus test top-1 reaches ``overfit_gap``; and, where the profile sets them, train top-1 reaches
        ``overfit_train_top1``, the run takes ``overfit_steps`` optimizer steps, and validation top-1 rises by
        at most ``overfit_val_rise`` points over the last quarter of the run (:func:`last_quarter_rise`)."""
        t, mean = self.thresholds, lambda xs: sum(xs) / len(xs)
        checks = [self.regime_check(f"CE student train-minus-test top-1 gap ({self.regime} regime)",
                                    mean(runs.values(label, "gap")), t["overfit_gap"])]
        if "overfit_train_top1" in t:
            checks.append(self.regime_check(f"CE student train top-1, eval mode ({self.regime} regime)",
                                            mean(runs.values(label, "train_eval_top1")), t["overfit_train_top1"]))
        cfgs = [r.config for (lab, _), r in runs.runs.items() if lab == label]
        if "overfit_steps" in t:
            steps = [c.epochs * ((c.train_subset or 0) // c.batch_size) for c in cfgs]
            checks.append(self.regime_check(f"CE student optimizer steps ({self.regime} regime)", min(steps),
                                            t["overfit_steps"]))
        if "overfit_val_rise" in t:
            rises = [_val_rise(r) for (lab, _), r in runs.runs.items() if lab == label]
            rises = [x for x in rises if x == x]  # runs without a validation split measure nothing
            checks.append(self.regime_check(
                f"CE student validation top-1 rise over the run's last quarter ({self.regime} regime)",
                mean(rises) if rises else float("nan"), t["overfit_val_rise"], at_least=False))
        return checks

    def note(self, text: str) -> None:
        """A sentence for the report's section on this study (what was cut, a caveat)."""
        if text not in self.notes:
            self.notes.append(text)

    def write_results(self, parameters: Mapping[str, Any]) -> Path:
        """Write ``results/<name>.json``: ``parameters`` (how the study ran) and everything recorded."""
        result = {**parameters, "tables": self.tables, "figures": self.figures, "claims": self.claims,
                  "regime_checks": self.regime_checks, "notes": self.notes}
        path = self._folder("results") / f"{self.name}.json"
        atomic_write_text(path, json.dumps(result, indent=1, default=str))
        return path
