"""What a claim is: the pre-registered protocol of the report, one declarative registry that the notebooks, the
assembly and the docs all read.

Each :class:`Claim` says where the hypothesis comes from (the paper's abstract, the official code, README or an
issue, or this project), which arms of which study it compares, its comparisons (every one must hold: the claim's
p is the largest of its parts', :func:`~bnext_lib.verdicts.claim_p`) and which one stands for it, the test
(superiority, or equivalence by TOST within the smallest effect of interest for "does not help"), and the smallest
effect of interest with where that number comes from. The paper's body was not reachable, so no effect size of the
paper is known: the smallest effects of interest are the effects this project measured in its v2 cpu run and its
gpu run (the larger one's magnitude where both exist), floored at :data:`FLOOR`, or the floor where neither ran.

The seeds follow from a power analysis (:func:`power_table`): 80 % power at Holm's strictest level (0.05 over the
family of claims tested by runs) for each part of a claim, so that the claim's joint power is 80 %, from the
per-seed standard deviation measured on choice seeds (``benchmarks/variance_budget.py``, never the report's seeds)
and the pairing correlation; never fewer than :data:`MIN_SEEDS` a side. A claim whose seeds do not fit the
profile's budget runs at what fits, and the table states the effect those seeds can detect; a claim whose every
comparison the profile cuts (:attr:`~bnext_lib.profiles.Profile.cut`) runs none there.

    python -m bnext_lib.claims --profile cpu            # the protocol and its power table
    python -m bnext_lib.claims --profile cpu --markdown docs/protocol.md
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["Part", "Claim", "CLAIMS", "FLOOR", "MIN_SEEDS", "get", "fill", "parts_of", "judge", "size_roles",
           "variance_budget", "power_table", "protocol_markdown", "SOURCE_KINDS", "run_costs", "teacher_images_ratio"]

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOOR = 0.5  # points of test top-1: below it, one run under two CPU kernels moves more (kernel_variance.csv)
MIN_SEEDS = 5
SOURCE_KINDS = ("paper abstract", "official code", "official README", "official issue", "project")


@dataclass(frozen=True)
class Part:
    """One comparison: ``better`` has a higher (``lower``: lower) ``metric`` than ``worse``; or, with
    ``test="equivalence"``, the two differ by less than the claim's smallest effect of interest. Labels may name
    roles (``{strong}``) that the notebook fills from what it measured; ``each="size"`` repeats the part for every
    item of the role ``sizes`` (the student sizes: ``{size}``; an item that is a mapping fills several roles)."""

    better: str
    worse: str
    metric: str = "test_top1"
    lower: bool = False
    test: str = "superiority"
    each: str | None = None
    effect: float | None = None  # this comparison's smallest effect of interest, where not the claim's
    effect_source: str = ""
    # (better', worse'): the comparison is of gains, "better - worse exceeds better' - worse'" per seed (an
    # interaction: is an effect larger in one network than in another?); four arms, so σ √2 where two have σ
    than: tuple[str, str] | None = None

    def label(self) -> str:
        op = "≈" if self.test == "equivalence" else "<" if self.lower else ">"
        suffix = f" ({self.metric})" if self.metric != "test_top1" else ""
        if self.than:
            return f"({self.better} − {self.worse}) {op} ({self.than[0]} − {self.than[1]}){suffix}"
        return f"{self.better} {op} {self.worse}{suffix}"

    @property
    def arms(self) -> tuple[str, ...]:
        return (self.better, self.worse) + (self.than or ())


@dataclass(frozen=True)
class Claim:
    """One pre-registered claim. ``origin``: whose hypothesis (``"paper"`` or ``"project"``); ``source``: one of
    :data:`SOURCE_KINDS`, ``reference``: the sentence, file or issue; ``regime``: the study's regime (``"full"``,
    ``"overfitting"``) or ``"none"`` for a measurement without runs; ``effect``: the smallest effect of interest
    in the primary metric's unit (the equivalence margin for an equivalence claim), ``effect_source`` where it
    comes from."""

    key: str
    notebook: str
    statement: str
    origin: str
    source: str
    reference: str
    regime: str
    arms: tuple[str, ...]
    parts: tuple[Part, ...] = ()
    primary: int = 0
    effect: float = FLOOR
    effect_source: str = f"no measured effect: the floor, {FLOOR} points"
    where: str = ""
    metric_unit: str = "points"
    notes: str = ""
    seeds_key: str = field(default="seeds")  # the profile's seeds it runs at: "seeds" or "headline_seeds"
    # its arms are students of teachers: the teachers' regime checks gate it, their roles and whether they learn
    # from the student's own images (Study.check_teachers)
    distilled: bool = False

    @property
    def test(self) -> str:
        if not self.parts:
            return "measurement"
        return "equivalence (TOST)" if self.parts[0].test == "equivalence" else "superiority (one-sided)"


def _measured(v2: float | None, gpu: float | None, what: str) -> dict:
    """The smallest effect of interest from the measured v2 cpu and gpu effects (their larger magnitude), floored."""
    seen = [abs(x) for x in (v2, gpu) if x is not None]
    said = ", ".join(f"{name} {x:+.2f}" for name, x in (("v2 cpu", v2), ("gpu", gpu)) if x is not None)
    if not seen:
        return dict(effect=FLOOR, effect_source=f"no measured effect: the floor, {FLOOR} points")
    return dict(effect=round(max(max(seen), FLOOR), 2),
                effect_source=f"measured {what}: {said}" + (f"; floored at {FLOOR}" if max(seen) < FLOOR else ""))


_ABL = ("ELM + IR (BNext)", "ELM only", "IR only", "neither")
_BLOCKS = ("BNext", "plain binary", "Bi-Real", "ReActNet")
_KD = "reports/claims.csv (v2 cpu, 3 seeds) and reports/gpu/claims.csv (5 seeds)"

CLAIMS: dict[str, Claim] = {c.key: c for c in [
    Claim("cost_order", "01_architecture_study", "BNext-T < S < M < L in cost, matching the README's OPs",
          "paper", "official README", "the model table's OPs column: 0.077, 0.172, 0.317, 0.819 G", "none",
          ("bnext_tiny", "bnext_small", "bnext_middle", "bnext_large"), where="table 01_cost_imagenet",
          notes="counted from the architecture (torch's FLOP counter), no runs"),
    Claim("elm_ir_order", "01_architecture_study",
          "Ablation order: neither < ELM only, IR only < ELM + IR (test top-1)", "paper", "official code",
          "bnext.py's --elm-attention / --infor-recoupling switches (the paper's ablation table was not reachable)",
          "full", _ABL,
          (Part(_ABL[0], _ABL[3]), Part(_ABL[0], _ABL[1]), Part(_ABL[0], _ABL[2]), Part(_ABL[1], _ABL[3]),
           Part(_ABL[2], _ABL[3])),
          **_measured(1.09, 0.44, "ELM + IR > neither"), where="table 01_ablation, figure 01_ablation_curves",
          seeds_key="headline_seeds"),
    Claim("bnext_vs_earlier", "01_architecture_study",
          "BNext's block beats plain binary, Bi-Real and ReActNet blocks (test top-1)", "paper", "paper abstract",
          "TMLR: the BNext family outperforms previous binary networks \"under different capacity levels\"", "full",
          _BLOCKS, tuple(Part("BNext", o) for o in _BLOCKS[1:]), where="table 01_blocks, figure 01_blocks_bars",
          seeds_key="headline_seeds"),
    Claim("size_order", "01_architecture_study",
          "Accuracy rises with the student's size: {capacities} (test top-1)", "paper",
          "official README", "the model table: BNext-T 72.4 < S 76.1 < M 78.3 < L 80.6 % ImageNet top-1", "full",
          ("bnext_pico", "bnext_nano", "{student}"), (Part("{bigger}", "{smaller}", each="step"),),
          where="table 01_sizes"),
    Claim("progressive", "01_architecture_study",
          "Progressive binarization, which keeps the latent weights unbinarized for the first ~30 % of the run (a "
          "float-weight warm-up), trains a better binary model than sign from the first step", "paper",
          "official issue", "hpi-xnor/BNext issue #5 and the temperature schedule of the official training script; "
          "what is compared is a float-weight warm-up: the latent weights stay unbinarized for ~30 % of the run",
          "full", ("float-weight warm-up (τ → 0 at 30 %)", "sign from the first step"),
          (Part("float-weight warm-up (τ → 0 at 30 %)", "sign from the first step"),), where="table 01_progressive"),
    Claim("landscape", "01_architecture_study",
          "BNext's loss landscape is smoother than the earlier blocks' (roughness)", "paper", "official README",
          "the README's loss-landscape figures (naive binarization, Bi-Real, Real2Binary, BNext)", "full",
          _BLOCKS, tuple(Part("BNext", o, metric="roughness", lower=True) for o in _BLOCKS[1:]),
          effect=0.5, effect_source="no measured effect; half a roughness unit (BNext alone varied 2.86-4.38 "
          "between seeds in v2)", where="table 01_landscape, figure 01_landscape", metric_unit="roughness",
          notes="a run's roughness is the mean over the profile's direction seeds; their spread within a run is "
          "part of the seed-to-seed σ the seeds are planned with (variance_budget.py --landscapes)"),
    Claim("overfitting", "02_overfitting_analysis",
          "Counter-intuitive overfitting: the strongest teacher's student has a wider train-test gap than the "
          "weakest teacher's, and no better test top-1 than the middle teacher's", "paper", "paper abstract",
          "arXiv: \"the counter-intuitive overfitting problem observed when attempting to train extremely accurate "
          "binary models\"", "overfitting", ("CE only", "KD from {weak}", "KD from {middle}", "KD from {strong}"),
          (Part("KD from {strong}", "KD from {weak}", metric="gap"),
           Part("KD from {middle}", "KD from {strong}", effect=0.5,
                effect_source="measured middle - strongest teacher's student: gpu +0.23; floored at 0.5")),
          **_measured(2.38, 1.96, "gap strongest - weakest teacher's student"),
          where="table 02_overfitting, figure 02_overfitting", distilled=True),
    Claim("kd_vs_ce", "02_overfitting_analysis", "Distillation from the strongest single teacher beats "
          "cross-entropy alone", "paper", "paper abstract",
          "arXiv: a knowledge-distillation technique proposed against the over-fitting", "overfitting",
          ("KD from {strong}", "CE only"), (Part("KD from {strong}", "CE only"),),
          **_measured(0.60, 0.52, "KD from the strongest - CE"), where="table 02_overfitting", distilled=True),
    Claim("multi_teacher", "03_distillation",
          "Two teachers (weak assistant + strong main, adaptive α) beat the strong teacher alone", "paper",
          "official code", "train_assistant_group_amp.py: an assistant and a main teacher active at every step",
          "overfitting", ("two, adaptive (batch)", "single strong"), (Part("two, adaptive (batch)", "single strong"),),
          **_measured(-1.64, -1.77, "two teachers - strong alone"), where="table 03_distillation",
          seeds_key="headline_seeds", distilled=True),
    Claim("adaptive", "03_distillation", "Adaptive α beats a fixed 0.5/0.5 split of the same two teachers", "paper",
          "official code", "KD_loss.py: per-teacher weights from a softmax of the student's losses",
          "overfitting", ("two, adaptive (batch)", "two, fixed 0.5/0.5"),
          (Part("two, adaptive (batch)", "two, fixed 0.5/0.5"),), **_measured(0.40, 0.10, "adaptive - fixed"),
          where="table 03_distillation, figure 03_alpha", distilled=True),
    Claim("instance", "03_distillation",
          "Per-instance α beats per-batch α (the official code effectively uses per-batch)", "project", "project",
          "a quirk of KD_loss.py: the per-instance branch is never taken", "overfitting",
          ("two, adaptive (instance)", "two, adaptive (batch)"),
          (Part("two, adaptive (instance)", "two, adaptive (batch)"),),
          **_measured(-0.53, -0.26, "instance - batch"), where="table 03_distillation", distilled=True),
    Claim("consecutive", "03_distillation",
          "Consecutive KD (assistants weak → middle, strong main) beats a fixed weak assistant at equal epochs",
          "paper", "paper abstract", "TMLR: consecutive knowledge distillation, \"a novel multi-round optimization "
          "technique\"", "overfitting", ("consecutive (weak→mid, strong)", "two, adaptive (batch)"),
          (Part("consecutive (weak→mid, strong)", "two, adaptive (batch)"),),
          **_measured(None, 0.40, "consecutive - fixed weak assistant"), where="table 03_distillation",
          distilled=True),
    Claim("randaugment", "04_augmentation_ablation",
          "RandAugment m7 helps the binary student: crop + flip + RandAugment (released) beats crop + flip, and "
          "RandAugment alone beats no augmentation", "paper", "paper abstract",
          "arXiv: the augmentation pipeline \"modernized with up-to-date techniques from full-precision models\"; "
          "the released recipe's rand-m7-mstd0.5-inc1", "overfitting",
          ("{size} / released", "{size} / basic", "{size} / randaugment", "{size} / none"),
          (Part("{size} / released", "{size} / basic", each="size"),
           Part("{size} / randaugment", "{size} / none", each="size")),
          where="table 04_augmentation, figure 04_augmentation_heatmap", seeds_key="headline_seeds"),
    Claim("randaugment_binary", "04_augmentation_ablation",
          "RandAugment's gain is larger for the binary student than for its float twin (the same network without "
          "quantizers): what the modernized augmentation does is specific to binary networks", "project", "project",
          "a regime that over-fits favours any regulariser, so RandAugment's gain on the binary student says "
          "nothing binary-specific without the same gain measured on the same network in full precision",
          "overfitting", ("{student} / released", "{student} / basic", "{student} / randaugment", "{student} / none",
                          "{student} float twin / released", "{student} float twin / basic",
                          "{student} float twin / randaugment", "{student} float twin / none"),
          (Part("{student} / released", "{student} / basic",
                than=("{student} float twin / released", "{student} float twin / basic")),
           Part("{student} / randaugment", "{student} / none",
                than=("{student} float twin / randaugment", "{student} float twin / none"))),
          where="table 04_augmentation, figure 04_augmentation_heatmap", seeds_key="headline_seeds",
          notes="per seed, the binary student's gain minus the float twin's; the float twin drops only the "
                "quantizers (bnext_lib.models, binary=False) and trains under the same recipe"),
    Claim("label_mixing", "04_augmentation_ablation",
          "Mixup and cutmix do not help the binary student (the released recipe turns them off)", "paper",
          "official code", "the released run scripts: mixup and cutmix alpha 0", "overfitting",
          ("{size} / none", "{size} / mixup", "{size} / cutmix"),
          (Part("{size} / mixup", "{size} / none", test="equivalence", each="size"),
           Part("{size} / cutmix", "{size} / none", test="equivalence", each="size")),
          where="table 04_augmentation",
          notes="equivalence within ±the smallest effect of interest: \"does not help\" is not \"hurts\""),
]}


def get(key: str) -> Claim:
    """The registered claim ``key``; an unknown key raises ``KeyError`` naming the registered ones."""
    if key not in CLAIMS:
        raise KeyError(f"claim {key!r} is not pre-registered in bnext_lib.claims; registered: {sorted(CLAIMS)}")
    return CLAIMS[key]


def fill(text: str, roles: Mapping[str, Any]) -> str:
    """``text`` with its role placeholders (``{strong}``) filled from ``roles``."""
    try:
        return text.format(**roles)
    except KeyError as e:
        raise KeyError(f"{text!r} names the role {e.args[0]!r}, which the notebook did not give") from None


def parts_of(claim: Claim, **roles: Any) -> list[Part]:
    """The claim's comparisons with their roles filled (``sizes`` repeats the ``each="size"`` parts)."""
    out = []
    for p in claim.parts:
        for item in (roles.get(p.each + "s") or ()) if p.each else (None,):
            r = roles if item is None else dict(roles, **(item if isinstance(item, Mapping) else {p.each: item}))
            out.append(Part(fill(p.better, r), fill(p.worse, r), p.metric, p.lower, p.test, None, p.effect,
                            p.effect_source, tuple(fill(t, r) for t in p.than) if p.than else None))
    return out


