"""The training engine: :class:`TrainConfig`, :func:`train`, :func:`train_one_epoch`, :func:`validate`. Its command
line is :mod:`bnext_lib.cli`, run as ``python -m bnext_lib.train`` (this package's ``__main__``, unchanged under
``torchrun``) or ``bnext-train``.

The official recipe (``docs/method.md`` §5, §8, §11) is the default:

* AdamW, lr 1e-3, two parameter groups: 4-D kernels (and anything named ``binary_conv``) weight decay 1e-8,
  everything else 1e-3;
* timm's cosine schedule to 1e-7 with a warm-up from 1e-5 (official: 5 of 512 epochs; by default the same
  proportion of any run, updated every step; ``schedule_per_step=False`` steps per epoch as the official code);
* gradient clipping at global norm 5;
* progressive binarization: every temperature follows :class:`~bnext_lib.binary.TemperatureSchedule`, reaching
  exact ``sign`` at 30 % of the run;
* distillation from timm teachers (:mod:`bnext_lib.distill`), the soft-target loss only (no hard-label term);
* float32 by default; ``amp=True`` runs the student's training forward under bf16 autocast (CPU and CUDA;
  evaluation stays float32). On CUDA the teachers always run under autocast (official), on the CPU under bf16
  autocast when ``amp=True``.

Every epoch writes ``metrics.csv``/``metrics.json`` (train/test loss and top-1, lr, temperature, teacher weights,
time), ``trace.csv`` (16 points per epoch: loss, lr, temperature and the fraction of latent weights already
binary) and an atomic checkpoint ``last.pt``; ``resume=True`` continues from it and, on the CPU, ends with the same
weights as an uninterrupted run (every random choice of an epoch is drawn from ``(seed, epoch, rank)``). A
non-finite loss stops the run with :class:`TrainingDiverged`, keeping the last good checkpoint.

Under ``torchrun`` each process takes its share of every global batch (gloo on CPU, NCCL on CUDA), gradients are
averaged by DDP, and metrics are summed over processes. BatchNorm statistics stay per process, as in the official
DDP training, so a multi-process run matches a single-process one up to those statistics.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..augment import Augmenter, parse_augment
from ..binary import TemperatureSchedule, get_temperature, saturated_fraction, set_temperature
from ..checkpoints import CheckpointError, atomic_save, atomic_write, atomic_write_text, read_checkpoint
from ..data import DATASETS, BatchLoader, FolderData, epoch_seed, load_dataset
from ..distill import ConsecutiveKD, StudentLoss, Teacher
from ..models import build_model, list_models
from ..models.teachers import TEACHER_RECIPES, split_teacher

__all__ = ["TrainConfig", "TrainingDiverged", "train", "train_one_epoch", "validate", "evaluation_splits",
           "build_model", "config_hash", "resolve_device"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """One training run. Defaults are the official recipe on the default data; a profile can fill them.

    Attributes:
        model: a registered name (``bnext_nano``...) or ``timm:<name>`` for a full-precision timm model.
        dataset: ``fashion_mnist``, ``cifar10``, ``cifar100``, ``synthetic`` or ``imagefolder``.
        data_root: data folder (default ``data/``); for ``imagefolder`` the folder holding ``train/`` and
            ``val/``.
        download: let torchvision download missing data (needs internet).
        train_subset, test_subset: class-stratified subsets (``None``: all); ``train_subset`` is drawn from the
            training images left after the validation split.
        val_split: hold this many training images out as a validation split (class-stratified, the same images
            for every run, seed and variant: :meth:`~bnext_lib.data.ImageData.split_validation`), never trained
            on and evaluated beside the test set (``val_loss``/``val_top1`` in the metrics). Recipes, regimes and
            thresholds are chosen on it; the test set is for reported figures. ``None``: no split, as before.
        image_size: input side for ``imagefolder`` (in-memory datasets keep their size).
        pad_to: zero-pad in-memory images (train and test) to this side before anything else (``None``: as
            stored). 28x28 Fashion-MNIST padded to 32 gives every stride-2 stage an even map, as on CIFAR.
        epochs, batch_size: run length; *global* batch size over all processes.
        lr, min_lr, warmup_lr, warmup_epochs: AdamW and timm cosine schedule (``warmup_epochs`` ``None``: 5/512
            of the run, the official proportion).
        anneal_to_end: the cosine spans the epochs after the warm-up, so the run ends at ``min_lr`` (a one-cycle
            schedule). ``False`` (official, timm's ``warmup_prefix``): the cosine lasts ``epochs`` *after* the
            warm-up, which a 512-epoch run barely notices but which leaves a short run with a 30 % warm-up at
            ~0.2x its peak lr.
        wd_conv, wd_other: weight decay of 4-D kernels / everything else.
        norm_lr_scale: learning-rate multiplier of the per-channel parameters (BatchNorm, PReLU, biases, the
            learnable shifts and Info-Recoupling's mix), as fast-training recipes raise BatchNorm's; 1: as official.
        ema_decay: also keep an exponential moving average of the weights (timm's ``ModelEmaV3``, updated after
            every optimizer step with this decay; buffers such as the temperature copied), and evaluate and return
            it, its BatchNorm statistics recomputed over :data:`EMA_BN_BATCHES` training batches before each
            evaluation. 0: off.
        clip_grad: global gradient-norm clip (0: off).
        temperature_reach: fraction of the run at which the binarization temperature reaches its floor.
        schedule_per_step: update lr and temperature every step (``False``: every epoch, as the official code).
        augment: augmentation preset(s), see :mod:`bnext_lib.augment`.
        teachers: teacher names, main teacher last; earlier ones are assistants used in consecutive rounds.
        teacher_epochs, teacher_subset, teacher_recipe: how the teachers are trained (a recipe of
            :data:`~bnext_lib.models.teachers.TEACHER_RECIPES`; always seed 0, so that every student of a study
            distils from the same teachers). The engine does not train them: see :func:`train`'s ``teachers``.
        kd_weighting, kd_granularity: see :class:`~bnext_lib.distill.MultiTeacherLoss`.
        elm_attention, info_recoupling, stem_stride: model options (``None``: the builder's default).
        eval_train: also evaluate the training split each epoch in eval mode, without augmentation
            (``train_eval_top1``/``train_eval_loss`` in the metrics): the train-minus-test gap of an over-fitting
            regime. The running ``train_top1`` is measured in train mode on augmented batches.
        eval_every: evaluate (test and validation splits, and the training split with ``eval_train``) after every ``eval_every``-th
            epoch and after the last; the other epochs' rows carry ``None``. On a small training subset the
            full test set costs as much as the epoch itself.
        seed: base seed of everything random.
        device: ``auto``, ``cpu``, ``cuda``.
        amp: run the student's training forward (and, on the CPU, the teachers) under bf16 autocast, on CPU and
            CUDA; evaluation stays float32. Its cost in accuracy is measured in the README.
        channels_last: train the student in the channels-last memory format (NHWC: per-channel reductions such as
            BatchNorm's and PReLU's run over contiguous channels, which Inductor vectorizes better on a CPU); the
            same computation in another layout, so, like ``compile``, not part of the run's digest.
        compile: ``torch.compile`` the student's training forward (about 1.7x the eager step on 2 CPU cores for
            bnext_nano, after a compilation of a minute or so; numbers equal up to float rounding).
        threads: torch CPU threads (``None``: torch's default).
        out: run folder (metrics, checkpoint); ``None``: nothing is written.
        resume: continue from ``out/last.pt``.
        progress: show tqdm bars (rank 0 only).
    """

    model: str = "bnext_nano"
    dataset: str = "fashion_mnist"
    data_root: str | None = None
    download: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    val_split: int | None = None
    image_size: int = 224
    pad_to: int | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-7
    warmup_lr: float = 1e-5
    warmup_epochs: float | None = None
    anneal_to_end: bool = False
    wd_conv: float = 1e-8
    wd_other: float = 1e-3
    norm_lr_scale: float = 1.0
    ema_decay: float = 0.0
    clip_grad: float = 5.0
    temperature_reach: float = 0.3
    schedule_per_step: bool = True
    augment: str = "released"
    teachers: tuple[str, ...] = ()
    teacher_epochs: int = 4
    teacher_subset: int | None = None
    teacher_recipe: str = "adamw-cosine"
    kd_weighting: str = "adaptive"
    kd_granularity: str = "batch"
    elm_attention: bool | None = None
    info_recoupling: bool | None = None
    stem_stride: int | None = None
    eval_train: bool = False
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    out: str | None = None
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Check every option before any data is read; raises ``ValueError`` saying what is allowed."""
        errors = []
        if self.model.startswith("timm:"):
            import timm
            if not timm.is_model(self.model[5:]):
                errors.append(f"model {self.model!r}: timm has no model {self.model[5:]!r}")
        elif self.model not in list_models():
            errors.append(f"model {self.model!r} is unknown; choose one of {list_models()} or 'timm:<name>'")
        if self.dataset not in DATASETS:
            errors.append(f"dataset {self.dataset!r} is unknown; choose one of {list(DATASETS)}")
        for name in ("epochs", "batch_size", "teacher_epochs", "image_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset", "teacher_subset", "pad_to", "val_split"):
            v = getattr(self, name)
            if v is not None and v < 1:
                errors.append(f"{name} must be >= 1 or None, got {v}")
        if self.train_subset is not None and 1 <= self.train_subset < self.batch_size:  # drop_last: no step at all
            errors.append(f"train_subset ({self.train_subset}) is smaller than one batch ({self.batch_size})")
        for name in ("lr", "min_lr", "warmup_lr", "wd_conv", "wd_other", "clip_grad"):
            if getattr(self, name) < 0 or not math.isfinite(getattr(self, name)):
                errors.append(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            errors.append(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 < self.norm_lr_scale or not math.isfinite(self.norm_lr_scale):
            errors.append(f"norm_lr_scale must be a finite number > 0, got {self.norm_lr_scale}")
        if not 0 <= self.ema_decay < 1:
            errors.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.temperature_reach <= 1:
            errors.append(f"temperature_reach must be in (0, 1], got {self.temperature_reach}")
        try:
            parse_augment(self.augment)
        except ValueError as e:
            errors.append(str(e))
        if self.teacher_recipe not in TEACHER_RECIPES:
            errors.append(f"teacher_recipe must be one of {sorted(TEACHER_RECIPES)}, got {self.teacher_recipe!r}")
        if self.kd_weighting not in ("adaptive", "fixed"):
            errors.append(f"kd_weighting must be 'adaptive' or 'fixed', got {self.kd_weighting!r}")
        if self.kd_granularity not in ("batch", "instance"):
            errors.append(f"kd_granularity must be 'batch' or 'instance', got {self.kd_granularity!r}")
        for name in self.teachers:
            try:
                t, _ = split_teacher(name)
            except ValueError as e:
                errors.append(str(e))
                continue
            if not t.startswith("timm:") and t not in list_models():
                errors.append(f"teacher {name!r} must be 'timm:<name>' or a registered model (optionally '@<epochs>')")
            elif t.startswith("timm:"):
                import timm
                if not timm.is_model(t[5:]):
                    errors.append(f"teacher {name!r}: timm has no model {t[5:]!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            errors.append(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            errors.append("device 'cuda' asked for but CUDA is not available")
        if self.stem_stride not in (None, 1, 2):
            errors.append(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        if self.dataset == "imagefolder" and (self.pad_to is not None or self.eval_train or self.val_split):
            errors.append("pad_to, eval_train and val_split apply to in-memory datasets, not imagefolder")
        if self.resume and not self.out:
            errors.append("resume needs an out folder")
        if errors:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(errors))

    def model_options(self) -> dict:
        """The builder options this configuration sets (``None`` ones are left to the builder)."""
        return {k: getattr(self, k) for k in ("elm_attention", "info_recoupling", "stem_stride")
                if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["teachers"] = list(self.teachers)
        return d


# Options added after runs were cached: left out of the digest at their default, so that those runs keep their key.
_LATER_OPTIONS = {"pad_to": None, "eval_train": False, "teacher_recipe": "adamw-cosine", "anneal_to_end": False,
                  "eval_every": 1, "val_split": None, "norm_lr_scale": 1.0, "ema_decay": 0.0}
# Training batches whose statistics an EMA model's BatchNorm layers are recomputed on before an evaluation.
EMA_BN_BATCHES = 16


_TEACHER_OPTIONS = ("teacher_epochs", "teacher_subset", "teacher_recipe", "kd_weighting", "kd_granularity")


def config_hash(cfg: TrainConfig,
                ignore: Sequence[str] = ("out", "resume", "progress", "threads", "device", "compile",
                                         "channels_last"),
                legacy: bool = False) -> str:
    """A short digest of everything that changes a run's numbers (a run without teachers: not the teacher and
    distillation options). ``legacy=True``: the digest of versions that hashed those options too, under which
    earlier runs were cached (:func:`bnext_lib.runs.run_folder` falls back to it)."""
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in ignore and not (k in _LATER_OPTIONS and v == _LATER_OPTIONS[k])
         and (legacy or cfg.teachers or k not in _TEACHER_OPTIONS)}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- helpers
def _param_groups(model: nn.Module, wd_conv: float, wd_other: float, norm_lr_scale: float = 1.0) -> list[dict]:
    kernels, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (kernels if p.ndim == 4 or "binary_conv" in name else other).append(p)
    groups = [{"params": other, "weight_decay": wd_other}, {"params": kernels, "weight_decay": wd_conv}]
    if norm_lr_scale == 1.0:
        return groups
    # per-channel parameters (C,) or (1, C, 1, 1) get the scaled lr (timm's schedulers honour ``lr_scale``)
    per_channel = lambda p: p.ndim <= 1 or (p.ndim == 4 and p.shape[0] == 1)  # noqa: E731
    return [dict(g, params=[p for p in g["params"] if per_channel(p) == scaled], **({"lr_scale": norm_lr_scale}
                 if scaled else {})) for g in groups for scaled in (False, True)]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _workers() -> int:
    return min(4, os.cpu_count() or 1)


def _all_sum(t: torch.Tensor, d: _Dist, device: torch.device) -> torch.Tensor:
    if d.world > 1:  # NCCL reduces device tensors only
        t = t.to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(f):
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    atomic_write(path, write, binary=False)


def _write_metrics(out: Path, rows: list[dict], trace: list[dict]) -> None:
    atomic_write_text(out / "metrics.json", json.dumps(rows, indent=1))
    _write_csv(out / "metrics.csv", rows)
    _write_csv(out / "trace.csv", trace)


# --------------------------------------------------------------------------------------------- the engine
def train(cfg: TrainConfig, callbacks: Sequence[Callable[[int, dict], None]] = (), single_process: bool = False,
          teachers: Mapping[str, Teacher] | None = None) -> dict:
    """Run one training run.

    Args:
        cfg: the configuration (validated first).
        callbacks: called as ``callback(epoch, metrics_row)`` after each epoch's checkpoint is written.
        single_process: ignore ``torchrun``'s environment.
        teachers: ``{name: Teacher}`` for every name in ``cfg.teachers`` (trained models; the engine never trains
            a teacher). :func:`bnext_lib.runs.load_teachers` gets them from the run cache.

    Returns:
        A summary: ``final`` (the last epoch's metrics), ``history`` (every epoch), ``wall_s``, ``out``,
        ``config``, ``teachers`` (their test top-1), ``model`` (the trained module), ``num_classes``,
        ``in_chans``.

    Raises:
        ValueError: invalid configuration (before any data is read).
        TrainingDiverged: a non-finite loss (the last good checkpoint is kept).
    """
    cfg.validate()
    missing = [t for t in cfg.teachers if t not in (teachers or {})]
    if missing:
        raise ValueError(f"teachers {missing} were not given: pass teachers=bnext_lib.runs.load_teachers(cfg)")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, callbacks, single_process, dict(teachers or {}))
    finally:  # a run leaves the caller's process as it found it
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------- set-up
@dataclass
class _Data:
    """What a run trains and tests on: batches per epoch, the test (and optionally training) evaluation."""

    train: Callable[[int], Any]  # epoch -> its training batches
    test: Callable[[], Any]
    train_eval: Callable[[], Any] | None
    val: Callable[[], Any] | None
    steps_per_epoch: int
    num_classes: int
    in_chans: int
    augmenter: Augmenter | None  # None: the loader's transforms did it (image folders)


def _data(cfg: TrainConfig, d: _Dist) -> _Data:
    eval_batch = max(cfg.batch_size, 256 * d.world)
    if cfg.dataset == "imagefolder":
        root = Path(cfg.data_root or "data/imagenet")
        train_split = FolderData(root, "train", cfg.image_size, cfg.augment)
        test_split = FolderData(root, "test", cfg.image_size, "none")
        return _Data(lambda e: train_split.loader(cfg.batch_size, True, cfg.seed, d.rank, d.world, _workers(), e),
                     lambda: test_split.loader(eval_batch, False, cfg.seed, d.rank, d.world, _workers()), None, None,
                     train_split.steps(cfg.batch_size, d.world), train_split.num_classes, 3, None)
    # subsets are part of the data, not of the seed: every seed and variant sees the same images
    train_data, val_data = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download
                                        ).split_validation(cfg.val_split)
    train_data = train_data.subset(cfg.train_subset).padded(cfg.pad_to)
    test_data = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download).subset(cfg.test_subset)
    test_data = test_data.padded(cfg.pad_to)
    augmenter = Augmenter(cfg.augment, train_data.mean, train_data.std, train_data.num_classes)
    train_loader = BatchLoader(train_data, cfg.batch_size, True, True, cfg.seed, d.rank, d.world,
                               augmenter.sample_transform())
    test_loader = BatchLoader(test_data, eval_batch, False, False, cfg.seed, d.rank, d.world)
    train_eval = (BatchLoader(train_data, eval_batch, False, False, cfg.seed, d.rank, d.world) if cfg.eval_train
                  else None)
    val = (BatchLoader(val_data.padded(cfg.pad_to), eval_batch, False, False, cfg.seed, d.rank, d.world)
           if val_data is not None else None)

    def epoch_batches(epoch: int):
        train_loader.set_epoch(epoch)
        return train_loader
    return _Data(epoch_batches, lambda: test_loader, (lambda: train_eval) if train_eval is not None else None,
                 (lambda: val) if val is not None else None, len(train_loader), train_data.num_classes,
                 train_data.in_chans, augmenter)


@dataclass
class _Trainer:
    """The run's model (and its DDP/compiled wrapper), optimiser, schedules and loss."""

    cfg: TrainConfig
    d: _Dist
    device: torch.device
    model: nn.Module
    net: nn.Module  # what the training step calls: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    temperature: TemperatureSchedule | None
    loss: StudentLoss
    steps_per_epoch: int
    out: Path | None
    ema: Any = None  # timm's ModelEmaV3 of the model (``ema_decay``), or None

    def set_schedules(self, epoch: int, step: int) -> None:
        """Learning rate and temperature for this step (every step, or at each epoch's start)."""
        cfg = self.cfg
        if self.temperature is not None:
            set_temperature(self.model, self.temperature(epoch + (step / self.steps_per_epoch
                                                                  if cfg.schedule_per_step else 0.0)))
        if cfg.schedule_per_step:
            self.scheduler.step_update(epoch * self.steps_per_epoch + step)
        elif step == 0:
            self.scheduler.step(epoch)


def _optimizer_and_schedule(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
    from timm.scheduler import CosineLRScheduler

    # the fused kernel (torch >= 2.4, CPU and CUDA) is the same AdamW update, ~5x faster than the per-tensor loop
    fused = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.wd_conv, cfg.wd_other, cfg.norm_lr_scale), lr=cfg.lr,
                                  **({"fused": True} if fused else {}))
    warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else 5 * cfg.epochs / 512
    unit = steps_per_epoch if cfg.schedule_per_step else 1
    span = cfg.epochs - warmup if cfg.anneal_to_end else cfg.epochs
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, round(span * unit)), lr_min=cfg.min_lr,
                                  warmup_t=round(warmup * unit), warmup_lr_init=cfg.warmup_lr, warmup_prefix=True,
                                  t_in_epochs=not cfg.schedule_per_step)
    return optimizer, scheduler


