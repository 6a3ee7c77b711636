"""Named run profiles shared by the notebooks and the training CLI: ``smoke``, ``cpu``, ``gpu``, ``paper``.

* ``smoke``: seconds per run, for tests and for pressing Run All; a small Fashion-MNIST subset, ``bnext_pico``.
* ``cpu``: the report on a 2-core machine; its CE student is ``bnext_micro`` (stride-1 stem, chosen by the frontier
  of ``benchmarks/student_frontier.py``) and its short-run recipe the one ``benchmarks/time_to_accuracy.py`` chose
  on the validation split (:data:`SHORT_RUN`, ``docs/method.md`` §11.1): the 28x28 images as stored, flips, one
  epoch at batch 32, one-cycle, bf16 autocast and channels-last, 5,000 training images held out for validation.
  Teachers are trained with the one-cycle teacher recipe; the over-fitting studies run on the training subset of
  :data:`OVERFITTING` (``benchmarks/overfitting_regime.py``). Compiled, two single-thread runs side by side; the
  variants that do not fit 120 minutes are cut (:data:`CPU_CUT`).
* ``gpu``: the cpu protocol on one GPU in <= 8 minutes: the same student, recipe and regimes, 5 seeds instead of
  3, a middle teacher (resnet18, 10 epochs) and the whole distillation study (with consecutive KD, which needs
  the middle teacher the cpu profile does not train); the architecture study keeps the cpu profile's two
  variants (each full-data run costs a GPU worker 1-1.5 minutes) and the augmentation study stays cut for the cpu
  profile's reason (:data:`GPU_CUT`). 12 runs side by side: ``benchmarks/student_throughput.py`` on an H100
  measured that small students are bound by per-step overhead, so runs side by side are what pays (12 eager
  bnext_nano processes 30k img/s together, one 2.7k). Its run is in ``reports/gpu/``.
* ``paper``: paper-scale settings for users with real GPU time (CIFAR-100, downloaded; BNext-T, the official
  512-epoch recipe with per-epoch schedules); validated by the tests, never run here.

A profile fills the training defaults; anything given explicitly (CLI flag, notebook parameter) wins.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .config import ONE_CYCLE

__all__ = ["Profile", "PROFILES", "one_cycle", "SHORT_RUN", "OVERFITTING", "CPU_CUT", "GPU_CUT",
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
# 88.68 / 89.64 % at batch 64 and 87.86 / 88.12 % at batch 128 on 32x32; bf16 autocast and channels-last for the
# step (1.28-1.41x the compiled float32 step, benchmarks/train_speed.py). The headline comparison with the v2 recipe (bnext_micro on
# 32x32, 2 epochs at batch 128, float32: micro-s1-onecycle-flip-pad32 of benchmarks/student_frontier.py) on the
# report's seeds is reports/tables/time_to_accuracy.csv.
_LR_B32 = ONE_CYCLE["lr"] * (32 / 128) ** 0.5  # the one-cycle peak scaled with the square root of the batch
SHORT_RUN = dict(model="bnext_micro", stem_stride=1, dataset="fashion_mnist", pad_to=None, augment="flip", epochs=1,
                 batch_size=32, **dict(one_cycle(1), lr=_LR_B32, warmup_lr=_LR_B32 / 25),
                 amp=True, eval_amp=True, channels_last=True, val_split=5000, train_subset=None, test_subset=None)
# A training subset and length where the CE student over-fits (benchmarks/overfitting_regime.py, seed 0, the
# annealed one-cycle recipe, flips): on 2,000 images x 12 epochs its train top-1 (eval mode, no augmentation) ends
# 5.4 points above test (88.2 vs 82.8 %), >= 3.9 from epoch 6 on except one high-lr dip; 1,000 x 12: 5.2 points
# (81.8 vs 76.6 %). Test and training-subset evaluations every 6th epoch: on 2,000 images the 10k test set costs
# twice the epoch.
OVERFITTING = dict(train_subset=2000, epochs=12, warmup_epochs=one_cycle(12)["warmup_epochs"], eval_train=True,
                   eval_every=6)


# The regime a Fashion-MNIST study needs before its verdicts count: a CE student that learns the task (a linear
# classifier reaches ~84 %, a small float CNN > 91 %), a teacher clearly stronger than the student it teaches,
# and a run whose student over-fits (train top-1 in eval mode above test top-1).
THRESHOLDS = dict(student_top1=89.0, teacher_top1=93.0, teacher_lead=3.0, overfit_gap=3.0)

# What the cpu profile leaves out to fit 120 minutes on 2 cores (3 seeds a side, regimes kept). A full-data student
# run costs ~15 CPU-minutes (2 epochs, the other core busy) and the strong teacher ~40, so the architecture study
# affords two variants: ELM + IR against neither module (the earlier blocks, ReActNet's included, the single
# modules and sign-from-the-first-step are cut). The over-fitting regime affords the over-fitting study and the
# two-teacher distillation recipes (fixed 0.5/0.5, adaptive per batch and per instance); consecutive KD needs a
# middle teacher, which this profile does not train. The augmentation study is cut whole: on a subset the crop it
# adds to flips makes the student under-fit (benchmarks/overfitting_regime.py --augment basic: 1,000 images x 12
# epochs, test top-1 70.7 % against 76.6 % with flips only), so at this budget it would measure under-fitting, not
# RandAugment.
_ARCHITECTURE_CUT = ("ELM only", "IR only", "plain binary", "Bi-Real", "ReActNet", "sign from the first step")
CPU_CUT = _ARCHITECTURE_CUT + ("consecutive*", "* / *")
# What the gpu profile leaves out to fit 8 minutes on one GPU: the full-data architecture variants beyond the cpu
# profile's two (5 seeds each; a run took a worker 1-1.5 minutes on an H200), and the augmentation study for the
# reason above.
GPU_CUT = _ARCHITECTURE_CUT + ("* / *",)


@dataclass(frozen=True)
class Profile:
    """One profile.

    Attributes:
        name: profile name.
        train: defaults for :class:`bnext_lib.train.TrainConfig` fields.
        teachers: teacher names (timm architectures) from weak to strong, for the studies that need several.
        seeds: seeds for comparisons that a verdict rests on.
        workers, threads: runs trained side by side, and torch threads per run (see :mod:`bnext_lib.runs`).
        landscape: loss-landscape grid (``steps`` per axis, ``span``, ``images`` evaluated per point).
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
    workers: int = 1
    threads: int | None = None
    landscape: dict = field(default_factory=lambda: dict(steps=9, span=1.0, images=1000))
    sizes: tuple[str, ...] = ("bnext_pico", "bnext_nano")
    overfitting: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=lambda: dict(THRESHOLDS))
    cut: tuple[str, ...] = ()

    def cut_reason(self, label: str) -> str | None:
        """Why the variant ``label`` is not trained at this profile (a pattern of :attr:`cut` names it), or None."""
        if any(fnmatch.fnmatchcase(label, pattern) for pattern in self.cut):
            return f"{label} cut at the {self.name} profile (budget)"
        return None


