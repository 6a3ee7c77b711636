"""The research report: what the notebooks call, and ``python -m bnext_lib.report`` (``make report``).

A notebook opens a :class:`Study` from its ``parameters`` cell (bad parameters fail there, before any work), asks
it for runs (:meth:`Study.run`, cached under ``data/runs/`` and shared between notebooks), saves tables and figures
through it and records claims with a verdict. Each study writes ``results/<study>.json``; :func:`assemble` turns
those into ``REPORT.md``.

Verdict rule (:func:`verdict`): a claim "A beats B" is *reproduced* when every seed of A beats every seed of B,
*not reproduced* when every seed of B beats every seed of A, and *inconclusive* when the seeds overlap or there is
one seed only. With two seeds this is strict on purpose: a 60-minute CPU run cannot resolve small differences.

CLI::

    python -m bnext_lib.report                    # all four notebooks at the cpu profile into reports/
    python -m bnext_lib.report --profile smoke    # into reports/.scratch/
    python -m bnext_lib.report --assemble-only    # rebuild REPORT.md from reports/results/
    python -m bnext_lib.report --refresh-notebooks  # re-store the checked (NBVAL_CHECK_OUTPUT) outputs
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .checkpoints import atomic_write_text
from .profiles import get_profile

__all__ = ["REPO_ROOT", "NOTEBOOKS", "Study", "parse_seeds", "RunSet", "verdict", "combine", "distillation_recipes",
           "machine_info", "assemble", "update_readme", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_architecture_study", "02_overfitting_analysis", "03_distillation", "04_augmentation_ablation")
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


# --------------------------------------------------------------------------------------------- verdicts
def verdict(a: Sequence[float], b: Sequence[float], label_a: str = "A", label_b: str = "B", unit: str = "%",
            lower: bool = False) -> dict:
    """Verdict on "A is higher than B" (``lower=True``: "A is lower than B") from per-seed values (see the module
    docstring for the rule)."""
    import numpy as np

    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("verdict needs at least one value on each side")
    diff = a.mean() - b.mean()
    sa, sb = (-a, -b) if lower else (a, b)
    if min(len(a), len(b)) < 2:
        v = "inconclusive"
    elif sa.min() > sb.max():
        v = "reproduced"
    elif sa.max() < sb.min():
        v = "not reproduced"
    else:
        v = "inconclusive"
    def fmt(x):
        return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}{unit}" if len(x) > 1 else f"{x.mean():.2f}{unit}"
    text = f"{label_a} {fmt(a)} vs {label_b} {fmt(b)} (Δ {diff:+.2f}, n={len(a)}/{len(b)})"
    return {"verdict": v, "diff": float(diff), "text": text}


def combine(parts: Iterable[dict]) -> dict:
    """All parts reproduced -> reproduced; any part not reproduced -> not reproduced; else inconclusive."""
    parts = list(parts)
    vs = {p["verdict"] for p in parts}
    v = "reproduced" if vs == {"reproduced"} else "not reproduced" if "not reproduced" in vs else "inconclusive"
    return {"verdict": v, "text": "; ".join(f"{p['text']} [{p['verdict']}]" for p in parts)}


# --------------------------------------------------------------------------------------------- run sets
@dataclass
class RunSet:
    """Runs of several labelled variants over seeds.

    Attributes:
        runs: ``{(label, seed): Run}``.
        df: one row per run: label, seed, model, test/train top-1 and loss, gap (train - test top-1), minutes,
            digest.
    """

    runs: dict
    df: Any

    def values(self, label: str, metric: str = "test_top1") -> list[float]:
        rows = self.df[self.df.label == label]
        if rows.empty:
            raise KeyError(f"no runs labelled {label!r}; labels: {list(self.labels)}")
        return rows[metric].tolist()

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(self.df.label))

    def compare(self, better: str, worse: str, metric: str = "test_top1", lower: bool = False) -> dict:
        """:func:`verdict` on "``better`` has a higher (``lower=True``: lower) ``metric`` than ``worse``"."""
        unit = "%" if metric.endswith("top1") else " pts" if metric == "gap" else ""
        return verdict(self.values(better, metric), self.values(worse, metric), better, worse, unit, lower)

    def summary(self, metrics: Sequence[str] = ("test_top1", "train_top1", "gap")):
        """Mean, sample std, min and max per label (columns ``<metric>_mean`` ...), in label order."""
        import pandas as pd

        g = self.df.groupby("label", sort=False)
        out = pd.DataFrame({"seeds": g.size()})
        for m in metrics:
            out[f"{m}_mean"] = g[m].mean()
            out[f"{m}_std"] = g[m].std(ddof=1)
            out[f"{m}_min"] = g[m].min()
            out[f"{m}_max"] = g[m].max()
        out["minutes"] = g["minutes"].mean()
        return out

    def table(self, metrics: Sequence[str] = ("test_top1", "train_top1", "gap")):
        """A readable table: ``mean ± std [min, max]`` per metric and label."""
        import pandas as pd

        s = self.summary(metrics)
        out = pd.DataFrame(index=s.index)
        out["seeds"] = s["seeds"]
        for m in metrics:
            out[m] = [_fmt(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_min"], r[f"{m}_max"]) for _, r in s.iterrows()]
        out["min/run"] = s["minutes"].round(2)
        return out

    def histories(self):
        """Every run's per-epoch metrics, long format with ``label`` and ``seed``."""
        import pandas as pd

        frames = []
        for (label, seed), run in self.runs.items():
            h = run.history()
            h.insert(0, "label", label)
            h.insert(1, "seed", seed)
            frames.append(h)
        return pd.concat(frames, ignore_index=True)