def _trainer(cfg: TrainConfig, d: _Dist, device: torch.device, data: _Data, given: Mapping[str, Teacher]
             ) -> _Trainer:
    if data.steps_per_epoch == 0:
        raise ValueError(f"the training split has fewer samples than one batch ({cfg.batch_size})")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.num_classes, data.in_chans, **cfg.model_options()).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    optimizer, scheduler = _optimizer_and_schedule(cfg, model, data.steps_per_epoch)
    teachers = {n: given[n].model.eval().requires_grad_(False).to(device) for n in cfg.teachers}
    # CUDA: the official fp16 autocast for the teachers; CPU: bf16 with --amp
    autocast = {"device_type": device.type, "dtype": torch.float16 if device.type == "cuda" else torch.bfloat16,
                "enabled": device.type == "cuda" or cfg.amp}
    smoothing = data.augmenter.config.label_smoothing if data.augmenter is not None else 0.0
    loss = StudentLoss(teachers, cfg.kd_weighting, cfg.kd_granularity, smoothing, autocast)
    has_temperature = get_temperature(model) is not None
    temperature = TemperatureSchedule(cfg.epochs, reach=cfg.temperature_reach) if has_temperature else None
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.ema_decay, exclude_buffers=True)  # buffers (temperature) copied
    return _Trainer(cfg, d, device, model, net, optimizer, scheduler, temperature, loss, data.steps_per_epoch,
                    Path(cfg.out) if cfg.out else None, ema)


