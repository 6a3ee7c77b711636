"""What the notebooks call: a :class:`Study` (validated parameters, cached runs, the tables, figures and claims it
writes) and :class:`RunSet` (runs of several variants over seeds, compared with :func:`bnext_lib.verdicts.compare`).

A notebook opens a :class:`Study` from its ``parameters`` cell (bad parameters fail there, before any work), asks
it for runs (:meth:`Study.run`, cached under ``data/runs/`` and shared between notebooks), saves tables and figures
through it and records claims with a verdict; :meth:`Study.finish` writes ``results/<study>.json``, which
:mod:`bnext_lib.assembly` turns into ``REPORT.md``.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import TrainConfig, config_hash, teacher_config
from .landscape import Landscape, landscape_key
from . import claims
from .ledger import Ledger, cpu_kind, ledger_dir, report_dir
from . import plan
from .plan import AT_THE_END, FLOAT_TWIN, distillation_recipes, ladder_order
from .profiles import get_profile, rescaled_warmup
from .record import Record
from .runs import RunsWaiting, ensure_teachers, is_done, run_many, teacher_configs
from .verdicts import compare, cut

__all__ = ["REPO_ROOT", "NOTEBOOKS", "Study", "report_studies", "RunSet", "parse_seeds", "distillation_recipes",
           "AT_THE_END", "report_dir", "FLOAT_TWIN"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# the notebooks a report invocation runs (set by bnext_lib.report), so that a study prefetches only for those
NOTEBOOKS_ENV = "BNEXT_NOTEBOOKS"
NOTEBOOKS = ("01_architecture_study", "02_overfitting_analysis", "03_distillation", "04_augmentation_ablation")


def report_studies(profile: str, ledger: str | os.PathLike | None = None) -> list["Study"]:
    """The report's four studies at ``profile``'s own parameters (each notebook in its regime), for counting its
    runs (:func:`bnext_lib.plan.count`); nothing is trained or written."""
    return [Study(name, profile=profile, regime="full" if name == NOTEBOOKS[0] else "overfitting", ledger=ledger)
            for name in NOTEBOOKS]


# --------------------------------------------------------------------------------------------- run sets
def _unit(metric: str) -> str:
    """How a comparison prints a difference of ``metric``."""
    return "%" if metric.endswith("top1") else " pts" if metric == "gap" else ""


@dataclass
class RunSet:
    """Runs of several labelled variants over seeds.

    Attributes:
        runs: ``{(label, seed): Run}``.
        df: one row per run: label, seed, model, test/train top-1 and loss, ``train_eval_top1`` (the training
            split in eval mode, runs with ``eval_train``), gap (train - test top-1, from ``train_eval_top1`` where
            measured, else from the running top-1 on augmented batches), minutes, digest.
        cut: ``{label: why}`` of variants asked for but not trained (the profile cut them).
        profile: the :class:`~bnext_lib.profiles.Profile` the runs come from: a comparison with a variant the study
            did not even ask for (a recipe that needs more teachers than the profile has) is cut where it cuts it.
    """

    runs: dict
    df: Any
    cut: dict = field(default_factory=dict)
    profile: Any = None

    def why_cut(self, label: str) -> str | None:
        """Why ``label``'s runs are not here: cut by the profile (by name or by its patterns), else None."""
        if label in self.cut:
            return self.cut[label]
        if label not in self.labels and self.profile is not None:
            return self.profile.cut_reason(label)
        return None

    def values(self, label: str, metric: str = "test_top1") -> list[float]:
        rows = self.df[self.df.label == label]
        if rows.empty:
            raise KeyError(f"no runs labelled {label!r}; labels: {list(self.labels)}")
        return rows[metric].tolist()

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(self.df.label))

    def compare(self, better: str, worse: str, metric: str = "test_top1", lower: bool = False) -> dict:
        """:func:`~bnext_lib.verdicts.compare` on "``better`` has a higher (``lower=True``: lower) ``metric`` than
        ``worse``"."""
        why = self.why_cut(better) or self.why_cut(worse)
        if why:
            return cut(better, worse, why, lower)
        # paired by seed where both arms ran at the same seeds: they share each seed's subset and data order
        r = compare(self.values(better, metric), self.values(worse, metric), better, worse, _unit(metric), lower,
                    seeds_a=self.values(better, "seed"), seeds_b=self.values(worse, "seed"))
        return dict(r, machines=self.machines(better, worse))

    def compare_gains(self, gain: tuple[str, str], than: tuple[str, str], metric: str = "test_top1",
                      lower: bool = False) -> dict:
        """"The gain ``gain[0]`` − ``gain[1]`` exceeds ``than[0]`` − ``than[1]``" (an interaction: an augmentation's
        gain on the binary student against its float twin's), paired by seed: the four arms of one seed share its
        subset and data order, so each seed gives one difference of gains. Seeds where an arm is missing are left
        out; fewer than two common seeds compare nothing."""
        why = next(filter(None, map(self.why_cut, gain + than)), None)
        if why:
            return cut(f"{gain[0]} − {gain[1]}", f"{than[0]} − {than[1]}", why, lower)
        per_seed = {a: dict(zip(self.values(a, "seed"), self.values(a, metric))) for a in gain + than}
        seeds = sorted(set.intersection(*(set(v) for v in per_seed.values())))
        ours = [per_seed[gain[0]][s] - per_seed[gain[1]][s] for s in seeds]
        theirs = [per_seed[than[0]][s] - per_seed[than[1]][s] for s in seeds]
        r = compare(ours, theirs, f"{gain[0]} − {gain[1]}", f"{than[0]} − {than[1]}", _unit(metric), lower,
                    seeds_a=seeds, seeds_b=seeds)
        return dict(r, machines=self.machines(*gain, *than))

    def machines(self, *labels: str) -> str:
        """The kinds of machine that trained these labels' runs (from their ledger records), for a comparison's
        row in claims.csv: a report built in parts may rest on several."""
        kinds = sorted({cpu_kind(run.record["machine"]) for (label, _), run in self.runs.items() if label in labels})
        return "; ".join(kinds)

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

    def with_values(self, values, metric: str) -> "RunSet":
        """The same runs with one more per-run ``metric`` from ``values`` (a frame with ``label``, ``seed`` and
        ``metric``: a value computed after the runs, as the loss landscape's roughness)."""
        import dataclasses

        extra = values[["label", "seed", metric]]
        return dataclasses.replace(self, df=self.df.drop(columns=[metric], errors="ignore").merge(
            extra, on=["label", "seed"], how="left"))

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


