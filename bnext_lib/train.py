"""The training engine and its CLI: ``python -m bnext_lib.train`` (unchanged under ``torchrun``).

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
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .augment import Augmenter, parse_augment
from .binary import TemperatureSchedule, get_temperature, saturated_fraction, set_temperature
from .checkpoints import CheckpointError, atomic_save, atomic_write, atomic_write_text, read_checkpoint
from .data import DATASETS, BatchLoader, epoch_seed, load_dataset
from .distill import ConsecutiveKD, MultiTeacherLoss, Teacher
from .models import create_model, list_models
from .models.teachers import TEACHER_RECIPES

__all__ = ["TrainConfig", "TrainingDiverged", "train", "build_model", "config_hash"]


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
        train_subset, test_subset: class-stratified subsets (``None``: all).
        image_size: input side for ``imagefolder`` (in-memory datasets keep their size).
        pad_to: zero-pad in-memory images (train and test) to this side before anything else (``None``: as
            stored). 28x28 Fashion-MNIST padded to 32 gives every stride-2 stage an even map, as on CIFAR.
        epochs, batch_size: run length; *global* batch size over all processes.
        lr, min_lr, warmup_lr, warmup_epochs: AdamW and timm cosine schedule (``warmup_epochs`` ``None``: 5/512
            of the run, the official proportion).
        wd_conv, wd_other: weight decay of 4-D kernels / everything else.
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
        seed: base seed of everything random.
        device: ``auto``, ``cpu``, ``cuda``.
        amp: run the student's training forward (and, on the CPU, the teachers) under bf16 autocast, on CPU and
            CUDA; evaluation stays float32. Its cost in accuracy is measured in the README.
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
    image_size: int = 224
    pad_to: int | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-7
    warmup_lr: float = 1e-5
    warmup_epochs: float | None = None
    wd_conv: float = 1e-8
    wd_other: float = 1e-3
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
    seed: int = 0
    device: str = "auto"
    amp: bool = False
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
        for name in ("epochs", "batch_size", "teacher_epochs", "image_size"):
            if int(getattr(self, name)) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset", "teacher_subset", "pad_to"):
            v = getattr(self, name)
            if v is not None and v < 1:
                errors.append(f"{name} must be >= 1 or None, got {v}")
        for name in ("lr", "min_lr", "warmup_lr", "wd_conv", "wd_other", "clip_grad"):
            if getattr(self, name) < 0 or not math.isfinite(getattr(self, name)):
                errors.append(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            errors.append(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
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
        for t in self.teachers:
            if not t.startswith("timm:") and t not in list_models():
                errors.append(f"teacher {t!r} must be 'timm:<name>' or a registered model")
            elif t.startswith("timm:"):
                import timm
                if not timm.is_model(t[5:]):
                    errors.append(f"teacher {t!r}: timm has no model {t[5:]!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            errors.append(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            errors.append("device 'cuda' asked for but CUDA is not available")
        if self.stem_stride not in (None, 1, 2):
            errors.append(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        if self.dataset == "imagefolder" and (self.pad_to is not None or self.eval_train):
            errors.append("pad_to and eval_train apply to in-memory datasets, not imagefolder")
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
_LATER_OPTIONS = {"pad_to": None, "eval_train": False, "teacher_recipe": "adamw-cosine"}


def config_hash(cfg: TrainConfig,
                ignore: Sequence[str] = ("out", "resume", "progress", "threads", "device", "compile")) -> str:
    """A short digest of everything that changes a run's numbers."""
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in ignore and not (k in _LATER_OPTIONS and v == _LATER_OPTIONS[k])}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- helpers
def build_model(name: str, num_classes: int, in_chans: int, **options) -> nn.Module:
    """A registered model, or ``timm:<name>`` built by timm (full precision)."""
    if name.startswith("timm:"):
        import timm
        return timm.create_model(name[5:], num_classes=num_classes, in_chans=in_chans)
    return create_model(name, num_classes=num_classes, in_chans=in_chans, **options)


def _param_groups(model: nn.Module, wd_conv: float, wd_other: float) -> list[dict]:
    kernels, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (kernels if p.ndim == 4 or "binary_conv" in name else other).append(p)
    return [{"params": other, "weight_decay": wd_other}, {"params": kernels, "weight_decay": wd_conv}]


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