def _read_resume_state(cfg: TrainConfig) -> dict | None:
    """The checkpoint to resume from (``None``: start afresh); refuses to overwrite or mix runs."""
    if cfg.out is None:
        return None
    ckpt = Path(cfg.out) / "last.pt"
    if not ckpt.exists():
        return None
    if not cfg.resume:
        raise FileExistsError(f"{cfg.out} already holds a run; pass --resume to continue it or choose another --out")
    state = read_checkpoint(ckpt)
    if state.get("config_hash") != config_hash(cfg):
        raise CheckpointError(f"{ckpt} was written by a different configuration; use another --out")
    return state


# --------------------------------------------------------------------------------------------- one epoch
def train_one_epoch(tr: _Trainer, data: _Data, epoch: int, active: Sequence[str], trace: list[dict]) -> dict:
    """One pass over the training batches; appends 16 trace points; returns the epoch's training metrics."""
    cfg, d, device = tr.cfg, tr.d, tr.device
    t_epoch = time.perf_counter()
    _seed_everything(epoch_seed(cfg.seed, epoch) + d.rank)
    tr.model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n (n filled at the end)
    alpha_sum = torch.zeros(max(1, len(active)), dtype=torch.float64, device=device)
    seen, trace_every = 0, max(1, tr.steps_per_epoch // 16)
    from ..progress import tqdm_class
    bar = tqdm_class()(data.train(epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not (cfg.progress and d.main), total=tr.steps_per_epoch)
    for step, (images, labels) in enumerate(bar):
        tr.set_schedules(epoch, step)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x, target = data.augmenter.train_batch(images, labels) if data.augmenter is not None else (images, labels)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            logits = tr.net(x)
        logits = logits.float()
        loss, alpha = tr.loss(logits, x, target, active)
        if alpha is not None:
            alpha_sum += alpha.detach().double() * len(labels)
        # A CUDA step must not wait for the GPU: there the check (and the host copy of the sums) happens only at
        # trace points and at the end of the epoch; on the CPU it costs nothing, so every step.
        at_trace = step % trace_every == 0 or step == tr.steps_per_epoch - 1
        if (device.type == "cpu" or at_trace) and not torch.isfinite(loss):
            kept = f" (last good checkpoint kept: {tr.out / 'last.pt'})" if tr.out is not None and epoch else ""
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}{kept}; "
                                   "lower the learning rate or check the data")
        tr.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(tr.model.parameters(), cfg.clip_grad)
        tr.optimizer.step()
        if tr.ema is not None:
            tr.ema.update(tr.model)
        sums[:2] += torch.stack([loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double()])
        seen += len(labels)
        if at_trace:
            bar.set_postfix(loss=f"{sums[0].item() / seen:.3f}", refresh=False)
            trace.append({"progress": epoch + step / tr.steps_per_epoch, "loss": loss.item(),
                          "lr": tr.optimizer.param_groups[0]["lr"], **_binarization(tr)})
    sums[2] = seen
    sums, alpha_sum = _all_sum(sums, d, device), _all_sum(alpha_sum, d, device)
    seconds = time.perf_counter() - t_epoch
    row = {"train_loss": sums[0].item() / sums[2].item(), "train_top1": 100 * sums[1].item() / sums[2].item(),
           "train_images_s": sums[2].item() / seconds, "train_s": seconds}
    row.update({f"alpha_{k}": alpha_sum[k].item() / sums[2].item() for k in range(len(active))})
    return row


