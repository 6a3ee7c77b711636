"""Named run profiles shared by the notebooks and the training CLI: ``smoke``, ``cpu``, ``gpu``, ``paper``.

* ``smoke``: seconds per run, for tests and for pressing Run All; a small Fashion-MNIST subset, ``bnext_pico``.
* ``cpu``: the report on a 2-core machine; its CE student is ``bnext_micro`` (stride-1 stem, chosen by the frontier
  of ``benchmarks/student_frontier.py``) and its short-run recipe the one ``benchmarks/time_to_accuracy.py`` chose
  on the validation split (:data:`SHORT_RUN`, ``docs/method.md`` §11.1): the 28x28 images as stored, flips, one
  epoch at batch 32, one-cycle, float32 and channels-last, 5,000 training images held out for validation. The over-fitting studies run on the 1,000-image subsets of :data:`OVERFITTING`, each
  run's drawn with its seed; the teachers (:data:`TEACHERS`) learn from the full training set. Every comparison it
  runs at 5 seeds a side at least (the pre-registration's floor, :mod:`bnext_lib.claims`); it cuts (:data:`CPU_CUT`)
  the distillation recipes whose claims it cannot test and a preset no claim compares. Compiled, two single-thread
  runs side by side.
* ``gpu``: the cpu protocol on one GPU, 5 seeds for every comparison, 12 runs side by side
  (``benchmarks/student_throughput.py`` on an H100 measured that small students are bound by per-step overhead,
  so runs side by side are what pays: 12 eager bnext_nano processes 30k img/s together, one 2.7k). Its last run,
  of an earlier protocol, is in ``reports/gpu/``.
* ``paper``: paper-scale settings for users with real GPU time (CIFAR-100, downloaded; BNext-T, the official
  512-epoch recipe with per-epoch schedules); validated by the tests, never run here.

A profile fills the training defaults; anything given explicitly (CLI flag, notebook parameter) wins.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .config import ONE_CYCLE

__all__ = ["Profile", "PROFILES", "one_cycle", "SHORT_RUN", "OVERFITTING", "THRESHOLDS", "TEACHERS", "CPU_CUT",
           "get_profile"]



def one_cycle(epochs: float) -> dict:
    """TrainConfig fields of :data:`~bnext_lib.config.ONE_CYCLE` for a run of ``epochs``."""
    values = dict(ONE_CYCLE)
    return dict(values, warmup_epochs=round(values.pop("warmup_fraction") * epochs, 6))


def rescaled_warmup(warmup_epochs: float | None, epochs: float, new_epochs: float) -> float | None:
    """The warm-up of a run of ``epochs`` for the same run at ``new_epochs``: the same share of the run (``None``,
    the official default of 5/512 of the run, already is)."""
    return None if warmup_epochs is None else round(warmup_epochs * new_epochs / epochs, 6)


# The CE student's recipe, chosen on the validation split by benchmarks/time_to_accuracy.py (2-core AMD EPYC with
# AVX512-BF16, no AMX; seeds 10 and 11; reports/tables/time_to_accuracy_techniques.csv): one epoch at batch 32 (lr
# scaled by the square root of the batch: 1e-3) on the images as stored: validation top-1 89.56 / 89.54 %, against
# 88.68 / 89.64 % at batch 64 and 87.86 / 88.12 % at batch 128 on 32x32 (chosen under bf16 autocast); channels-last
# for the step. Float32, not the bf16 autocast the choice ran under, because the ledger pools runs from whatever
# machine a part lands on and one precision must serve them all: bf16 was 1.28-1.41x the compiled float32 step on
# the AVX512-BF16 AMD EPYC, 1.05x on the Intel Xeon, and 9-47x slower on the AVX2-only AMD EPYC, where it is
# emulated (docs/method.md §11.2). The same recipe in float32 measured as well (reports/tables/time_to_accuracy.csv,
# cl+e1+b32+nopad against fast, seeds 0-2): validation top-1 89.12 / 89.62 / 89.88 % against 89.70 / 89.58 / 89.28
# under bf16, 89.54 against 89.52 on average. The headline comparison with the v2
# recipe (bnext_micro on
# 32x32, 2 epochs at batch 128, float32: micro-s1-onecycle-flip-pad32 of benchmarks/student_frontier.py) on the
# report's seeds is reports/tables/time_to_accuracy.csv.
_LR_B32 = ONE_CYCLE["lr"] * (32 / 128) ** 0.5  # the one-cycle peak scaled with the square root of the batch
SHORT_RUN = dict(model="bnext_micro", stem_stride=1, dataset="fashion_mnist", pad_to=None, augment="flip", epochs=1,
                 batch_size=32, **dict(one_cycle(1), lr=_LR_B32, warmup_lr=_LR_B32 / 25),
                 amp=False, eval_amp=False, channels_last=True, val_split=5000, train_subset=None, test_subset=None)
# The over-fitting regime of the over-fitting, distillation and augmentation studies, chosen on the validation split
# with benchmarks/overfitting_regime.py (choice seeds 10 and 11, reports/tables/overfitting_regime.csv): the cpu
# recipe on 1,000 training images, each run's drawn with its seed, for 48 epochs at batch 32 (1,488 optimizer
# steps): train top-1 (eval mode) 100 % on both seeds, a 14.5-15.8-point gap to validation, and the validation
# top-1 rise over the last quarter 0.20 and 0.78 points, 0.49 on average: the only regime measured whose mean
# passes the 0.5-point check, and only just (the report's check, over its own seeds, decides). 2,000 x 18 (1,116
# steps: +1.48 / +1.26) and 1,000 x 33 (1,023 steps: +1.20 / +0.17) fit 97-100 % while their validation top-1
# still rose as the learning rate annealed. Validation and training-subset evaluations every 2nd epoch in the last
# quarter (epochs 38-48: the points the check fits, as in the choice; single 5,000-image evaluations scatter by
# ~0.5 points), every 6th before it (the curves' shape; an evaluation costs ~1.2 epochs of training here, so this
# rhythm halves the evaluations, 24 to 12), the test set at the end only. Runs whose curves nothing draws (the
# two-teacher students, the augmentation study) evaluate every split at the end only (bnext_lib.study.AT_THE_END).
OVERFITTING = dict(train_subset=1000, epochs=48, warmup_epochs=one_cycle(48)["warmup_epochs"], eval_train=True,
                   eval_every=6, eval_every_last_quarter=2, test_every=48)


# What a Fashion-MNIST study needs before its verdicts count, measured in the report (tables/regime_checks.csv), on
# the validation split: a CE student that learns the task (a linear classifier reaches ~84 %, a small float CNN
# > 91 %; the adopted recipe's validation top-1 is 89.5 % on the report's seeds); teachers in the paper's roles, the
# main teacher 4 points above the student it teaches, the assistant 2 above that student and 2 below the main
# teacher; a regime that over-fits: train top-1 (eval mode) >= 97 %, 8 points above test, >= 1,000 optimizer
# steps, validation top-1 rising at most 0.5 points (about one standard error of a 5,000-image evaluation) over
# the last quarter of the run.
THRESHOLDS = dict(student_top1=89.0, teacher_lead=4.0, assistant_lead=2.0, main_lead=2.0, overfit_gap=8.0,
                  overfit_train_top1=97.0, overfit_steps=1000, overfit_val_rise=0.5)


# The teachers, weak assistant to main (benchmarks/teacher_ladder.py --profile cpu; the report's teacher table
# measures them again, and gates their roles): full-precision ResNet-10t trained on the 55,000 training images for
# 4, 8 and 16 epochs: validation top-1 90.10, 92.58 and 93.26 % (reports/tables/teacher_ladder.csv), 5.2, 7.7 and
# 8.4 points above the over-fitting regime's CE student (84.9 % on the choice seeds); 2 epochs gave 88.00 %.
# Teachers trained on the student's kind of data cannot play the roles: 40 epochs on 2,000 images (twice the
# regime's subset) give MobileNetV3-S 0.5, ResNet-10t and ResNet-18 75.4, 85.7 and 84.4 %
# validation top-1 (subset seed 10; reports/tables/teachers_same_data.csv), below the CE student of that subset
# (86.8 %). So the teachers learn from 55x the student's images and their soft labels carry that data, where in the
# paper teacher and student learn from the same ImageNet images: a deliberate difference (docs/method.md §13).
TEACHERS = ("timm:resnet10t@4", "timm:resnet10t@8", "timm:resnet10t@16")

# Notebook 04's distillation recipe is chosen on three seeds of its own (docs/method.md §9): choice seeds start at
# 1000, as the variance budget's do (benchmarks/variance_budget.py); the report's seeds are small integers.
CHOICE_SEEDS = (1000, 1001, 1002)

# What the cpu profile does not train, to bring the report toward its ~10 worker-hours on the 2-core machine (its
# count before this cut, and before notebook 04's recipe choice: 148 runs, ~22 worker-hours, docs/method.md §11.2): the
# distillation recipes that only the adaptive, instance and consecutive claims compare, claims the cpu profile cannot
# test by its design (its teachers learn from 55 images per image of their student:
# bnext_lib.claims.teacher_images_ratio), and the augmentation study's flip-only preset, which no claim compares.
# The recipes notebook 02 shares, and the two-teacher recipe notebook 04 may be trained under, stay; notebook 04's
# recipe is still chosen on validation among them (at the choice seeds).
CPU_CUT = ("two, fixed 0.5/0.5", "two, adaptive (instance)", "consecutive *", "* / flip")


@dataclass(frozen=True)
class Profile:
    """One profile.

    Attributes:
        name: profile name.
        train: defaults for :class:`bnext_lib.train.TrainConfig` fields.
        teachers: teacher names (timm architectures) from weak to strong, for the studies that need several.
        seeds: seeds for comparisons that a verdict rests on.
        headline_seeds: seeds of the headline claims' comparisons (empty: ``seeds``), a superset of ``seeds``
            so that a variant both compare is trained once per seed.
        choice_seeds: seeds of the runs a choice of the report is made on (notebook 04's distillation recipe, by
            validation top-1), never report seeds (:attr:`seeds`, :attr:`headline_seeds`): a choice made on the
            report's own runs would carry their luck into the comparisons it governs.
        subset_per_seed: a run on a training subset draws it with its own seed (``TrainConfig.subset_seed``), so
            that seeds vary the data too; otherwise every seed sees the subset of seed 0.
        workers, threads: runs trained side by side, and torch threads per run (see :mod:`bnext_lib.runs`).
        landscape: loss-landscape grid (``steps`` per axis, ``span``, ``images`` evaluated per point) and the
            number of random direction pairs per run (``directions``): a run's roughness is their mean, so that
            one pair's luck is not read as the model's.
        sizes: student sizes for the augmentation study.
        overfitting: training overrides of the over-fitting regime, where the studies of over-fitting,
            distillation and augmentation run (a training subset the CE student over-fits).
        thresholds: what a claim's regime must show (:meth:`bnext_lib.study.Study.regime_check`): the CE
            student's test top-1 (``student_top1``), the strongest teacher's test top-1 (``teacher_top1``) and its
            lead over the CE student of the same regime (``teacher_lead``), the CE student's train-minus-test gap
            in the over-fitting regime (``overfit_gap``); in points.
        cut: variant labels (shell patterns) not trained at this profile, to fit its budget; a comparison with a
            cut variant is reported as cut (see :meth:`bnext_lib.study.RunSet.compare`).
    """

    name: str
    train: dict = field(default_factory=dict)
    teachers: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    headline_seeds: tuple[int, ...] = ()
    choice_seeds: tuple[int, ...] = (1000,)
    subset_per_seed: bool = False
    workers: int = 1
    threads: int | None = None
    landscape: dict = field(default_factory=lambda: dict(steps=9, span=1.0, images=1000, directions=3))
    sizes: tuple[str, ...] = ("bnext_pico", "bnext_nano")
    overfitting: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=lambda: dict(THRESHOLDS))
    cut: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.choice_seeds:
            raise ValueError(f"profile {self.name!r}: no choice seeds (notebook 04 chooses its recipe on them)")
        shared = sorted(set(self.choice_seeds) & {*self.seeds, *self.headline_seeds})
        if shared:
            raise ValueError(f"profile {self.name!r}: choice seeds must never be report seeds, {shared} are both")

    def cut_reason(self, label: str) -> str | None:
        """Why the variant ``label`` is not trained at this profile (a pattern of :attr:`cut` names it), or None."""
        if any(fnmatch.fnmatchcase(label, pattern) for pattern in self.cut):
            return f"{label} cut at the {self.name} profile (budget)"
        return None


PROFILES = {
    "smoke": Profile(
        "smoke",
        train=dict(model="bnext_pico", dataset="fashion_mnist", epochs=1, batch_size=64, train_subset=512,
                   test_subset=256, val_split=500, augment="basic", teacher_epochs=1, teacher_subset=512),
        teachers=("timm:mobilenetv3_small_050", "timm:resnet10t", "timm:resnet18"), seeds=(0,),
        workers=2, threads=1, landscape=dict(steps=3, span=1.0, images=128, directions=2), overfitting=dict(eval_train=True)),
    "cpu": Profile(
        "cpu",
        train=dict(SHORT_RUN, compile=True, teacher_recipe="onecycle"),
        teachers=TEACHERS, seeds=(0, 1, 2, 3, 4), headline_seeds=(0, 1, 2, 3, 4), choice_seeds=CHOICE_SEEDS,
        subset_per_seed=True,
        workers=2, threads=1, landscape=dict(steps=7, span=1.0, images=512, directions=3),
        sizes=("bnext_micro",), overfitting=OVERFITTING, cut=CPU_CUT),
    "gpu": Profile(
        "gpu",
        train=dict(SHORT_RUN, teacher_recipe="onecycle"),
        teachers=TEACHERS, seeds=(0, 1, 2, 3, 4), choice_seeds=CHOICE_SEEDS, subset_per_seed=True,
        workers=12, threads=1, landscape=dict(steps=9, span=1.0, images=2000, directions=3),
        sizes=("bnext_micro",), overfitting=OVERFITTING),
    "paper": Profile(
        "paper",
        train=dict(model="bnext_tiny", dataset="cifar100", download=True, epochs=512, batch_size=512,
                   augment="released", schedule_per_step=False, warmup_epochs=5, stem_stride=1, teacher_epochs=200),
        teachers=("timm:resnet18", "timm:resnet34", "timm:resnet50"), seeds=(0, 1, 2), choice_seeds=CHOICE_SEEDS,
        landscape=dict(steps=21, span=1.0, images=5000, directions=3), sizes=("bnext_tiny", "bnext_small"),
        # CIFAR-100 levels, set by hand and never measured here: a BNext-T student that learns the task, a
        # ResNet teacher at its usual level; the over-fitting regime is the full training set.
        overfitting=dict(eval_train=True),
        thresholds=dict(THRESHOLDS, student_top1=65.0, teacher_top1=75.0)),
}


def get_profile(name: str) -> Profile:
    """The named profile; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]