def judge(claim: Claim, runs, checks: Sequence[Mapping] = (), **roles: Any) -> dict:
    """The claim's verdict from a :class:`~bnext_lib.study.RunSet`: every comparison as registered (superiority by
    :meth:`RunSet.compare`, equivalence by TOST within the smallest effect of interest), combined, then gated by
    the regime ``checks``. A part whose arm the roles leave out (no middle teacher at a profile) is cut."""
    from .verdicts import combine, cut, equivalence, gate

    results = []
    for p in parts_of(claim, **roles):
        why = next(filter(None, map(runs.why_cut, p.arms)), None)
        missing = [a for a in p.arms if a not in runs.labels and a not in runs.cut]
        if why or missing:
            results.append(cut(p.better, p.worse, why or f"{', '.join(missing)} not run at this profile", p.lower))
        elif p.than:
            results.append(runs.compare_gains((p.better, p.worse), p.than, p.metric, p.lower))
        elif p.test == "equivalence":
            results.append(dict(equivalence(runs.values(p.better, p.metric), runs.values(p.worse, p.metric),
                                            claim.effect, p.better, p.worse, seeds_a=runs.values(p.better, "seed"),
                                            seeds_b=runs.values(p.worse, "seed")),
                                machines=runs.machines(p.better, p.worse)))
        else:
            results.append(runs.compare(p.better, p.worse, p.metric, p.lower))
    return gate(combine(results, claim.primary), checks)