def _binarization(tr: _Trainer) -> dict:
    has = tr.temperature is not None
    return {"temperature": get_temperature(tr.model) if has else None,
            "saturated": saturated_fraction(tr.model) if has else None}


def validate(model: nn.Module, batches, augmenter: Augmenter | None, device: torch.device, d: _Dist | None = None,
             flip: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and top-1 (%) over ``batches`` in eval mode, summed over all processes. ``flip``: the
    logits are the mean of the image's and its mirror image's (flip test-time augmentation)."""
    model.eval()
    ev = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            x = augmenter.eval_batch(images) if augmenter is not None else images
            logits = model(x).float()
            if flip:
                logits = (logits + model(x.flip(-1)).float()) / 2
            ev += torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(),
                                (logits.argmax(1) == labels).sum().item(), len(labels)], dtype=torch.float64)
    ev = _all_sum(ev, d or _Dist(), device)
    n = max(1.0, ev[2].item())
    return ev[0].item() / n, 100 * ev[1].item() / n


def evaluation_splits(cfg: TrainConfig) -> tuple[dict[str, Any], Augmenter | None]:
    """The batches a run of ``cfg`` is evaluated on (``test``; ``val`` with a validation split; ``train`` with
    ``eval_train``) and the augmenter that normalises them, for evaluating a trained model again (e.g. with
    ``validate(..., flip=True)``) without rebuilding the run's data by hand."""
    data = _data(cfg, _Dist())
    splits = {"test": data.test()}
    if data.val is not None:
        splits["val"] = data.val()
    if data.train_eval is not None:
        splits["train"] = data.train_eval()
    return splits, data.augmenter


@torch.no_grad()
def _recompute_batch_norm(model: nn.Module, batches, augmenter: Augmenter | None, device: torch.device,
                          n_batches: int) -> None:
    """Set every BatchNorm's running statistics to their average over the first ``n_batches`` of ``batches``
    (augmented as for training): an averaged model's own statistics, not those of the weights it averages."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    for i, (images, labels) in enumerate(batches):
        if i == n_batches:
            break
        images, labels = images.to(device), labels.to(device)
        model(augmenter.train_batch(images, labels)[0] if augmenter is not None else images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def _evaluated_model(tr: _Trainer, data: _Data, epoch: int) -> nn.Module:
    """The model an evaluation reads: the trained one, or its moving average with BatchNorm recomputed."""
    if tr.ema is None:
        return tr.model
    _recompute_batch_norm(tr.ema.module, data.train(epoch), data.augmenter, tr.device, EMA_BN_BATCHES)
    return tr.ema.module


# --------------------------------------------------------------------------------------------- the run
def _epoch_row(tr: _Trainer, data: _Data, epoch: int, active: Sequence[str], t_epoch: float,
               train_row: dict) -> dict:
    evaluate = (epoch + 1) % tr.cfg.eval_every == 0 or epoch + 1 == tr.cfg.epochs
    model = _evaluated_model(tr, data, epoch) if evaluate else tr.model
    test_loss, test_top1 = (validate(model, data.test(), data.augmenter, tr.device, tr.d) if evaluate
                            else (None, None))
    row = {"epoch": epoch + 1, "train_loss": train_row["train_loss"], "train_top1": train_row["train_top1"],
           "test_loss": test_loss, "test_top1": test_top1, "lr": tr.optimizer.param_groups[0]["lr"],
           **_binarization(tr), "teachers": "+".join(active), "train_images_s": train_row["train_images_s"],
           "train_s": train_row["train_s"], "epoch_s": time.perf_counter() - t_epoch}
    if data.val is not None:
        row["val_loss"], row["val_top1"] = (validate(model, data.val(), data.augmenter, tr.device, tr.d)
                                            if evaluate else (None, None))
    if data.train_eval is not None and evaluate:
        row["train_eval_loss"], row["train_eval_top1"] = validate(model, data.train_eval(), data.augmenter,
                                                                  tr.device, tr.d)
    row.update({k: v for k, v in train_row.items() if k.startswith("alpha_")})
    return row


def _checkpoint(tr: _Trainer, epoch: int, history: list[dict], trace: list[dict]) -> None:
    """``last.pt`` (model, optimiser, history) and the metric files, atomically, on the main process."""
    if tr.out is None or not tr.d.main:
        return
    tr.out.mkdir(parents=True, exist_ok=True)
    atomic_save({"epoch": epoch, "model": tr.model.state_dict(), "optimizer": tr.optimizer.state_dict(),
                 "history": history, "trace": trace, "config": tr.cfg.to_dict(),
                 "config_hash": config_hash(tr.cfg)}
                | ({"ema": tr.ema.module.state_dict()} if tr.ema is not None else {}), tr.out / "last.pt")
    _write_metrics(tr.out, history, trace)


def _log(cfg: TrainConfig, row: dict) -> None:
    msg = (f"{cfg.model} epoch {row['epoch']}/{cfg.epochs}: train loss {row['train_loss']:.4f} "
           f"top-1 {row['train_top1']:.2f}")
    if row["test_top1"] is not None:
        msg += f" | test loss {row['test_loss']:.4f} top-1 {row['test_top1']:.2f}"
    msg += f" | lr {row['lr']:.2e}"
    if row["temperature"] is not None:
        msg += f" tau {row['temperature']:.2e}"
    print(msg + f" | {row['train_images_s']:.0f} img/s", file=sys.stderr, flush=True)


def _train(cfg: TrainConfig, callbacks: Sequence[Callable[[int, dict], None]], single_process: bool,
           given: Mapping[str, Teacher]) -> dict:
    device_kind = resolve_device(cfg.device).type
    d = _Dist() if single_process else _init_distributed(device_kind)
    device = torch.device(f"cuda:{d.local_rank}" if device_kind == "cuda" else "cpu")
    if device_kind == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device_kind == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    resume = _read_resume_state(cfg)
    t_start = time.perf_counter()
    _seed_everything(cfg.seed)
    data = _data(cfg, d)
    tr = _trainer(cfg, d, device, data, given)
    start_epoch, history, trace = 0, [], []
    if resume is not None:
        tr.model.load_state_dict(resume["model"])
        if tr.ema is not None:
            tr.ema.module.load_state_dict(resume["ema"])
        tr.optimizer.load_state_dict(resume["optimizer"])
        start_epoch, history, trace = resume["epoch"] + 1, resume["history"], resume.get("trace", [])
    wall_offset = history[-1]["wall_s"] if history else 0.0
    rounds = ConsecutiveKD.from_list(list(cfg.teachers), cfg.epochs) if cfg.teachers else None
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        active = rounds.teachers_for(epoch) if rounds is not None else []
        train_row = train_one_epoch(tr, data, epoch, active, trace)
        row = _epoch_row(tr, data, epoch, active, t_epoch, train_row)
        row["wall_s"] = wall_offset + (time.perf_counter() - t_start)
        history.append(row)
        _checkpoint(tr, epoch, history, trace)
        if d.main:
            _log(cfg, row)
        for cb in callbacks:
            cb(epoch, row)
    if d.world > 1:
        dist.barrier()
    summary = {"final": history[-1] if history else None, "history": history, "trace": trace,
               "wall_s": history[-1]["wall_s"] if history else 0.0, "out": cfg.out,
               "config": cfg.to_dict(), "teachers": {n: given[n].test_top1 for n in cfg.teachers},
               "num_classes": data.num_classes, "in_chans": data.in_chans}
    if tr.out is not None and d.main:
        atomic_write_text(tr.out / "result.json", json.dumps(summary, indent=1))
    summary["model"] = tr.model if tr.ema is None else tr.ema.module
    return summary