def distillation_recipes(ladder: Sequence[str]) -> dict:
    """The distillation study's recipes from a teacher ladder ``[weak, middle, strong]`` (measured order).

    The two-teacher recipes pair the weak teacher as assistant with the strong one as main teacher (official
    BNext-T: EfficientNet-B0 + B2); consecutive KD runs two rounds with the weak, then the middle teacher as
    assistant and the strong one as main teacher throughout (official BNext-M: B0 -> B2 with B4).
    """
    if len(ladder) < 3:
        raise ValueError(f"the distillation study needs three teachers (weak, middle, strong), got {list(ladder)}")
    weak, mid, strong = ladder[0], ladder[len(ladder) // 2], ladder[-1]
    return {
        "CE only": {},
        "single weak": {"teachers": [weak]},
        "single strong": {"teachers": [strong]},
        "two, fixed 0.5/0.5": {"teachers": [weak, strong], "kd_weighting": "fixed"},
        "two, adaptive (batch)": {"teachers": [weak, strong]},
        "two, adaptive (instance)": {"teachers": [weak, strong], "kd_granularity": "instance"},
        "consecutive (weak→mid, strong)": {"teachers": [weak, mid, strong]},
    }


def _fmt(mean: float, std: float, lo: float, hi: float) -> str:
    if math.isnan(std):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f} [{lo:.2f}, {hi:.2f}]"


# --------------------------------------------------------------------------------------------- the study
def parse_seeds(seeds: Any) -> Any:
    """Seeds as a notebook user gives them: a list, or the text papermill's ``-p seeds ...`` passes on (``-p``
    turns only numbers, ``True``/``False`` and ``None`` into Python values), e.g. ``'[0, 1, 2]'`` or ``'0,1,2'``.
    A string that reads as neither is returned unchanged, for the validation to name it."""
    if not isinstance(seeds, str):
        return seeds
    text = seeds.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts = [p.strip() for p in text.split(",")]
    if parts[-1] == "" and len(parts) > 1:  # a trailing comma, as in '[0, 1, 2,]'
        parts.pop()
    if not all(p.isdigit() and p.isascii() for p in parts):
        return seeds
    return [int(p) for p in parts]