# --------------------------------------------------------------------------------------------- power
def _tables(profile: str, root: Path | None = None) -> Path:
    """Where the plan's measurements are: ``root``, else the profile's own report tables."""
    from .ledger import report_dir

    return Path(root or report_dir(profile) / "tables")


def variance_budget(regime: str, profile: str = "cpu", root: Path | None = None) -> dict[str, float]:
    """The per-seed standard deviations to plan ``regime``'s seeds with, measured on choice seeds
    (``benchmarks/variance_budget.py``): the larger of the "all" row's σ (every source varied as the report's seeds
    vary them) at the upper end of its 90 % interval, and the σ the sources varied one at a time add up to
    (independent sources: their variances add), for a σ from a handful of runs is planned with conservatively.
    ``{"test_top1": σ, "gap": σ, "runs": n, "from": which}``, and ``"roughness"`` (the loss landscape's, at the
    upper end of its 90 % interval) where ``variance_budget.py --landscapes`` measured it; empty when the "all" row
    is not measured yet."""
    import pandas as pd

    path = _tables(profile, root) / f"variance_budget_{regime}.csv"
    if not path.exists():
        return {}
    df = pd.read_csv(path)
    row = df[df.source.str.startswith("all")]
    if row.empty or row.runs.iloc[0] < 2:
        return {}
    alone = df[df.source.isin(["initialisation", "data order", "subset"]) & (df.runs >= 2)]
    added = float(math.sqrt((alone.sd ** 2).sum())) if len(alone) else 0.0
    upper = float(row.sd_hi90.iloc[0])
    # run 0 of every source is one run (every seed at the base), counted once
    out = {"test_top1": max(upper, added), "runs": int(row.runs.iloc[0]) + int((alone.runs - 1).sum()),
           "from": "the sources added up" if added > upper else "the 'all' row's upper 90 % bound"}
    if "gap_sd" in df.columns and not math.isnan(row.gap_sd.iloc[0]):
        gap_added = float(math.sqrt((alone.gap_sd.fillna(0) ** 2).sum())) if len(alone) else 0.0
        factor = upper / float(row.sd.iloc[0]) if row.sd.iloc[0] > 0 else 1.0  # the same chi-square factor
        out["gap"] = max(float(row.gap_sd.iloc[0]) * factor, gap_added)
    # the loss landscape's roughness (variance_budget.py --landscapes): its own seed-to-seed σ at the upper bound
    if {"roughness_sd_hi90", "roughness_runs"} <= set(df.columns) and row.roughness_runs.iloc[0] >= 2:
        out["roughness"] = float(row.roughness_sd_hi90.iloc[0])
    return out