class _FolderData:
    """An ImageNet-style folder split (``train/``, ``val/``) read lazily with torchvision's ImageFolder."""

    def __init__(self, root: Path, split: str, image_size: int, augment: str):
        from timm.data import create_transform
        from torchvision.datasets import ImageFolder

        folder = root / ("train" if split == "train" else "val")
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist (expected {root}/train and {root}/val)")
        cfg = parse_augment(augment)
        transform = create_transform(image_size, is_training=split == "train", auto_augment=cfg.randaugment,
                                     re_prob=cfg.random_erasing, interpolation="bicubic",
                                     crop_pct=0.95, hflip=0.5 if cfg.flip else 0.0)
        self.dataset = ImageFolder(str(folder), transform=transform)
        self.num_classes, self.in_chans = len(self.dataset.classes), 3

    def loader(self, batch: int, shuffle: bool, seed: int, d: _Dist, workers: int):
        from torch.utils.data import DataLoader, DistributedSampler

        sampler = DistributedSampler(self.dataset, d.world, d.rank, shuffle=shuffle, seed=seed, drop_last=shuffle)
        return DataLoader(self.dataset, batch_size=batch // d.world, sampler=sampler, num_workers=workers,
                          drop_last=shuffle, pin_memory=torch.cuda.is_available())


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