class Study:
    """One notebook's study: validated parameters, cached runs, and the files it writes.

    Args:
        name: the notebook's name (``01_architecture_study``...).
        profile: ``smoke`` (seconds, the notebooks' default and the tests'), ``cpu`` (the committed report) or
            ``gpu`` (paper scale).
        seeds: seeds of every compared variant (``None``: the profile's); also as text, ``'[0, 1, 2]'`` or
            ``'0,1,2'``, which is what ``papermill -p seeds '[0, 1, 2]'`` passes.
        epochs, dataset, model, device: override the profile's training settings.
        workers: runs trained side by side (``None``: the profile's).
        out_dir: where figures, tables and results go (``None``: ``reports/`` for ``cpu``/``gpu``,
            ``reports/.scratch/`` for ``smoke``, so tests never overwrite the committed report).

    Raises:
        ValueError: on an unknown profile, model or dataset, or on non-positive epochs, seeds or workers,
            before anything is trained.
    """

    def __init__(self, name: str, profile: str = "smoke", seeds: Sequence[int] | None = None,
                 epochs: int | None = None, dataset: str | None = None, model: str | None = None,
                 device: str = "auto", workers: int | None = None, out_dir: str | os.PathLike | None = None):
        errors = []
        try:
            self.profile = get_profile(profile)
        except ValueError as e:
            raise ValueError(str(e)) from None
        if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
            errors.append(f"epochs must be a positive integer or None, got {epochs!r}")
        seeds = parse_seeds(seeds)
        if seeds is not None and (isinstance(seeds, (str, int)) or len(seeds) == 0
                                  or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                             for s in seeds)):
            errors.append(f"seeds must be a non-empty list of non-negative integers or None, got {seeds!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            errors.append(f"workers must be a positive integer or None, got {workers!r}")
        if not errors:  # the training options: TrainConfig's own validation says what is wrong
            from .train import TrainConfig
            given = {k: v for k, v in dict(dataset=dataset, model=model, device=device).items() if v is not None}
            try:
                TrainConfig(**{**self.profile.train, **given}).validate()
            except (ValueError, TypeError) as e:
                errors += [line.strip() for line in str(e).splitlines()[1:]] or [str(e)]
        if errors:
            raise ValueError(f"invalid parameters for {name}:\n  " + "\n  ".join(errors))
        self.name = name
        self.key = name.split("_")[0]
        self.seeds = tuple(seeds) if seeds is not None else self.profile.seeds
        self.workers = workers or self.profile.workers
        self.threads = self.profile.threads if self.workers > 1 else None
        self.overrides = {k: v for k, v in dict(epochs=epochs, dataset=dataset, model=model).items() if v is not None}
        self.overrides["device"] = device
        default_out = REPO_ROOT / "reports" / (".scratch" if profile == "smoke" else "")
        self.out = Path(out_dir) if out_dir else default_out
        for sub in ("figures", "tables", "results"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.tables: list[dict] = []
        self.figures: list[dict] = []
        self.claims: list[dict] = []
        self.notes: list[str] = []
        self.trained = self.cached = 0
        self.t0 = time.perf_counter()

    def __repr__(self) -> str:
        return (f"Study({self.name!r}, profile={self.profile.name!r}, seeds={list(self.seeds)}, "
                f"workers={self.workers}, settings={self.settings})")

    @property
    def settings(self) -> dict:
        """The profile's training settings with this study's overrides."""
        return {**self.profile.train, **self.overrides}

    @property
    def teachers(self) -> tuple[str, ...]:
        """The profile's teacher ladder, weak to strong."""
        return self.profile.teachers

    def config(self, **overrides):
        """A validated :class:`~bnext_lib.train.TrainConfig`: profile, study overrides, then ``overrides``."""
        from .train import TrainConfig

        values = {**self.settings, "progress": False, **overrides}
        if "teachers" in values:
            values["teachers"] = tuple(values["teachers"])
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg

    def run(self, variants: Mapping[str, Mapping[str, Any]], seeds: Sequence[int] | None = None) -> RunSet:
        """Train (or read from the cache) every variant at every seed.

        Args:
            variants: ``{label: TrainConfig overrides}``.
            seeds: default: the study's seeds.
        """
        import pandas as pd

        from .runs import is_done, run_many

        seeds = tuple(seeds) if seeds is not None else self.seeds
        keys = [(label, seed) for label in variants for seed in seeds]
        configs = [self.config(**{**variants[label], "seed": seed}) for label, seed in keys]
        done = sum(is_done(c) for c in configs)
        runs = run_many(configs, workers=self.workers, threads=self.threads)
        self.cached += done
        self.trained += len(configs) - done
        rows = []
        for (label, seed), run in zip(keys, runs):
            f = run.final
            t_acc = run.result.get("teachers") or {}
            rows.append({"label": label, "seed": seed, "model": run.config.model, "augment": run.config.augment,
                         "teachers": "+".join(t.removeprefix("timm:") for t in run.config.teachers) or "none",
                         "teacher_top1": max(t_acc.values()) if t_acc else float("nan"),
                         "test_top1": f["test_top1"],
                         "train_top1": f["train_top1"], "gap": f["train_top1"] - f["test_top1"],
                         "test_loss": f["test_loss"], "train_loss": f["train_loss"],
                         "minutes": run.result["wall_s"] / 60, "digest": run.digest})
        return RunSet(dict(zip(keys, runs)), pd.DataFrame(rows))

    def teacher_table(self, names: Sequence[str] | None = None):
        """Train (or find) the profile's teachers; their test/train top-1, size and cost, weak to strong."""
        import pandas as pd

        from .runs import ensure_teachers, teacher_config
        from .train import config_hash

        names = list(names or self.teachers)
        base = self.config(teachers=tuple(names))
        runs = ensure_teachers([base], self.workers, self.threads)
        rows = []
        for n in names:
            t_cfg = teacher_config(n, base)
            run = runs[config_hash(t_cfg)]
            model = run.load_model()
            rows.append({"teacher": n, "test_top1": run.final["test_top1"],
                         "train_top1": run.final.get("train_top1", float("nan")),
                         "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "epochs": t_cfg.epochs,
                         "train_images": t_cfg.train_subset or "all", "recipe": base.teacher_recipe,
                         "minutes": run.result.get("wall_s", float("nan")) / 60})
        return pd.DataFrame(rows).set_index("teacher")

    def landscapes(self, runset: RunSet, labels: Sequence[str]) -> dict:
        """Loss-landscape slices (the profile's grid, the same direction seed) of every seed's run of each label,
        computed side by side and cached in the runs' folders; ``{(label, seed): Landscape}``."""
        from .landscape import run_landscape
        from .runs import parallel_map

        g = self.profile.landscape
        keys = [(label, seed) for label in labels for (lab, seed) in runset.runs if lab == label]
        jobs = [(runset.runs[k].config, g["steps"], g["span"], g["images"], 0) for k in keys]
        return dict(zip(keys, parallel_map(run_landscape, jobs, self.workers, self.threads, desc="landscapes")))

    def ladder(self):
        """The teacher table sorted by measured test top-1 (weak to strong): the ladder the studies use."""
        return self.teacher_table().sort_values("test_top1")

    @property
    def sizes(self) -> tuple[str, ...]:
        """Two student sizes for the augmentation study (the profile's)."""
        return self.profile.sizes

    # ----------------------------------------------------------------------------------------- outputs
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

    def claim(self, key: str, claim: str, result: Mapping[str, Any], where: str) -> dict:
        """Record a paper claim with our verdict (``result`` from :func:`verdict`/:func:`combine` or a dict with
        ``verdict`` and ``text``) and where the evidence is."""
        if result["verdict"] not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {result['verdict']!r}")
        entry = {"key": key, "claim": claim, "verdict": result["verdict"], "evidence": result["text"],
                 "where": f"{self.name}: {where}"}
        self.claims = [c for c in self.claims if c["key"] != key]
        self.claims.append(entry)
        return entry

    def note(self, text: str) -> None:
        """A sentence for the report's section on this study (what was cut, a caveat)."""
        self.notes.append(text)

    def finish(self) -> dict:
        """Write ``results/<name>.json`` (parameters, tables, figures, claims, run counts, wall time)."""
        result = {"study": self.name, "profile": self.profile.name, "seeds": list(self.seeds),
                  "settings": self.settings, "teachers": list(self.teachers), "workers": self.workers,
                  "threads": self.threads, "runs_trained": self.trained, "runs_cached": self.cached,
                  "wall_s": round(time.perf_counter() - self.t0, 1), "tables": self.tables,
                  "figures": self.figures, "claims": self.claims, "notes": self.notes}
        path = self.out / "results" / f"{self.name}.json"
        atomic_write_text(path, json.dumps(result, indent=1, default=str))
        return {"claims": len(self.claims), "tables": len(self.tables), "figures": len(self.figures),
                "runs_trained": self.trained, "runs_cached": self.cached, "wall_s": result["wall_s"]}


# --------------------------------------------------------------------------------------------- REPORT.md
def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        mem = float("nan")
    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_GiB": round(mem, 1), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str:
    """HEAD (marked when the code differs from it); a copy without ``.git`` (a remote machine that got the working
    tree only) says where it came from in ``BNEXT_COMMIT``."""
    if os.environ.get("BNEXT_COMMIT"):
        return os.environ["BNEXT_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        # outputs don't count; `git diff` compares contents through the notebooks' clean filter (bnext_lib/nbclean.py)
        dirty = subprocess.run(["git", "diff", "HEAD", "--name-only", "--", ".", ":!reports"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _read_results(out: Path) -> tuple[list[dict], dict]:
    studies = [json.loads((out / "results" / f"{n}.json").read_text()) for n in NOTEBOOKS
               if (out / "results" / f"{n}.json").exists()]
    if not studies:
        raise FileNotFoundError(f"no study results in {out / 'results'}; run the notebooks first")
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    return studies, run


def assemble(out: str | os.PathLike = REPO_ROOT / "reports") -> Path:
    """Write ``REPORT.md`` from ``results/*.json`` and ``run.json`` (if ``make report`` wrote one)."""
    out = Path(out)
    studies, run = _read_results(out)
    lines = ["# BNext reproduction: report", ""]
    lines += ["Generated by `make report` (`python -m bnext_lib.report`) from the four notebooks in `notebooks/`; "
              "every number below comes from running the committed code. Executed notebooks (with all outputs) "
              "are in [`executed/`](executed/).", ""]
    lines += ["## What was run", ""]
    prof = studies[0]["profile"]
    settings = studies[0]["settings"]
    lines.append(f"- Profile **{prof}**: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines.append(f"- Seeds per compared variant: {studies[0]['seeds']}; teachers (weak to strong): "
                 f"{', '.join(studies[0]['teachers']) or 'none'}; {studies[0]['workers']} run(s) side by side"
                 + (f", {studies[0]['threads']} torch thread(s) each" if studies[0]["threads"] else ""))
    if run:
        m = run.get("machine", {})
        lines.append(f"- Machine: {m.get('cpu')} ({m.get('cores')} cores, {m.get('memory_GiB')} GiB), "
                     f"{m.get('platform')}; Python {m.get('python')}, torch {m.get('torch')}"
                     + (f", GPU {m['gpu']}" if m.get("gpu") else ""))
        lines.append(f"- Code: git commit `{run.get('commit')}`; started {run.get('started')}, "
                     f"total wall time {run.get('wall_s', 0) / 60:.1f} min")
        if run.get("note"):
            lines.append(f"- Note: {run['note']}")
    seen = _images_per_run(settings)
    if seen:
        lines.append(f"- Scale: each student run sees {seen:,} training images ({settings.get('train_subset') or 'all'}"
                     f" x {settings.get('epochs')} epochs); the paper's ImageNet runs see 1,281,167 x 512 "
                     f"(~{1281167 * 512 / seen:,.0f}x more). Verdicts are about this scale.")
    lines += ["", "| notebook | wall time (min) | runs trained | runs from cache | claims |", "|---|---|---|---|---|"]
    for s in studies:
        entry = run.get("notebooks", {}).get(s["study"], {})
        wall = entry.get("first_wall_s", entry.get("wall_s", s["wall_s"]))
        trained = entry.get("first_runs_trained", entry.get("runs_trained", s["runs_trained"]))
        cached = entry.get("first_runs_cached", entry.get("runs_cached", s["runs_cached"]))
        lines.append(f"| [{s['study']}](executed/{s['study']}.html) | {wall / 60:.1f} | {trained} | "
                     f"{cached} | {len(s['claims'])} |")
    lines += ["", "## Claims", "",
              "Verdict rule: *reproduced* when every seed of the claimed-better variant beats every seed of the "
              "other, *not reproduced* when the reverse holds, *inconclusive* otherwise (overlapping seeds). "
              "Numbers are test top-1 mean ± sample std over seeds unless stated.", "",
              "| claim | verdict | our numbers | evidence |", "|---|---|---|---|"]
    for s in studies:
        for c in s["claims"]:
            lines.append(f"| {c['claim']} | **{c['verdict']}** | {c['evidence']} | {c['where']} |")
    for s in studies:
        lines += ["", f"## {s['study']}", ""]
        for n in s.get("notes", []):
            lines += [f"> {n}", ""]
        for t in s["tables"]:
            lines += [f"**{t['caption']}** ([csv]({t['csv']}))", "", (out / t["md"]).read_text().rstrip(), ""]
        for f in s["figures"]:
            lines += [f"![{f['caption']}]({f['png']})", "", f"*{f['caption']}* ([svg]({f['svg']}))", ""]
    lines += _regime_section(out)
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# the benchmarks that chose the profile's student, recipe, teachers and over-fitting regime (their own outputs)
REGIME_EVIDENCE = (
    ("student_frontier", "Binary students and short-run recipes on the full training set: test top-1 (full test "
     "set) against training cost", "benchmarks/student_frontier.py"),
    ("teacher_ladder", "Full-precision teachers: test top-1 and training cost", "benchmarks/teacher_ladder.py"),
    ("overfitting_regime", "The CE student on training subsets: train (eval mode) minus test top-1 per epoch",
     "benchmarks/overfitting_regime.py"),
)


def _regime_section(out: Path) -> list[str]:
    """REPORT.md's account of how the regime was chosen, from the benchmarks' tables and figures in ``out``."""
    import pandas as pd

    found = [(n, c, s) for n, c, s in REGIME_EVIDENCE if (out / "tables" / f"{n}.csv").exists()]
    if not found:
        return []
    lines = ["", "## How the student, recipe, teachers and regimes were chosen", ""]
    for name, caption, script in found:
        df = pd.read_csv(out / "tables" / f"{name}.csv")
        lines += [f"**{caption}** (`{script}`; [csv](tables/{name}.csv))", "",
                  df.to_markdown(index=False, floatfmt=".2f"), ""]
        if (out / "figures" / f"00_{name}.png").exists():
            lines += [f"![{caption}](figures/00_{name}.png)", ""]
    return lines


def _images_per_run(settings: Mapping[str, Any]) -> int | None:
    from .data import DATASETS

    n = settings.get("train_subset")
    if n is None:
        n = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}.get(settings.get("dataset", ""))
    return n * settings["epochs"] if n and settings.get("epochs") and settings.get("dataset") in DATASETS else None


README_START, README_END = "<!-- report-headline:start -->", "<!-- report-headline:end -->"


def update_readme(out: str | os.PathLike = REPO_ROOT / "reports") -> None:
    """Rewrite the README's headline (between the markers) from the committed report's claims (an explicit step
    of ``python -m bnext_lib.report`` after a run into ``reports/``)."""
    studies, run = _read_results(Path(out))
    readme = REPO_ROOT / "README.md"
    if not readme.exists() or README_START not in readme.read_text():
        return
    s0 = studies[0]
    counts = {v: sum(c["verdict"] == v for s in studies for c in s["claims"]) for v in VERDICTS}
    lines = [README_START, "", "### Headline: the paper's claims at laptop scale ([full report](reports/REPORT.md))", "",
             f"`make report` ({s0['profile']} profile: {s0['settings'].get('model')} on {s0['settings'].get('dataset')}, "
             f"{s0['settings'].get('train_subset') or 'all'} training images x {s0['settings'].get('epochs')} epochs, "
             f"seeds {s0['seeds']}, {run.get('wall_s', 0) / 60:.0f} min on {run.get('machine', {}).get('cores', '?')} "
             f"CPU cores) gives {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced and "
             f"{counts['inconclusive']} inconclusive claims:", "",
             "| claim | verdict |", "|---|---|"]
    for s in studies:
        for c in s["claims"]:
            lines.append(f"| {c['claim']} | **{c['verdict']}** |")
    for name in ("01_ablation", "01_blocks"):
        table = next((t for s in studies for t in s["tables"] if t["name"] == name), None)
        md = REPO_ROOT / "reports" / table["md"] if table else None
        if md is not None and md.exists():
            lines += ["", f"**{table['caption']}**", "", md.read_text().rstrip()]
    figure = next((f for s in studies for f in s["figures"] if f["name"] == "01_ablation_curves"), None)
    if figure:
        lines += ["", f"![{figure['caption']}](reports/{figure['png']})", "", f"*{figure['caption']}*"]
    lines += ["", README_END]
    text = readme.read_text()
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1] if README_END in rest else rest
    atomic_write_text(readme, head + "\n".join(lines) + tail)


# --------------------------------------------------------------------------------------------- runner
@contextlib.contextmanager
def _text_progress():
    """Kernels started meanwhile show text progress bars (stored as text in the executed notebooks, printed by
    papermill's log), not widgets (see :mod:`bnext_lib.progress`)."""
    from .progress import PROGRESS_ENV

    saved = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "text"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PROGRESS_ENV)
        else:
            os.environ[PROGRESS_ENV] = saved


def execute(notebooks: Sequence[str], profile: str, out: Path, html: bool = True, log: bool = True) -> dict:
    """Run notebooks with papermill into ``out/executed`` (and HTML), returning wall seconds per notebook."""
    import papermill as pm

    (out / "executed").mkdir(parents=True, exist_ok=True)
    times = {}
    for name in notebooks:
        src = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        dst = out / "executed" / f"{name}.ipynb"
        print(f"== {name} ({profile})", file=sys.stderr, flush=True)
        t = time.perf_counter()
        with _text_progress():
            pm.execute_notebook(str(src), str(dst), parameters={"profile": profile, "out_dir": str(out)},
                                cwd=str(src.parent), kernel_name="python3", progress_bar=False, log_output=log)
        times[name] = {"wall_s": round(time.perf_counter() - t, 1)}
        print(f"== {name}: {times[name]['wall_s'] / 60:.1f} min", file=sys.stderr, flush=True)
        if html:
            from nbconvert import HTMLExporter
            body, _ = HTMLExporter().from_filename(str(dst))
            atomic_write_text(dst.with_suffix(".html"), body)
    return times


def refresh_notebooks(notebooks: Sequence[str] = NOTEBOOKS) -> None:
    """Execute each notebook at its defaults and store it in its stored form (:mod:`bnext_lib.nbclean`): only
    the outputs nbval checks, the project's kernelspec and the stored ``language_info`` version."""
    import tempfile

    import nbformat
    import papermill as pm

    from . import nbclean

    for name in notebooks:
        src = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        with tempfile.TemporaryDirectory() as tmp, _text_progress():
            dst = Path(tmp) / src.name
            pm.execute_notebook(str(src), str(dst), cwd=str(src.parent), kernel_name="python3", progress_bar=False)
            ran = nbformat.read(str(dst), as_version=4)
        nb = nbformat.read(str(src), as_version=4)
        executed = [c for c in ran.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        for cell, done in zip(nb.cells, executed):
            if cell.cell_type == "code":
                cell.execution_count, cell.outputs = done.execution_count, done.outputs
        version = nb.metadata.get("language_info", {}).get("version") or ran.metadata.language_info.get("version")
        nbformat.write(nbformat.from_dict(nbclean.clean(nb, version)), str(src))
        print(f"refreshed {src}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnext_lib.report", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default cpu)")
    ap.add_argument("--only", nargs="+", metavar="NOTEBOOK", help=f"a subset of {', '.join(NOTEBOOKS)}")
    ap.add_argument("--out", help="output folder (default reports/, reports/.scratch/ for smoke)")
    ap.add_argument("--no-html", dest="html", action="store_false")
    ap.add_argument("--assemble-only", action="store_true", help="only rebuild REPORT.md")
    ap.add_argument("--refresh-notebooks", action="store_true",
                    help="store the smoke outputs of the NBVAL_CHECK_OUTPUT cells in notebooks/")
    args = ap.parse_args(argv)
    try:
        get_profile(args.profile)
    except ValueError as e:
        ap.error(str(e))
    chosen = list(NOTEBOOKS)
    if args.only:
        unknown = [n for n in args.only if n not in NOTEBOOKS]
        if unknown:
            ap.error(f"unknown notebook(s) {unknown}; choose from {list(NOTEBOOKS)}")
        chosen = [n for n in NOTEBOOKS if n in args.only]
    if args.refresh_notebooks:
        refresh_notebooks(chosen)
        return 0
    # resolved here: the notebooks run in notebooks/, where a relative path would point elsewhere
    out = Path(args.out).resolve() if args.out else REPO_ROOT / "reports" / (".scratch" if args.profile == "smoke" else "")
    if not args.assemble_only:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t = time.perf_counter()
        times = execute(chosen, args.profile, out, html=args.html)
        run_path = out / "run.json"
        previous = json.loads(run_path.read_text()) if run_path.exists() and args.only else {}
        notebooks = dict(previous.get("notebooks", {}))
        for name, entry in times.items():  # a re-run from cached runs keeps the first run's wall time and counts
            res = json.loads((out / "results" / f"{name}.json").read_text())
            entry = {**entry, "runs_trained": res["runs_trained"], "runs_cached": res["runs_cached"]}
            old = notebooks.get(name, {})
            if old:
                entry.update({f"first_{k}": old.get(f"first_{k}", old.get(k))
                              for k in ("wall_s", "runs_trained", "runs_cached") if k in old})
            notebooks[name] = entry
        commit = git_commit()
        run = {"profile": args.profile, "started": previous.get("started", started),
               "commit": previous.get("commit", commit),
               "machine": machine_info(), "notebooks": notebooks,
               "wall_s": round(sum(v.get("first_wall_s", v["wall_s"]) for v in notebooks.values()), 1)}
        if args.only and previous:
            run["note"] = (f"{', '.join(chosen)} re-executed on {started} (commit {commit[:7]}) from the "
                           f"cached runs of the first invocation (commit {previous.get('commit', '?')[:7]}, started "
                           f"{previous.get('started')}); wall times are the first invocation's")
        atomic_write_text(run_path, json.dumps(run, indent=1))
        print(f"report: {(time.perf_counter() - t) / 60:.1f} min", file=sys.stderr)
    path = assemble(out)
    print(f"wrote {path}")
    if out.resolve() == (REPO_ROOT / "reports").resolve():  # the committed report: README's headline follows it
        update_readme(out)
        print(f"updated the headline of {REPO_ROOT / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