def pairing(regime: str, profile: str = "cpu", root: Path | None = None, metric: str = "test_top1") -> dict:
    """The pairing correlation ρ of ``metric`` to plan ``regime``'s paired comparisons with, measured on choice seeds
    (``benchmarks/variance_budget.py --pair``: two arms at the same seeds): the lowest lower end of the 90 %
    intervals over the pairs measured, floored at 0 (a smaller ρ asks for more seeds: the conservative side).
    ``{"rho", "pairs", "runs"}``; empty where no pair was measured on four seeds or more."""
    import pandas as pd

    path = _tables(profile, root) / f"pairing_{regime}.csv"
    if not path.exists():
        return {}
    df = pd.read_csv(path).dropna(subset=["rho_lo90"])
    metrics = df["metric"].fillna("test_top1") if "metric" in df.columns else pd.Series("test_top1", index=df.index)
    df = df[metrics == metric]
    if df.empty:
        return {}
    return {"rho": max(0.0, float(df.rho_lo90.min())), "pairs": len(df), "runs": int(df.runs.sum())}


def run_costs(profile: str = "cpu") -> dict[str, dict]:
    """Measured wall seconds of one single-thread run per regime, from the profile's choice ledger (the variance
    budget's binary CE students of the profile's student model; not the teachers, the float twins that
    capacity_teachers.py trains there, nor the other blocks a ``--pair`` trains): ``{regime: {"median_s", "runs",
    "machines"}}``, empty where nothing was measured."""
    from .ledger import Ledger, cpu_kind, ledger_dir
    from .profiles import get_profile

    student = get_profile(profile).train.get("model")
    walls: dict[str, list] = {}
    kinds: dict[str, set] = {}
    for r in Ledger(ledger_dir(profile, choice=True)).records(skip_bad=True):
        cfg = r["config"]
        if cfg.get("model") != student or cfg.get("threads") not in (1, None) or cfg.get("binary") is False:
            continue
        regime = "overfitting" if cfg.get("train_subset") else "full"
        walls.setdefault(regime, []).append(float(r["wall_s"]))
        kinds.setdefault(regime, set()).add(cpu_kind(r["machine"]))
    return {k: dict(median_s=float(statistics.median(v)), runs=len(v), machines="; ".join(sorted(kinds[k])))
            for k, v in walls.items()}


