"""What the report trains: every notebook's batches of runs, declared once.

The notebooks ask for their batches here (``plan.ABLATION``, ``plan.blocks(model)``...) and pass them to
:meth:`~bnext_lib.study.Study.run`; :func:`notebook_runs` walks the same batches without training anything, so that
the report runner can say before a part starts, and the partial report after it, how many of the *whole* report's
runs the ledger holds (:func:`count` of :func:`bnext_lib.study.report_studies`: "n of N"), not only of the batches
a part reached.

Two batches depend on what earlier runs measured: the distillation recipes on the teacher ladder (weak to strong by
measured validation top-1) and the augmentation study on the recipe notebook 04 chooses by validation top-1 on the
profile's choice seeds (:func:`recipe_choice`), never on report seeds. Where those runs are recorded, the plan reads
its choice from the ledger as the notebooks do; where not, it assumes the profile's teacher order and the first
recipe, and says so (``assumed``). The count of runs does not depend on the ladder; it depends on the chosen recipe
by at most one arm's seeds: a two-teacher recipe, evaluated at the end, shares the augmentation study's run of the
profile's own preset (gpu: flip, paper: released), where the profile keeps it (the cpu profile cuts its flip).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .augment import GREY_DATASETS, for_images
from .config import TrainConfig, config_hash, teacher_config
from .models import EARLIER_BLOCKS
from .runs import teacher_configs

__all__ = ["ABLATION", "PROGRESSIVE", "ABLATION_LANDSCAPES", "BLOCK_LANDSCAPES", "PRESETS", "HEADLINE_PRESETS",
           "AT_THE_END", "FLOAT_TWIN", "block_models", "blocks", "capacities", "sizes", "overfitting",
           "distillation_recipes", "DISTILLATION_HEADLINE", "recipe_choice", "augmentation", "Batch", "Choices",
           "ladder_order", "choices", "batches", "notebook_runs", "sliced", "count", "unplanned"]

# a variant override: the run's validation and training splits evaluated after its last epoch only (Study.config)
AT_THE_END = {"evaluate": "end"}
# a variant override: the student's float twin (its quantizers removed), evaluated with BatchNorm statistics
# recomputed over 32 training batches; with its running statistics its eval-mode accuracy collapses (2,000 images,
# one epoch: test top-1 13.8 %, recomputed 77.8 %; the binary student 70.3 and 71.8), docs/method.md §9
FLOAT_TWIN = {"binary": False, "precise_bn": 32}

# notebook 01 ----------------------------------------------------------------------------------------------------
ABLATION = {
    "ELM + IR (BNext)": {},
    "ELM only": {"info_recoupling": False},
    "IR only": {"elm_attention": False},
    "neither": {"elm_attention": False, "info_recoupling": False},
}
PROGRESSIVE = {"float-weight warm-up (τ → 0 at 30 %)": {}, "sign from the first step": {"temperature_reach": 1e-3}}
# whose loss landscapes notebook 01 slices (its runs keep them in their records): BNext in the ablation, and every
# block (their BNext is the ablation's run)
ABLATION_LANDSCAPES = ("ELM + IR (BNext)",)
BLOCK_LANDSCAPES = True


def block_models(model: str) -> dict[str, str]:
    """The binary blocks compared at the student's cost, ``{label: model name}``: the earlier blocks
    (:data:`~bnext_lib.models.EARLIER_BLOCKS`) and BNext, the student itself."""
    return {**EARLIER_BLOCKS[model], "BNext": model}


def blocks(model: str) -> dict[str, dict]:
    return {label: ({"model": name} if name != model else {}) for label, name in block_models(model).items()}


def capacities(model: str) -> list[str]:
    """The BNext students of rising cost, cheapest first, ending with the profile's student."""
    return list(dict.fromkeys(["bnext_pico", "bnext_nano", model]))


def sizes(model: str) -> dict[str, dict]:
    return {name: ({"model": name} if name != model else {}) for name in capacities(model)}