def _or_nan(value) -> float:
    return math.nan if value is None else float(value)


class Study:
    """One notebook's study: validated parameters and the runs, teachers and landscapes it asks the ledger for;
    what it writes (tables, figures, claims, regime checks) is kept by its :attr:`record`
    (:class:`~bnext_lib.record.Record`), whose writing methods it offers the notebooks as its own.

    Args:
        name: the notebook's name (``01_architecture_study``...).
        profile: ``smoke`` (seconds, the notebooks' default and the tests'), ``cpu`` (the committed report) or
            ``gpu`` (paper scale).
        seeds: seeds of every compared variant (``None``: the profile's); also as text, ``'[0, 1, 2]'`` or
            ``'0,1,2'``, which is what ``papermill -p seeds '[0, 1, 2]'`` passes.
        epochs, dataset, model, device: override the profile's training settings.
        workers: runs trained side by side (``None``: the profile's).
        out_dir: where figures, tables and results go (``None``: :func:`report_dir` of the profile, so that
            neither a test nor a notebook run at another profile writes over the committed cpu report).
        regime: ``"full"`` (the profile's training settings: the architecture study) or ``"overfitting"`` (with
            the profile's over-fitting overrides: a training subset the CE student over-fits).
        ledger: the ledger runs are read from and recorded in (``None``: the profile's,
            :func:`bnext_lib.ledger.ledger_dir`).

    Raises:
        ValueError: on an unknown profile, model or dataset, or on non-positive epochs, seeds or workers,
            before anything is trained.
    """

    def __init__(self, name: str, profile: str = "smoke", seeds: Sequence[int] | None = None,
                 epochs: int | None = None, dataset: str | None = None, model: str | None = None,
                 device: str = "auto", workers: int | None = None, out_dir: str | os.PathLike | None = None,
                 regime: str = "full", ledger: str | os.PathLike | None = None):
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
        elif seeds is not None and set(seeds) & set(self.profile.choice_seeds):
            errors.append(f"seeds must not be the {profile} profile's choice seeds {list(self.profile.choice_seeds)} "
                          f"(a choice is never made on report seeds), got {list(seeds)}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            errors.append(f"workers must be a positive integer or None, got {workers!r}")
        if regime not in ("full", "overfitting"):
            errors.append(f"regime must be 'full' or 'overfitting', got {regime!r}")
        if not errors:  # the training options: TrainConfig's own validation says what is wrong
            given = {k: v for k, v in dict(dataset=dataset, model=model, device=device).items() if v is not None}
            try:
                TrainConfig(**{**self.profile.train, **self.profile.overfitting, **given}).validate()
            except (ValueError, TypeError) as e:
                errors += [line.strip() for line in str(e).splitlines()[1:]] or [str(e)]
        if errors:
            raise ValueError(f"invalid parameters for {name}:\n  " + "\n  ".join(errors))
        self.seeds = tuple(seeds) if seeds is not None else self.profile.seeds
        self.choice_seeds = self.profile.choice_seeds  # what notebook 04 chooses its recipe on (never report seeds)
        # the headline claims' comparisons: the profile's larger set, unless the caller chose the seeds
        self.headline_seeds = self.seeds if seeds is not None else (self.profile.headline_seeds or self.seeds)
        self.workers = workers or self.profile.workers
        self.threads = self.profile.threads if self.workers > 1 else None
        self.overrides = {k: v for k, v in dict(epochs=epochs, dataset=dataset, model=model).items() if v is not None}
        self.overrides["device"] = device
        self.name, self.regime = name, regime
        out = Path(out_dir).resolve() if out_dir else report_dir(profile)  # a relative out_dir: from here, now
        self.record = Record(name, out, self.profile.thresholds, regime)
        self.ledger = Ledger(ledger if ledger is not None else ledger_dir(profile))
        self.trained = self.cached = 0
        self.waiting: dict = {}
        # the digests of every run this study asked for (students, their teachers, what it prefetched): at the end
        # they are held against the plan, which counts the report's runs (bnext_lib/plan.py)
        self.asked: set[str] = set()
        self.prefetched = False
        self._given = dict(seeds=seeds, epochs=epochs, dataset=dataset, model=model, device=device, workers=workers,
                           out_dir=out_dir, ledger=self.ledger.root)
        self.t0 = time.perf_counter()

    def sibling(self, name: str) -> "Study":
        """The study of notebook ``name`` with this one's parameters (profile, seeds, overrides, ledger), in its
        own regime (the architecture study's full data, the over-fitting regime for the others)."""
        return Study(name, profile=self.profile.name, regime="full" if name == NOTEBOOKS[0] else "overfitting",
                     **self._given)

    # what the notebooks write, through the study's record
    @property
    def out(self) -> Path:
        return self.record.out

    @property
    def claims(self) -> list[dict]:
        return self.record.claims

    @property
    def notes(self) -> list[str]:
        return self.record.notes

    def table(self, df, name: str, caption: str, floatfmt: str = ".2f"):
        return self.record.table(df, name, caption, floatfmt)

    def figure(self, fig, name: str, caption: str) -> None:
        self.record.figure(fig, name, caption)

    def claim(self, key: str, result: Mapping[str, Any], where: str | None = None, **roles: Any) -> dict:
        """Record the pre-registered claim ``key`` (:mod:`bnext_lib.claims`: its statement, origin and where its
        evidence is) with ``result``; ``roles`` fill the statement's placeholders. A claim that is not registered,
        or registered for another notebook, raises."""
        c = claims.get(key)
        if c.notebook != self.name:
            raise ValueError(f"claim {key!r} is registered for {c.notebook}, not {self.name}")
        text = claims.fill(c.statement, {**self._roles(), **roles})
        return self.record.claim(key, text, result, where or c.where, c.origin)

    def verdict(self, key: str, runs: "RunSet", checks: Sequence[Mapping] = (), **roles: Any) -> dict:
        """Judge the pre-registered claim ``key`` on ``runs`` as registered (its comparisons, test and margin,
        :func:`bnext_lib.claims.judge`), gated by the regime ``checks``, and record it. ``roles``: the labels the
        registry leaves open (``weak``, ``middle``, ``strong`` teachers as the notebook measured them)."""
        roles = {**self._roles(), **roles}
        return self.claim(key, claims.judge(claims.get(key), runs, checks, **roles), **roles)

    def _roles(self) -> dict:
        student = self.settings.get("model") or "bnext_pico"
        return {"sizes": self.sizes, "student": student, **claims.size_roles(student)}

    def note(self, text: str) -> None:
        self.record.note(text)

    def check_student(self, runs, label: str) -> list[dict]:
        return self.record.check_student(runs, label)

    def check_teachers(self, ladder, runs, label: str) -> list[dict]:
        return self.record.check_teachers(ladder, runs, label) + [self.record.check_same_images(runs)]

    def check_overfitting(self, runs, label: str) -> list[dict]:
        return self.record.check_overfitting(runs, label)

    def __repr__(self) -> str:
        return (f"Study({self.name!r}, profile={self.profile.name!r}, regime={self.regime!r}, "
                f"seeds={list(self.seeds)}, workers={self.workers}, settings={self.settings})")

    @property
    def settings(self) -> dict:
        """The profile's training settings (with its over-fitting overrides in that regime) and this study's. A
        run length given here keeps the profile's warm-up as the same share of the run."""
        return self.regime_settings(self.regime)

    def regime_settings(self, regime: str) -> dict:
        """:attr:`settings` as they are in ``regime`` (``"full"`` or ``"overfitting"``)."""
        values = {**self.profile.train, **(self.profile.overfitting if regime == "overfitting" else {})}
        if "epochs" in self.overrides and values.get("warmup_epochs") is not None:
            values["warmup_epochs"] = rescaled_warmup(values["warmup_epochs"], values["epochs"],
                                                      self.overrides["epochs"])
        return {**values, **self.overrides}

    @property
    def teachers(self) -> tuple[str, ...]:
        """The profile's teacher ladder, weak to strong."""
        return self.profile.teachers

    def config(self, regime: str | None = None, evaluate: str = "rhythm", **overrides):
        """A validated :class:`~bnext_lib.train.TrainConfig`: profile, study overrides, then ``overrides``
        (``regime``: another regime's settings than this study's). ``evaluate="end"``: the validation and training
        splits are evaluated after the last epoch only, not at the regime's rhythm, for a run whose learning curve
        nothing draws (in the over-fitting regime an evaluation costs about an epoch of training)."""
        if evaluate not in ("rhythm", "end"):
            raise ValueError(f"evaluate must be 'rhythm' or 'end', got {evaluate!r}")
        values = {**self.regime_settings(regime or self.regime), "progress": False, **overrides}
        if evaluate == "end":
            values.update(eval_every=values.get("epochs", TrainConfig.epochs), eval_every_last_quarter=None,
                          test_every=None)
        if self.profile.subset_per_seed and values.get("train_subset") is not None and "seed" in overrides:
            values.setdefault("subset_seed", overrides["seed"])  # overrides may still name another draw
        if "teachers" in values:
            values["teachers"] = tuple(values["teachers"])
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg

    def configs(self, overrides: Mapping[str, Any], seeds: Sequence[int] | None = None,
                headline: bool = False) -> list[TrainConfig]:
        """One variant's configurations (:meth:`config` of ``overrides``), one per seed: ``seeds`` (default: the
        study's), or :attr:`headline_seeds` for a label a headline claim compares."""
        seeds = self.headline_seeds if headline else (tuple(seeds) if seeds is not None else self.seeds)
        return [self.config(**{**overrides, "seed": seed}) for seed in seeds]

    def run(self, variants: Mapping[str, Mapping[str, Any]], seeds: Sequence[int] | None = None,
            prefetch: bool = False, headline: bool | Sequence[str] = False,
            landscapes: bool | Sequence[str] = False) -> RunSet:
        """Every variant at every seed: from the ledger, else trained (and recorded).

        Args:
            variants: ``{label: TrainConfig overrides}``.
            seeds: default: the study's seeds.
            headline: the labels (``True``: all) a headline claim compares, trained at :attr:`headline_seeds`
                instead.
            prefetch: also train, in the same pool, what the later studies start from (:meth:`prerequisites`): a
                long teacher then overlaps these runs instead of leaving a worker idle.
            landscapes: the labels (``True``: all) whose loss landscapes (:meth:`landscapes`) are computed when
                their runs finish and kept in their records.

        Raises:
            RunsWaiting: a report part's time budget did not fit some runs; what the study recorded so far is
                written first (:meth:`finish`), saying what waits.
        """
        import pandas as pd

        seeds = tuple(seeds) if seeds is not None else self.seeds
        top = set(variants) if headline is True else set(headline or ())
        cut = {label: self.profile.cut_reason(label) for label in variants if self.profile.cut_reason(label)}
        keys = [(label, seed) for label in variants if label not in cut
                for seed in (self.headline_seeds if label in top else seeds)]
        configs = [c for label in variants if label not in cut
                   for c in self.configs(variants[label], seeds, headline=label in top)]
        done = sum(is_done(c, ledger=self.ledger) for c in configs)
        # a report part that runs none of the later notebooks (``--only``) does not train what they start from
        later = os.environ.get(NOTEBOOKS_ENV)
        prefetch = prefetch and (later is None or any(n in later.split(",") for n in NOTEBOOKS[1:3]))
        extra = self.prerequisites() if prefetch else []
        teachers = {config_hash(teacher_config(n, self.config())) for n in self.teachers} if prefetch else ()
        wanted = set(variants) if landscapes is True else set(landscapes or ())
        derive = {config_hash(c): self.landscape_specs for (label, _), c in zip(keys, configs) if label in wanted}
        # what later studies start from may wait for the next part; this study's own runs may not
        self.prefetched |= bool(extra)
        self.asked |= {config_hash(c) for c in extra + configs} | set(teacher_configs(configs))
        runs = run_many(extra + configs, workers=self.workers, threads=self.threads, ledger=self.ledger,
                        derive=derive, teachers=teachers, partial=True)[len(extra):]
        missing = [c for c, r in zip(configs, runs) if r is None]
        if missing:
            e = RunsWaiting(missing, len(configs) - len(missing))
            self.waiting = {"runs": len(e.configs), "recorded": e.done, "labels": list(variants)}
            self.finish()
            raise e
        self.cached += done
        self.trained += len(configs) - done
        rows = []
        for (label, seed), run in zip(keys, runs):
            f = run.final
            t_acc = run.teacher_top1
            seen = f.get("train_eval_top1")
            seen = f["train_top1"] if seen is None else seen
            rows.append({"label": label, "seed": seed, "model": run.config.model, "augment": run.config.augment,
                         "teachers": "+".join(t.removeprefix("timm:") for t in run.config.teachers) or "none",
                         "teacher_top1": max(t_acc.values()) if t_acc else float("nan"),
                         "test_top1": f["test_top1"], "val_top1": _or_nan(f.get("val_top1")),
                         "train_top1": f["train_top1"], "train_eval_top1": f.get("train_eval_top1", math.nan),
                         "gap": seen - f["test_top1"],
                         "test_loss": f["test_loss"], "train_loss": f["train_loss"],
                         "minutes": run.record["wall_s"] / 60, "digest": run.digest})
        if cut:
            self.note("Cut at this profile to fit its budget: " + ", ".join(f"'{c}'" for c in cut) + ".")
        columns = ["label", "seed", "model", "augment", "teachers", "teacher_top1", "test_top1", "val_top1",
                   "train_top1", "train_eval_top1", "gap", "test_loss", "train_loss", "minutes", "digest"]
        df = pd.DataFrame(rows, columns=columns)
        return RunSet(dict(zip(keys, runs)), df, cut, self.profile)

    def prerequisites(self) -> list:
        """The runs every later study starts from: the profile's teachers (strongest first) and, where the profile
        has an over-fitting regime, its CE student at every seed (the baseline its regime checks measure)."""
        out = [teacher_config(n, self.config()) for n in reversed(self.teachers)]
        if self.profile.overfitting:
            out += [self.config("overfitting", seed=s) for s in self.headline_seeds]
        return out

    def teacher_table(self, names: Sequence[str] | None = None):
        """Train (or find) the profile's teachers; their test/train top-1, size and cost, weak to strong."""
        import pandas as pd

        names = list(names or self.teachers)
        base = self.config(teachers=tuple(names))
        self.asked |= set(teacher_configs([base]))
        try:
            runs = ensure_teachers([base], self.workers, self.threads, self.ledger)
        except RunsWaiting as e:
            self.waiting = {"runs": len(e.configs), "recorded": e.done, "labels": names}
            self.finish()
            raise
        rows = []
        for n in names:
            t_cfg = teacher_config(n, base)
            run = runs[config_hash(t_cfg)]
            rows.append({"teacher": n, "test_top1": run.final["test_top1"],
                         "val_top1": _or_nan(run.final.get("val_top1")),
                         "train_top1": run.final.get("train_top1", float("nan")),
                         "params_M": run.record["params"] / 1e6, "epochs": t_cfg.epochs,
                         "train_images": t_cfg.train_subset or "all", "recipe": base.teacher_recipe,
                         "minutes": run.record["wall_s"] / 60})
        return pd.DataFrame(rows).set_index("teacher")

    @property
    def landscape_specs(self) -> list[tuple]:
        """The profile's loss-landscape grid as derived values of a run (:func:`bnext_lib.runs.run_one`), one per
        direction seed (``directions`` of :attr:`~bnext_lib.profiles.Profile.landscape`)."""
        g = self.profile.landscape
        return [("landscape", g["steps"], g["span"], g["images"], d) for d in range(g.get("directions", 1))]

    def landscapes(self, runset: RunSet, labels: Sequence[str]) -> dict:
        """Loss-landscape slices (the profile's grid, the same direction seeds for every model) of every seed's run
        of each label, ``{(label, seed): [Landscape per direction seed]}``: from the runs' records (:meth:`run`
        with ``landscapes``), else computed side by side from the weights on this machine and recorded."""
        keys = [(label, seed) for label in labels for (lab, seed) in runset.runs if lab == label]
        specs = self.landscape_specs
        configs = [runset.runs[k].config for k in keys]
        runs = run_many(configs, workers=self.workers, threads=self.threads, ledger=self.ledger, verbose=False,
                        derive={config_hash(c): specs for c in configs})
        names = [landscape_key(*spec[1:]) for spec in specs]
        return {k: [Landscape.from_dict(r.record["derived"][n]) for n in names] for k, r in zip(keys, runs)}

    def ladder(self):
        """The teacher table sorted weak to strong by measured validation top-1 (test top-1 without a validation
        split): the ladder the studies use."""
        table = self.teacher_table()
        return table.loc[ladder_order(list(table.index), list(table["val_top1"]), list(table["test_top1"]))]

    @property
    def sizes(self) -> tuple[str, ...]:
        """Two student sizes for the augmentation study (the profile's)."""
        return self.profile.sizes

    def finish(self) -> dict:
        """Write ``results/<name>.json`` (parameters, tables, figures, claims, run counts, wall time). A study that
        got all its runs asks the plan whether it counts exactly those (:func:`bnext_lib.plan.unplanned`) and warns
        where not: the report's "n of N" would be wrong."""
        wall = round(time.perf_counter() - self.t0, 1)
        if not self.waiting and self.asked:
            extra, missing = plan.unplanned(self, self.asked, self.prefetched)
            if extra or missing:
                warnings.warn(f"{self.name}: the plan (bnext_lib/plan.py) does not count what this notebook asked "
                              f"for: {len(extra)} run(s) asked but not planned ({', '.join(extra[:3])}), "
                              f"{len(missing)} planned but not asked ({', '.join(missing[:3])})")
        r = self.record
        r.write_results({"study": self.name, "profile": self.profile.name, "regime": self.regime,
                            "seeds": list(self.seeds), "headline_seeds": list(self.headline_seeds),
                            "settings": self.settings, "teachers": list(self.teachers),
                            "workers": self.workers, "threads": self.threads, "runs_trained": self.trained,
                            "runs_cached": self.cached, "wall_s": wall, "ledger": self.ledger.root.name,
                            **({"waiting": self.waiting} if self.waiting else {})})
        return {"claims": len(r.claims), "tables": len(r.tables), "figures": len(r.figures),
                "runs_trained": self.trained, "runs_cached": self.cached, "wall_s": wall}