def _tost_seeds(margin: float, sd: float, rho: float, level: float, power: float, minimum: int) -> int:
    """Seeds a side for TOST (paired) to show equivalence within ``margin`` when the true difference is 0: each
    one-sided test at ``level`` needs power 1 - (1 - power) / 2."""
    from .verdicts import seeds_needed

    return seeds_needed(margin, sd, rho, 1, level, 1 - (1 - power) / 2, minimum)


def _rho_lookup(profile: str, rho: float | None):
    """``rho_of(regime, metric)``: ``rho`` where given; else the metric's own measured ρ (:func:`pairing`), top-1's
    for the gap (read from the same runs), 0 where none was measured (conservative: a paired test then needs as
    many seeds as an unpaired one); each table read once."""
    cache: dict[tuple[str, str], float] = {}

    def rho_of(regime: str, metric: str) -> float:
        if rho is not None:
            return rho
        if (regime, metric) not in cache:
            own = pairing(regime, profile, metric=metric)
            if not own and metric == "gap":
                own = pairing(regime, profile)
            cache[(regime, metric)] = own.get("rho", 0.0)
        return cache[(regime, metric)]
    return rho_of


def power_table(profile: str = "cpu", rho: float | None = None, sigmas: Mapping[str, Mapping[str, float]] | None = None,
                costs: Mapping[str, Mapping] | None = None):
    """One row per claim: its test, parts, smallest effect of interest, σ (choice seeds) and ρ, the seeds a side
    the power analysis asks for, the seeds the profile runs, and the effect those seeds detect at 80 % power at
    Holm's strictest level. ``rho``: the pairing correlation to assume for every comparison; ``None``: each
    comparison's metric's measured one (:func:`_rho_lookup`). A claim the profile cuts an arm of every comparison
    of (:attr:`~bnext_lib.profiles.Profile.cut`) runs no seeds and costs nothing there."""
    import pandas as pd

    from .profiles import get_profile
    from .verdicts import ALPHA, POWER, detectable_shift, seeds_needed

    prof = get_profile(profile)
    level = ALPHA / sum(1 for c in CLAIMS.values() if c.parts)
    sigmas = dict(sigmas) if sigmas is not None else {r: variance_budget(r, profile) for r in ("full", "overfitting")}
    costs = dict(costs) if costs is not None else run_costs(profile)
    rho_of = _rho_lookup(profile, rho)
    rows = []
    for c in CLAIMS.values():
        parts = parts_of(c, **_counting_roles(prof))
        cut = {a for p in parts for a in _cut_arms(p, prof)}
        seeds_run = 0 if not parts or _every_part_cut(c, prof) else len(getattr(prof, c.seeds_key) or prof.seeds)
        row = dict(claim=c.key, notebook=c.notebook[:2], origin=c.origin, source=c.source, test=c.test,
                   comparisons=len(parts), effect=c.effect, effect_source=c.effect_source, sigma=math.nan,
                   rho=math.nan, seeds_needed=math.nan, seeds_run=seeds_run, detectable=math.nan,
                   cpu_s=(len(c.arms) - len(cut)) * seeds_run * costs.get(c.regime, {}).get("median_s", math.nan)
                   if seeds_run else 0.0)
        measured = sigmas.get(c.regime) or {}
        sds = [measured.get(p.metric) for p in parts]
        if parts and all(sds):
            part_power = POWER ** (1 / len(parts))  # every part must hold: the claim's joint power
            needed, detectable = [], []
            for p, sd in zip(parts, sds):
                r = rho_of(c.regime, p.metric)
                effect = p.effect if p.effect is not None else c.effect
                sd = sd * math.sqrt(2) if p.than else sd  # a difference of two gains: four arms' variances
                if p.test == "equivalence":  # TOST: each one-sided test at power 1 - (1 - power) / 2
                    needed.append(_tost_seeds(effect, sd, r, level, part_power, MIN_SEEDS))
                    power = 1 - (1 - part_power) / 2
                else:
                    needed.append(seeds_needed(effect, sd, r, 1, level, part_power, MIN_SEEDS))
                    power = part_power
                detectable.append(detectable_shift(seeds_run, sd * math.sqrt(2 * (1 - r)), level, power)
                                  if seeds_run else math.nan)
            row.update(sigma=sds[c.primary], rho=rho_of(c.regime, parts[c.primary].metric), seeds_needed=max(needed),
                       detectable=detectable[c.primary])
        rows.append(row)
    return pd.DataFrame(rows).set_index("claim")