def _evaluate(model: nn.Module, batches, augmenter: Augmenter | None, device: torch.device, d: _Dist
              ) -> torch.Tensor:
    """Summed cross-entropy, correct predictions and samples over ``batches`` in eval mode (all processes)."""
    model.eval()
    ev = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            x = augmenter.eval_batch(images) if augmenter is not None else images
            logits = model(x).float()
            ev += torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(),
                                (logits.argmax(1) == labels).sum().item(), len(labels)], dtype=torch.float64)
    return _all_sum(ev, d, device)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _train(cfg: TrainConfig, callbacks: Sequence[Callable[[int, dict], None]], single_process: bool,
           given: dict[str, Teacher]) -> dict:
    device_kind = resolve_device(cfg.device).type
    d = _Dist() if single_process else _init_distributed(device_kind)
    device = torch.device(f"cuda:{d.local_rank}" if device_kind == "cuda" else "cpu")
    if device_kind == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device_kind == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = Path(cfg.out) if cfg.out else None
    start_epoch, history, trace = 0, [], []
    resume_state = None
    if out is not None:
        ckpt = out / "last.pt"
        if cfg.resume and ckpt.exists():
            resume_state = read_checkpoint(ckpt)
            if resume_state.get("config_hash") != config_hash(cfg):
                raise CheckpointError(f"{ckpt} was written by a different configuration; use another --out")
        elif ckpt.exists() and not cfg.resume:
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    # data
    t_start = time.perf_counter()
    _seed_everything(cfg.seed)
    folder = None
    if cfg.dataset == "imagefolder":
        root = Path(cfg.data_root or "data/imagenet")
        folder = {s: _FolderData(root, s, cfg.image_size, cfg.augment if s == "train" else "none")
                  for s in ("train", "test")}
        num_classes, in_chans = folder["train"].num_classes, 3
        augmenter = None
    else:
        # subsets are part of the data, not of the seed: every seed and variant sees the same images
        train_data = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download).subset(cfg.train_subset)
        test_data = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download).subset(cfg.test_subset)
        train_data, test_data = train_data.padded(cfg.pad_to), test_data.padded(cfg.pad_to)
        num_classes, in_chans = train_data.num_classes, train_data.in_chans
        augmenter = Augmenter(cfg.augment, train_data.mean, train_data.std, num_classes)
        train_loader = BatchLoader(train_data, cfg.batch_size, True, True, cfg.seed, d.rank, d.world,
                                   augmenter.sample_transform())
        test_loader = BatchLoader(test_data, max(cfg.batch_size, 256 * d.world), False, False, cfg.seed, d.rank,
                                  d.world)
    train_eval_loader = None
    if cfg.eval_train:
        train_eval_loader = BatchLoader(train_data, max(cfg.batch_size, 256 * d.world), False, False, cfg.seed,
                                        d.rank, d.world)

    # model, teachers
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes, in_chans, **cfg.model_options()).to(device)
    schedule_kd = ConsecutiveKD.from_list(list(cfg.teachers), cfg.epochs) if cfg.teachers else None
    teachers = {n: given[n].model.eval().requires_grad_(False).to(device) for n in cfg.teachers}
    teacher_acc = {n: given[n].test_top1 for n in cfg.teachers}
    kd_loss = MultiTeacherLoss(cfg.kd_weighting, cfg.kd_granularity)
    from timm.loss import SoftTargetCrossEntropy
    soft_ce = SoftTargetCrossEntropy()

    ddp_model = model
    if d.world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device_kind == "cuda" else None)
    if cfg.compile:
        ddp_model = torch.compile(ddp_model)

    # optimiser and schedules
    from timm.scheduler import CosineLRScheduler

    steps_per_epoch = len(train_loader) if folder is None else len(folder["train"].loader(
        cfg.batch_size, True, cfg.seed, d, 0))
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has fewer samples than one batch ({cfg.batch_size})")
    # the fused kernel (torch >= 2.4, CPU and CUDA) is the same AdamW update, ~5x faster than the per-tensor loop
    fused = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.wd_conv, cfg.wd_other), lr=cfg.lr,
                                  **({"fused": True} if fused else {}))
    warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else 5 * cfg.epochs / 512
    unit = steps_per_epoch if cfg.schedule_per_step else 1
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, round(cfg.epochs * unit)), lr_min=cfg.min_lr,
                                  warmup_t=round(warmup * unit), warmup_lr_init=cfg.warmup_lr, warmup_prefix=True,
                                  t_in_epochs=not cfg.schedule_per_step)
    temperature = TemperatureSchedule(cfg.epochs, reach=cfg.temperature_reach)
    has_temperature = get_temperature(model) is not None
    trace_every = max(1, steps_per_epoch // 16)

    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        start_epoch, history = resume_state["epoch"] + 1, resume_state["history"]
        trace = resume_state.get("trace", [])

    teacher_dtype = torch.float16 if device_kind == "cuda" else torch.bfloat16  # CUDA: the official autocast
    wall_offset = history[-1]["wall_s"] if history else 0.0
    from .progress import tqdm_class
    tqdm = tqdm_class()  # a widget in Jupyter, text elsewhere

    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        _seed_everything(epoch_seed(cfg.seed, epoch) + d.rank)
        active = schedule_kd.teachers_for(epoch) if schedule_kd is not None else []
        model.train()
        if folder is None:
            train_loader.set_epoch(epoch)
            batches = train_loader
        else:
            batches = folder["train"].loader(cfg.batch_size, True, cfg.seed, d, _workers())
            batches.sampler.set_epoch(epoch)
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n (n filled at the end)
        seen = 0
        alpha_sum = torch.zeros(max(1, len(active)), dtype=torch.float64, device=device)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and d.main), total=steps_per_epoch)
        for step, (images, labels) in enumerate(bar):
            progress = epoch + (step / steps_per_epoch if cfg.schedule_per_step else 0.0)
            if has_temperature:
                set_temperature(model, temperature(progress))
            if cfg.schedule_per_step:
                scheduler.step_update(epoch * steps_per_epoch + step)
            elif step == 0:
                scheduler.step(epoch)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if augmenter is not None:
                x, target = augmenter.train_batch(images, labels)
            else:
                x, target = images, labels
            with torch.autocast(device_kind, dtype=torch.bfloat16, enabled=cfg.amp):
                logits = ddp_model(x)
            logits = logits.float()
            if active:
                with torch.no_grad(), torch.autocast(device_kind, dtype=teacher_dtype,
                                                     enabled=device_kind == "cuda" or cfg.amp):
                    t_logits = [teachers[t](x).float() for t in active]
                loss, alpha = kd_loss(logits, t_logits)
                alpha_sum += alpha.detach().double() * len(labels)
            elif target.ndim == 2:  # mixup / cutmix targets
                loss = soft_ce(logits, target)
            else:
                smoothing = augmenter.config.label_smoothing if augmenter is not None else 0.0
                loss = F.cross_entropy(logits, target, label_smoothing=smoothing)
            # A CUDA step must not wait for the GPU: there the check (and the host copy of the sums) happens
            # only at trace points and at the end of the epoch; on the CPU it costs nothing, so every step.
            at_trace = step % trace_every == 0 or step == steps_per_epoch - 1
            if (device_kind == "cpu" or at_trace) and not torch.isfinite(loss):
                where = f" (last good checkpoint kept: {out / 'last.pt'})" if out is not None and epoch else ""
                raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}{where}; "
                                       "lower the learning rate or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            n = len(labels)
            sums[:2] += torch.stack([loss.detach().double() * n, (logits.argmax(1) == labels).sum().double()])
            seen += n
            if at_trace:
                bar.set_postfix(loss=f"{sums[0].item() / seen:.3f}", refresh=False)
                trace.append({"progress": epoch + step / steps_per_epoch, "loss": loss.item(),
                              "lr": optimizer.param_groups[0]["lr"],
                              "temperature": get_temperature(model) if has_temperature else None,
                              "saturated": saturated_fraction(model) if has_temperature else None})
        sums[2] = seen
        sums = _all_sum(sums, d, device)
        train_time = time.perf_counter() - t_epoch
        alpha_sum = _all_sum(alpha_sum, d, device)

        # evaluation
        test_batches = test_loader if folder is None else folder["test"].loader(max(cfg.batch_size, 256), False,
                                                                                 cfg.seed, d, _workers())
        ev = _evaluate(model, test_batches, augmenter, device, d)
        row = {
            "epoch": epoch + 1,
            "train_loss": sums[0].item() / sums[2].item(),
            "train_top1": 100 * sums[1].item() / sums[2].item(),
            "test_loss": ev[0].item() / max(1.0, ev[2].item()),
            "test_top1": 100 * ev[1].item() / max(1.0, ev[2].item()),
            "lr": optimizer.param_groups[0]["lr"],
            "temperature": get_temperature(model) if has_temperature else None,
            "saturated": saturated_fraction(model) if has_temperature else None,
            "teachers": "+".join(active),
            "train_images_s": sums[2].item() / train_time,
            "epoch_s": time.perf_counter() - t_epoch,
        }
        if train_eval_loader is not None:
            tr = _evaluate(model, train_eval_loader, augmenter, device, d)
            row["train_eval_loss"] = tr[0].item() / max(1.0, tr[2].item())
            row["train_eval_top1"] = 100 * tr[1].item() / max(1.0, tr[2].item())
        for k, name in enumerate(active):
            row[f"alpha_{k}"] = alpha_sum[k].item() / sums[2].item()
        row["wall_s"] = wall_offset + (time.perf_counter() - t_start)
        history.append(row)
        if out is not None and d.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "history": history, "trace": trace, "config": cfg.to_dict(),
                         "config_hash": config_hash(cfg)}, out / "last.pt")
            _write_metrics(out, history, trace)
        if d.main:
            msg = (f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.2f}"
                   f" | test loss {row['test_loss']:.4f} top-1 {row['test_top1']:.2f} | lr {row['lr']:.2e}")
            if has_temperature:
                msg += f" tau {row['temperature']:.2e}"
            msg += f" | {row['train_images_s']:.0f} img/s"
            print(msg, file=sys.stderr, flush=True)
        for cb in callbacks:
            cb(epoch, row)
    if d.world > 1:
        dist.barrier()
    summary = {"final": history[-1] if history else None, "history": history, "trace": trace,
               "wall_s": history[-1]["wall_s"] if history else 0.0, "out": str(out) if out else None,
               "config": cfg.to_dict(), "teachers": teacher_acc, "num_classes": num_classes, "in_chans": in_chans}
    if out is not None and d.main:
        atomic_write_text(out / "result.json", json.dumps(summary, indent=1))
    summary["model"] = model
    return summary


if __name__ == "__main__":  # python -m bnext_lib.train: the command line lives in bnext_lib.cli
    from bnext_lib.cli import main as _main
    sys.exit(_main())
