"""The training engine: :class:`TrainConfig`, :func:`train`, :func:`train_one_epoch`, :func:`evaluate`. Its command
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
  evaluation stays float32 unless ``eval_amp``). With ``compile`` the evaluation has its own compiled graph, a
  short last batch padded to the batch size so that it keeps one shape. On CUDA the teachers always run under
  autocast (official), on the CPU under bf16
  autocast when ``amp=True``. A compiled run starts from a fresh compiler state (``torch._dynamo.reset()``), so
  that it ends with the same weights whether it is the first or the tenth run of its process.

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
import json
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

from ..augment import Augmenter
from ..binary import TemperatureSchedule, get_temperature, saturated_fraction, set_temperature
from ..checkpoints import CheckpointError, atomic_save, atomic_write, atomic_write_text, read_checkpoint
from ..config import TrainConfig, config_hash, in_last_quarter
from ..data import BatchLoader, FolderData, ImageData, epoch_seed, load_dataset
from ..distill import ConsecutiveKD, StudentLoss, Teacher
from ..models import build_model
from ..progress import tqdm_class

__all__ = ["TrainConfig", "TrainingDiverged", "train", "train_one_epoch", "evaluate", "evaluation_splits",
           "training_images", "build_model", "config_hash", "resolve_device"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# Training batches whose statistics an EMA model's BatchNorm layers are recomputed on before an evaluation.
EMA_BN_BATCHES = 16


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


def training_images(cfg: TrainConfig) -> tuple[ImageData, ImageData | None]:
    """The images a run of ``cfg`` trains on (an in-memory dataset less its validation split, its
    ``train_subset`` drawn with ``subset_seed``, padded as in training) and its validation split (None without
    one): what the engine, a loss landscape and anything else evaluating "the run's own images" read."""
    # subsets are part of the data, drawn by their own seed: runs of one subset_seed see the same images
    train, val = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download).split_validation(cfg.val_split)
    return train.subset(cfg.train_subset, seed=cfg.subset_seed).padded(cfg.pad_to), val


def _data(cfg: TrainConfig, d: _Dist) -> _Data:
    eval_batch = max(cfg.batch_size, 256 * d.world)
    if cfg.dataset == "imagefolder":
        root = Path(cfg.data_root or "data/imagenet")
        train_split = FolderData(root, "train", cfg.image_size, cfg.augment)
        test_split = FolderData(root, "test", cfg.image_size, "none")
        seed = cfg.data_seed
        return _Data(lambda e: train_split.loader(cfg.batch_size, True, seed, d.rank, d.world, _workers(), e),
                     lambda: test_split.loader(eval_batch, False, seed, d.rank, d.world, _workers()), None, None,
                     train_split.steps(cfg.batch_size, d.world), train_split.num_classes, 3, None)
    train_data, val_data = training_images(cfg)
    test_data = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download).subset(cfg.test_subset)
    test_data = test_data.padded(cfg.pad_to)
    augmenter = Augmenter(cfg.augment, train_data.mean, train_data.std, train_data.num_classes)
    train_loader = BatchLoader(train_data, cfg.batch_size, True, True, cfg.data_seed, d.rank, d.world,
                               augmenter.sample_transform())
    test_loader = BatchLoader(test_data, eval_batch, False, False, cfg.data_seed, d.rank, d.world)
    train_eval = (BatchLoader(train_data, eval_batch, False, False, cfg.data_seed, d.rank, d.world) if cfg.eval_train
                  else None)
    val = (BatchLoader(val_data.padded(cfg.pad_to), eval_batch, False, False, cfg.data_seed, d.rank, d.world)
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
    eval_net: nn.Module | None = None  # the model compiled for evaluation (``compile``, one process), or None
    autocast: dict | None = None  # torch.autocast arguments of the student's forward

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
    # evaluation: its own compiled graph (eval mode, fixed batch shape), sharing the model's parameters
    eval_net = torch.compile(model) if cfg.compile and d.world == 1 else None
    return _Trainer(cfg, d, device, model, net, optimizer, scheduler, temperature, loss, data.steps_per_epoch,
                    Path(cfg.out) if cfg.out else None, ema, eval_net,
                    {"device_type": device.type, "dtype": torch.bfloat16, "enabled": cfg.amp})


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
    _seed_everything(epoch_seed(cfg.data_seed, epoch) + d.rank)
    tr.model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n (n filled at the end)
    alpha_sum = torch.zeros(max(1, len(active)), dtype=torch.float64, device=device)
    seen, trace_every, first_step_s = 0, max(1, tr.steps_per_epoch // 16), None
    bar = tqdm_class()(data.train(epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not (cfg.progress and d.main), total=tr.steps_per_epoch)
    for step, (images, labels) in enumerate(bar):
        tr.set_schedules(epoch, step)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x, target = data.augmenter.train_batch(images, labels) if data.augmenter is not None else (images, labels)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(**tr.autocast):
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
        if step == 0:  # with --compile the first step of a process also compiles (the ledger's cost estimates)
            first_step_s = time.perf_counter() - t_epoch
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
           "train_images_s": sums[2].item() / seconds, "train_s": seconds, "first_step_s": first_step_s}
    row.update({f"alpha_{k}": alpha_sum[k].item() / sums[2].item() for k in range(len(active))})
    return row


def _binarization(tr: _Trainer) -> dict:
    has = tr.temperature is not None
    return {"temperature": get_temperature(tr.model) if has else None,
            "saturated": saturated_fraction(tr.model) if has else None}


def evaluate(model: nn.Module, batches, augmenter: Augmenter | None, device: torch.device, d: _Dist | None = None,
             flip: bool = False, autocast: Mapping | None = None, static: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and top-1 (%) over ``batches`` in eval mode, summed over all processes. ``flip``: the
    logits are the mean of the image's and its mirror image's (flip test-time augmentation). ``autocast``:
    :class:`torch.autocast` arguments for the forward. ``static``: a short last batch is padded to the first
    batch's size (its extra logits dropped), so that a compiled model sees one shape."""
    model.eval()
    ev = torch.zeros(3, dtype=torch.float64)
    full = None
    with torch.no_grad(), torch.autocast(**(autocast or {"device_type": device.type, "enabled": False})):
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            x = augmenter.eval_batch(images) if augmenter is not None else images
            n, full = len(labels), full or len(labels)
            if static and n < full:  # eval mode: a row never changes another row's logits
                x = torch.cat([x, x[:1].expand(full - n, *x.shape[1:])])
            logits = model(x)[:n].float()
            if flip:
                logits = (logits + model(x.flip(-1))[:n].float()) / 2
            ev += torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(),
                                (logits.argmax(1) == labels).sum().item(), len(labels)], dtype=torch.float64)
    ev = _all_sum(ev, d or _Dist(), device)
    n = max(1.0, ev[2].item())
    return ev[0].item() / n, 100 * ev[1].item() / n