def _cut_arms(part: Part, prof) -> list[str]:
    """The arms of a (filled) comparison that ``prof`` does not train."""
    return [a for a in part.arms if prof.cut_reason(a)]


def _every_part_cut(claim: Claim, prof) -> bool:
    """Whether ``prof`` cuts an arm of every comparison of ``claim`` (it then runs none of them)."""
    parts = parts_of(claim, **_counting_roles(prof))
    return bool(parts) and all(_cut_arms(p, prof) for p in parts)


def cut_claims(profile: str) -> dict[str, list[str]]:
    """``{claim: [arms cut]}`` of the claims with a comparison the profile cuts (:attr:`Profile.cut`)."""
    from .profiles import get_profile

    prof = get_profile(profile)
    out = {}
    for c in CLAIMS.values():
        arms = [a for p in parts_of(c, **_counting_roles(prof)) for a in _cut_arms(p, prof)]
        if arms:
            out[c.key] = list(dict.fromkeys(arms))
    return out


def size_roles(student: str) -> dict:
    """The size claim's roles: the students of rising cost up to ``student`` and each step between two."""
    capacities = list(dict.fromkeys(["bnext_pico", "bnext_nano", student]))
    return dict(capacities=" < ".join(capacities),
                steps=[dict(smaller=a, bigger=b) for a, b in zip(capacities, capacities[1:])])