PROFILES = {
    "smoke": Profile(
        "smoke",
        train=dict(model="bnext_pico", dataset="fashion_mnist", epochs=1, batch_size=64, train_subset=512,
                   test_subset=256, augment="basic", teacher_epochs=1, teacher_subset=512),
        teachers=("timm:mobilenetv3_small_050", "timm:resnet10t", "timm:resnet18"), seeds=(0,),
        workers=2, threads=1, landscape=dict(steps=3, span=1.0, images=128), overfitting=dict(eval_train=True)),
    "cpu": Profile(
        "cpu",
        train=dict(SHORT_RUN, compile=True, teacher_epochs=16, teacher_recipe="onecycle"),
        teachers=("timm:mobilenetv3_small_050@6", "timm:resnet10t"),
        seeds=(0, 1, 2), workers=2, threads=1, landscape=dict(steps=7, span=1.0, images=512),
        sizes=("bnext_micro",), overfitting=OVERFITTING, cut=CPU_CUT),
    "gpu": Profile(
        "gpu",
        train=dict(SHORT_RUN, teacher_epochs=16, teacher_recipe="onecycle"),
        teachers=("timm:mobilenetv3_small_050@6", "timm:resnet18@10", "timm:resnet10t"),
        seeds=(0, 1, 2, 3, 4), workers=12, threads=1, landscape=dict(steps=9, span=1.0, images=2000),
        sizes=("bnext_micro",), overfitting=OVERFITTING, cut=GPU_CUT),
    "paper": Profile(
        "paper",
        train=dict(model="bnext_tiny", dataset="cifar100", download=True, epochs=512, batch_size=512,
                   augment="released", schedule_per_step=False, warmup_epochs=5, stem_stride=1, teacher_epochs=200),
        teachers=("timm:resnet18", "timm:resnet34", "timm:resnet50"), seeds=(0, 1, 2),
        landscape=dict(steps=21, span=1.0, images=5000), sizes=("bnext_tiny", "bnext_small"),
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