def evaluation_splits(cfg: TrainConfig) -> tuple[dict[str, Any], Augmenter | None]:
    """The batches a run of ``cfg`` is evaluated on (``test``; ``val`` with a validation split; ``train`` with
    ``eval_train``) and the augmenter that normalises them, for evaluating a trained model again (e.g. with
    ``evaluate(..., flip=True)``) without rebuilding the run's data by hand."""
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
    """The model an evaluation reads: the trained one (its BatchNorm statistics recomputed with ``precise_bn``), or
    its moving average with BatchNorm recomputed. Recomputing changes no weight and no training step: training
    normalises by each batch's own statistics."""
    if tr.ema is None:
        if tr.cfg.precise_bn:
            _recompute_batch_norm(tr.model, data.train(epoch), data.augmenter, tr.device, tr.cfg.precise_bn)
        return tr.model
    _recompute_batch_norm(tr.ema.module, data.train(epoch), data.augmenter, tr.device, EMA_BN_BATCHES)
    return tr.ema.module


def _eval_period(cfg: TrainConfig, epoch: int) -> int:
    """Every how many epochs the validation and training splits are evaluated at ``epoch`` (1-based): the last
    quarter may be denser, since a plateau is read there (:func:`bnext_lib.record.last_quarter_rise`)."""
    late = cfg.eval_every_last_quarter is not None and in_last_quarter(epoch, cfg.epochs)
    return cfg.eval_every_last_quarter if late else cfg.eval_every


# --------------------------------------------------------------------------------------------- the run
def _epoch_row(tr: _Trainer, data: _Data, epoch: int, active: Sequence[str], t_epoch: float,
               train_row: dict) -> dict:
    last = epoch + 1 == tr.cfg.epochs
    due = (epoch + 1) % _eval_period(tr.cfg, epoch + 1) == 0 or last
    test_due = (epoch + 1) % (tr.cfg.test_every or tr.cfg.eval_every) == 0 or last
    model = _evaluated_model(tr, data, epoch) if due or test_due else tr.model
    static = tr.eval_net is not None and model is tr.model
    model = tr.eval_net if static else model
    opts = dict(flip=tr.cfg.eval_flip, autocast=tr.autocast if tr.cfg.eval_amp else None, static=static)
    test_loss, test_top1 = (evaluate(model, data.test(), data.augmenter, tr.device, tr.d, **opts) if test_due
                            else (None, None))
    row = {"epoch": epoch + 1, "train_loss": train_row["train_loss"], "train_top1": train_row["train_top1"],
           "test_loss": test_loss, "test_top1": test_top1, "lr": tr.optimizer.param_groups[0]["lr"],
           **_binarization(tr), "teachers": "+".join(active), "train_images_s": train_row["train_images_s"],
           "train_s": train_row["train_s"], "first_step_s": train_row["first_step_s"],
           "epoch_s": time.perf_counter() - t_epoch}
    if data.val is not None:
        row["val_loss"], row["val_top1"] = (evaluate(model, data.val(), data.augmenter, tr.device, tr.d, **opts)
                                            if due else (None, None))
    if data.train_eval is not None and due:
        row["train_eval_loss"], row["train_eval_top1"] = evaluate(model, data.train_eval(), data.augmenter,
                                                                  tr.device, tr.d, **opts)
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
    if cfg.compile:
        # what torch.compile learnt from an earlier run of this process (dynamo's caches and shape guesses) changes
        # the kernels it builds: a run must come out as it would alone (docs/method.md §11.3)
        torch._dynamo.reset()
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