# notebook 02 ----------------------------------------------------------------------------------------------------
def overfitting(teachers: Sequence[str]) -> dict[str, dict]:
    """CE only, and the student distilled from each teacher of the profile's ladder alone."""
    return {"CE only": {}, **{f"KD from {name.removeprefix('timm:')}": {"teachers": [name]} for name in teachers}}


# notebook 03 ----------------------------------------------------------------------------------------------------
DISTILLATION_HEADLINE = ("single strong", "two, adaptive (batch)")  # the headline claim's two: more seeds


def distillation_recipes(ladder: Sequence[str]) -> dict:
    """The distillation study's recipes from a teacher ladder ``[weak, (middle,) strong]`` (measured order).

    The two-teacher recipes pair the weak teacher as assistant with the strong one as main teacher (official
    BNext-T: EfficientNet-B0 + B2); with a middle teacher, consecutive KD runs two rounds with the weak, then the
    middle teacher as assistant and the strong one as main teacher throughout (official BNext-M: B0 -> B2 with B4).

    The CE and single-teacher recipes are runs of the over-fitting analysis too, which draws their learning curves
    (notebook 02: the same runs, cached once); the two-teacher ones are evaluated at the end only
    (``evaluate="end"``, :meth:`Study.config`), which is all their comparisons read.
    """
    if len(ladder) < 2:
        raise ValueError(f"the distillation study needs at least two teachers (weak, strong), got {list(ladder)}")
    weak, strong = ladder[0], ladder[-1]
    recipes = {
        "CE only": {},
        "single weak": {"teachers": [weak]},
        "single strong": {"teachers": [strong]},
        "two, fixed 0.5/0.5": {"teachers": [weak, strong], "kd_weighting": "fixed", **AT_THE_END},
        "two, adaptive (batch)": {"teachers": [weak, strong], **AT_THE_END},
        "two, adaptive (instance)": {"teachers": [weak, strong], "kd_granularity": "instance", **AT_THE_END},
    }
    if len(ladder) > 2:
        recipes["consecutive (weak→mid, strong)"] = {"teachers": [weak, ladder[len(ladder) // 2], strong],
                                                     **AT_THE_END}
    return recipes


# notebook 04 ----------------------------------------------------------------------------------------------------
def recipe_choice(recipes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """The runs notebook 04 chooses its distillation recipe on, by mean validation top-1 (trained at the profile's
    choice seeds, never report seeds, so that the choice carries no luck of the runs it governs): every recipe,
    evaluated at the end only, which is all the choice reads."""
    return {label: {**overrides, **AT_THE_END} for label, overrides in recipes.items()}


PRESETS = ("none", "flip", "basic", "randaugment", "mixup", "cutmix", "released")
HEADLINE_PRESETS = ("none", "basic", "randaugment", "released")  # the RandAugment claims' sides: more seeds


def augmentation(recipe: Mapping[str, Any], model: str, student_sizes: Sequence[str],
                 dataset: str) -> tuple[dict[str, dict], list[str]]:
    """The augmentation study's variants under the chosen distillation ``recipe``, ``({label: overrides},
    headline labels)``: every preset at every student size, and the student's float twin (its quantizers removed)
    under the headline presets, the arm that asks whether RandAugment's gain is binary-specific. On grey images
    RandAugment draws only the operations that change one (:func:`~bnext_lib.augment.for_images`,
    ``benchmarks/randaugment_grey.py``). No learning curve is drawn of these runs: evaluated at the end only, which
    is all their comparisons read."""
    grey = dataset in GREY_DATASETS
    twin = f"{model} float twin"
    variants = {f"{size} / {preset}": {**recipe, "model": size, "augment": for_images(preset, grey)}
                for size in student_sizes for preset in PRESETS}
    variants |= {f"{twin} / {preset}": {**recipe, "model": model, **FLOAT_TWIN, "augment": for_images(preset, grey)}
                 for preset in HEADLINE_PRESETS}
    headline = [f"{size} / {preset}" for size in (*student_sizes, twin) for preset in HEADLINE_PRESETS]
    return {label: {**v, **AT_THE_END} for label, v in variants.items()}, headline


# the whole report -----------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """One :meth:`~bnext_lib.study.Study.run` call of a notebook: its variants and which are headline labels."""

    name: str
    variants: dict
    headline: bool | Sequence[str] = False
    landscapes: bool | Sequence[str] = False  # the labels whose loss landscapes are sliced (True: all)
    choice: bool = False  # trained at the profile's choice seeds, not the report's


@dataclass
class Choices:
    """What the plan read from the ledger, or assumed where the runs that decide it are not recorded."""

    ladder: list[str]
    recipe: str
    assumed: list[str] = field(default_factory=list)


def _recorded(ledger, cfg: TrainConfig) -> dict | None:
    return ledger.get(cfg) if ledger.has(cfg) else None


def ladder_order(names: Sequence[str], val: Sequence[float | None], test: Sequence[float]) -> list[str]:
    """Teacher names weak to strong by measured validation top-1 (test top-1 where any lacks a validation split);
    a tie keeps the profile's order."""
    key = val if all(v is not None and v == v for v in val) else test
    return [n for _, n in sorted(zip(key, names), key=lambda t: t[0])]


def choices(study) -> Choices:
    """The teacher ladder and notebook 04's recipe as the notebooks measure them, read from the recorded runs of
    ``study``'s ledger and parameters (its profile, seeds, overrides; the recipe from the runs at the choice seeds,
    :func:`recipe_choice`); assumed where those runs are not recorded."""
    s = study.sibling("03_distillation")
    ledger, assumed = s.ledger, []
    base = s.config(teachers=tuple(s.teachers))
    records = [_recorded(ledger, teacher_config(n, base)) for n in s.teachers]
    if all(records):
        ladder = ladder_order(s.teachers, [r["final"].get("val_top1") for r in records],
                              [r["final"]["test_top1"] for r in records])
    else:
        ladder = list(s.teachers)
        assumed.append("the teacher ladder in the profile's order (its teachers are not all recorded)")
    recipes = distillation_recipes(ladder)
    means = {}
    for label, overrides in recipe_choice(recipes).items():
        if s.profile.cut_reason(label):
            continue
        values = [_recorded(ledger, c) for c in s.configs(overrides, seeds=s.choice_seeds)]
        if not all(values):
            break
        means[label] = sum(r["final"]["val_top1"] for r in values) / len(values)
    else:
        return Choices(ladder, max(means, key=means.get), assumed)  # the first of equals, as pandas' idxmax
    recipe = next(iter(recipes))
    assumed.append(f"notebook 04's recipe '{recipe}' (the runs it is chosen on are not all recorded)")
    return Choices(ladder, recipe, assumed)


def batches(study, chosen: Choices) -> list[Batch]:
    """The batches ``study``'s notebook asks for, in order (``chosen``: the ladder and recipe)."""
    model, notebook = study.settings["model"], study.name
    if notebook == "01_architecture_study":
        return [Batch("ablation", ABLATION, True, ABLATION_LANDSCAPES),
                Batch("blocks", blocks(model), True, BLOCK_LANDSCAPES),
                Batch("sizes", sizes(model)), Batch("progressive", PROGRESSIVE)]
    if notebook == "02_overfitting_analysis":
        return [Batch("overfitting", overfitting(study.teachers))]
    recipes = distillation_recipes(chosen.ladder)
    kd = Batch("distillation", recipes, DISTILLATION_HEADLINE)
    if notebook == "03_distillation":
        return [kd]
    if notebook == "04_augmentation_ablation":
        variants, headline = augmentation(recipes[chosen.recipe], model, study.sizes, study.settings["dataset"])
        return [Batch("regime", {"CE only": recipes["CE only"]}),
                Batch("recipe choice", recipe_choice(recipes), choice=True), Batch("augmentation", variants, headline)]
    raise ValueError(f"no plan for notebook {notebook!r}")


def _students(study, batch: Batch):
    """``(label, configs)`` of each variant of ``batch`` the profile trains, at its seeds (headline or not)."""
    for label, overrides in batch.variants.items():
        if study.profile.cut_reason(label):
            continue
        top = batch.headline is True or label in (batch.headline or ())
        yield label, study.configs(overrides, seeds=study.choice_seeds if batch.choice else None,
                                   headline=top and not batch.choice)


def notebook_runs(study, chosen: Choices | None = None, prefetch: bool = True) -> list[TrainConfig]:
    """Every run ``study``'s notebook asks for (its batches' runs and their teachers, the teacher table from which
    the ladder is read, and, with ``prefetch``, what notebook 01 trains ahead for the later notebooks), in order,
    each once; nothing is trained or written."""
    chosen = chosen or choices(study)
    configs = []
    if study.name == "01_architecture_study":
        configs += study.prerequisites() if prefetch else []
    else:  # the teacher table, from which the ladder is read
        configs += list(teacher_configs([study.config(teachers=tuple(study.teachers))]).values())
    for batch in batches(study, chosen):
        for _, students in _students(study, batch):
            configs += list(teacher_configs(students).values()) + students
    return list({config_hash(c): c for c in configs}.values())


def sliced(study, chosen: Choices) -> dict[str, list[str]]:
    """``{digest: derived keys}`` of the runs of ``study``'s notebook whose loss landscapes it slices, one key per
    direction seed (:func:`bnext_lib.landscape.landscape_key`): what those runs cost beyond their training."""
    from .landscape import landscape_key

    keys = [landscape_key(*spec[1:]) for spec in study.landscape_specs]
    out = {}
    for batch in batches(study, chosen):
        for label, students in _students(study, batch):
            if batch.landscapes is True or label in (batch.landscapes or ()):
                out.update({config_hash(c): keys for c in students})
    return out


def count(studies: Sequence, also: Sequence = ()) -> dict:
    """How many of the report's runs the ledger holds: ``{"recorded": n, "total": N, "notebooks": {name: [n, N]},
    "assumed": [...], "missing_s": seconds, "unknown": k}``, each run counted once over the notebooks of
    ``studies`` (one :class:`~bnext_lib.study.Study` per notebook, sharing a ledger:
    :func:`bnext_lib.study.report_studies`). ``missing_s``: the wall seconds the missing runs are expected to take
    on this kind of machine, one thread each (:meth:`~bnext_lib.ledger.Ledger.estimator`: the recorded runs alike,
    in the report's ledger, else in ``also``, e.g. the choice ledger), with the loss landscapes notebook 01 slices
    of them (:func:`sliced`) at their recorded cost, for all but the ``unknown`` missing runs of a kind never
    recorded. A recorded run whose slices are missing is counted as recorded, its slicing left out of the cost."""
    from .ledger import cpu_kind, machine

    ledger = studies[0].ledger
    chosen = choices(studies[0])
    seen: dict[str, TrainConfig | None] = {}
    per, derived = {}, {}
    for study in studies:
        runs = notebook_runs(study, chosen)
        derived.update(sliced(study, chosen))
        done = [ledger.has(c) for c in runs]
        per[study.name] = [sum(done), len(done)]
        seen.update({config_hash(c): None if d else c for c, d in zip(runs, done)})
    missing = [c for c in seen.values() if c is not None]
    kind = cpu_kind(machine())
    expected = ledger.estimator(kind, also)
    costs = [expected(c, derived=derived.get(config_hash(c), ())) for c in missing]
    return {"recorded": len(seen) - len(missing), "total": len(seen), "notebooks": per, "assumed": chosen.assumed,
            "missing_s": round(sum(x for x in costs if x is not None), 1), "unknown": sum(x is None for x in costs)}


def unplanned(study, asked: set[str], prefetch: bool) -> tuple[list[str], list[str]]:
    """What a study asked for that the plan does not count, and what the plan counts that it did not ask for
    (digests): both empty when the report's "n of N" is this notebook's truth."""
    planned = {config_hash(c) for c in notebook_runs(study, prefetch=prefetch)}
    return sorted(asked - planned), sorted(planned - asked)