def _counting_roles(profile) -> dict:
    """Roles to count a claim's comparisons at ``profile`` (a middle teacher where it has three)."""
    return dict(weak="weak", middle="middle", strong="strong", sizes=profile.sizes, student=profile.train["model"],
                **size_roles(profile.train.get("model", "bnext_pico")))


def _shown_tables(profile: str) -> str:
    return str(_tables(profile).relative_to(REPO_ROOT))


def _markdown(df) -> str:
    """``df`` as Markdown: counts as integers, other numbers to two decimals, "—" where not measured."""
    def cell(v):
        if isinstance(v, float):
            return "—" if math.isnan(v) else f"{v:.0f}" if v == int(v) and abs(v) >= 5 else f"{v:.2f}"
        return str(v)
    rows = [[cell(v) for v in r] for r in df.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def teacher_images_ratio(profile: str) -> float | None:
    """How many training images the profile's teachers learn from per image its distilled students learn from
    (the over-fitting regime's), the largest over its teachers: 1 where they learn from the same images; None where
    a dataset's size is not known without reading it. What ``Study.check_teachers`` measures of the runs, known
    from the profile before any runs."""
    from .config import TrainConfig, teacher_config
    from .data import training_images
    from .profiles import get_profile

    p = get_profile(profile)
    student = TrainConfig(**{**p.train, **p.overfitting})
    mine = training_images(student.dataset, student.train_subset, student.val_split)
    theirs = [training_images(t.dataset, t.train_subset, t.val_split)
              for t in (teacher_config(name, student) for name in p.teachers)]
    if not mine or not theirs or None in theirs:
        return None
    return max(theirs) / mine


def _capacity_lines(profile: str) -> list[str]:
    """What was measured of teachers trained on the student's own images (the profile's tables, where it has
    them): timm teachers on a subset (``teacher_ladder.py --subset``), and each candidate of
    ``benchmarks/capacity_teachers.py`` with its mean validation lead over the binary student of its seed."""
    import pandas as pd

    from .ledger import report_dir

    lines = []
    same = report_dir(profile) / "tables" / "teachers_same_data.csv"
    if same.exists():
        t = pd.read_csv(same)
        lines.append("timm teachers trained on a subset of the student's images (`benchmarks/teacher_ladder.py "
                     f"--subset`, `{_shown_tables(profile)}/teachers_same_data.csv`): "
                     + "; ".join(f"{r.teacher.removeprefix('timm:')} {r.epochs} epochs on {r.train_images:,} images, "
                                 f"{r.val_top1:.2f} % validation top-1" for r in t.itertuples()) + ".")
    path = report_dir(profile) / "tables" / "capacity_teachers.csv"
    if not path.exists():
        return lines
    df = pd.read_csv(path)
    df = df[df["arm"] != df["arm"].iloc[0]] if len(df) else df  # the first arm is the binary student itself
    said = "; ".join(f"{arm}: {g['val_lead'].mean():+.2f} points of validation top-1 over the binary CE student "
                     f"(seeds {', '.join(str(s) for s in g['seed'])}; range {g['val_lead'].min():+.2f} to "
                     f"{g['val_lead'].max():+.2f})" for arm, g in df.groupby("arm", sort=False))
    return lines + ["Teachers on the student's own images, measured on choice seeds (`benchmarks/capacity_teachers.py`"
                    f", `{_shown_tables(profile)}/capacity_teachers.csv`): {said or 'no run yet'}."]


def _design_lines(profile: str) -> list[str]:
    """The claims the profile's design cannot test (its teachers learn from images their students never see), and
    what was measured of the alternatives."""
    ratio = teacher_images_ratio(profile)
    distilled = [c.key for c in CLAIMS.values() if c.distilled]
    if ratio is not None and ratio <= 1:
        return [f"Distilled claims ({', '.join(distilled)}): the {profile} profile's teachers learn from the "
                "images their students learn from, so a teacher's lead comes from its capacity.", ""]
    why = (f"its teachers learn from {ratio:g} training images per image their students learn from"
           if ratio is not None else "the size of its teachers' training data is not known without reading it")
    return [f"**Not testable at the {profile} profile, by its design: {', '.join(distilled)}.** {why.capitalize()} "
            "(the over-fitting regime's subset against the teachers' training set), so a teacher's lead there "
            "comes partly from images its student never sees, where the paper's teachers and students learn from "
            "the same ImageNet images; the regime check \"teachers' training images per image their student "
            "learns from\" (at most 1) fails whatever the runs measure. Their runs that the profile trains are shown; "
            "their verdicts read \"not tested\", not testable at this profile.", "",
            *(line for measured in _capacity_lines(profile) for line in (measured, ""))]


def _cut_lines(profile: str) -> list[str]:
    """What the profile does not train (:attr:`~bnext_lib.profiles.Profile.cut`) and the claims that lose arms."""
    from .profiles import get_profile

    prof = get_profile(profile)
    if not prof.cut:
        return []
    cut = cut_claims(profile)
    whole = [k for k in cut if _every_part_cut(get(k), prof)]
    said = "; ".join(f"{k} ({', '.join(v)})" for k, v in cut.items()) or "none"
    return [f"**Cut at the {profile} profile** (`Profile.cut`, for its budget; the reasons are beside it in "
            f"`bnext_lib/profiles.py`): the variants {', '.join(f'`{x}`' for x in prof.cut)} are not trained, and the "
            f"comparisons that need them read \"cut\". Claims with a cut arm: {said}. "
            + (f"Every comparison of {', '.join(whole)} is cut: no seeds run above." if whole else
               "No claim loses every comparison."), ""]


def protocol_markdown(profile: str = "cpu") -> str:
    """The protocol as Markdown: the claims as registered, then the power table."""
    lines = [f"## The pre-registered protocol ({profile} profile)", "",
             "Registered in `bnext_lib/claims.py` before the runs it governs; printed by "
             f"`python -m bnext_lib.claims --profile {profile}`. Choice seeds (the variance budget, the regime and "
             "recipe choices) are never report seeds.", ""]
    lines += ["| claim | statement | source | arms | comparisons (first: primary) | test |", "|---|---|---|---|---|---|"]
    for c in CLAIMS.values():
        parts = "; ".join(p.label() + (" (each size)" if p.each else "") for p in c.parts) or "—"
        lines.append(f"| {c.key} | {c.statement} | {c.source}: {c.reference} | {', '.join(c.arms)} | {parts} | "
                     f"{c.test} |")
    table = power_table(profile)
    lines += ["", "Power: 80 % for the claim (each of its k comparisons at 0.8^(1/k)), one-sided, at Holm's "
              f"strictest level 0.05 / {sum(1 for c in CLAIMS.values() if c.parts)}; σ is the per-seed standard "
              "deviation of test top-1 (gap for the gap comparison, roughness for the landscape's) measured on "
              "choice seeds: the larger of the upper end of its 90 % interval and what the sources varied one at a "
              f"time add up to (`benchmarks/variance_budget.py --profile {profile}`, "
              f"`{_shown_tables(profile)}/variance_budget_<regime>.csv`; the roughness's with `--landscapes`, at its "
              "upper bound; a profile's own, never another's); ρ is the pairing correlation of the metric between "
              f"two arms at the same choice seeds (`variance_budget.py --pair`, `{_shown_tables(profile)}/"
              "pairing_<regime>.csv`: the lower end of its 90 % interval, floored at 0; the gap's is top-1's), 0 "
              "where none was measured (conservative); —: not measured yet.", "",
              _markdown(table.drop(columns=["effect_source"]).reset_index()), ""]
    costs = run_costs(profile)
    lines += ["CPU-seconds: the claim's arms x its seeds x the median wall seconds of one single-thread CE run of its "
              "regime measured on choice seeds (" + ("; ".join(f"{k}: {v['median_s']:.0f} s over {v['runs']} runs, "
                                                             f"{v['machines']}" for k, v in sorted(costs.items()))
                                                   or "none measured yet") + "); distilled runs add their teachers' "
              "forward passes, and arms shared between claims are counted in each.", ""]
    lines += _design_lines(profile) + _cut_lines(profile)
    lines += ["Smallest effects of interest:", ""]
    for c in CLAIMS.values():
        if c.parts:
            lines.append(f"- {c.key}: {c.effect:g} {c.metric_unit} ({c.effect_source})"
                         + "".join(f"; {p.label()}: {p.effect:g} ({p.effect_source})" for p in c.parts
                                   if p.effect is not None))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnext_lib.claims", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--markdown", metavar="FILE", help="write the protocol as Markdown to FILE")
    args = ap.parse_args(argv)
    text = protocol_markdown(args.profile)
    if args.markdown:
        from .checkpoints import atomic_write_text

        atomic_write_text(Path(args.markdown), text)
        print(f"wrote {args.markdown}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
