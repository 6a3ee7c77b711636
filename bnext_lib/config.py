"""What a run is: :class:`TrainConfig`, every option with its help, choices and digest rule, and the teachers.

One declarative home: each field of :class:`TrainConfig` carries its metadata (:func:`option`), from which the
command line (:mod:`bnext_lib.cli`), the choice checks of :meth:`TrainConfig.validate`, the run's digest
(:func:`config_hash`) and the run cache's fallback for runs cached before an option existed all follow. Adding an
option is one ``option(...)`` line here (and its use in the engine).

The teacher concept lives here too: the recipes that train teachers (:data:`TEACHER_RECIPES`), the
``name@epochs`` spelling (:func:`split_teacher`) and the run that trains a student's teacher
(:func:`teacher_config`). The model modules need none of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

from .augment import parse_augment
from .data import DATASETS
from .models.registry import check_model_name, check_model_options, timm_name

__all__ = ["TrainConfig", "option", "config_hash", "in_last_quarter", "ONE_CYCLE", "TEACHER_RECIPES",
           "split_teacher", "teacher_config", "NOT_BEFORE", "NUMERICS"]

# The engine's numerics version, part of every digest from 2 on: bump it with any change to the engine that changes
# a run's numbers (a kernel, an order of operations, a default), so that the runs recorded before it (the ledger,
# bnext_lib.ledger; the run cache) are no longer found under the new digests and are never mixed with new ones.
NUMERICS = 1

# The short-run learning-rate schedule of students and teachers: a linear warm-up over 30 % of the run from lr/25
# to the peak, then cosine to 1e-6 at the end of the run.
ONE_CYCLE = dict(lr=2e-3, warmup_lr=2e-3 / 25, min_lr=1e-6, warmup_fraction=0.3, anneal_to_end=True)

NOT_BEFORE = object()  # an option's ``before``: it existed from the start

# the fields that are the model builder's keyword arguments where set (TrainConfig.model_options)
MODEL_OPTIONS = ("elm_attention", "info_recoupling", "stem_stride", "binary")


def option(default: Any, help: str, *, choices: Sequence | None = None, flag: str | None = None,
           digest: bool = True, before: Any = NOT_BEFORE, teacher: bool = False, cli: bool = True) -> Any:
    """A :class:`TrainConfig` field and what follows from it.

    Args:
        default: the official recipe's value (or the engine's, where the official code has none).
        help: one line for the command line and the docs.
        choices: the allowed values (checked by :meth:`TrainConfig.validate`, offered by the command line).
        flag: the command-line spelling where it is not ``--<name-with-dashes>``; a flag that starts with
            ``--no-`` or names the opposite sets the option to ``not default``.
        digest: whether the option changes a run's numbers (``False``: not in :func:`config_hash`, as the
            output folder, threads or the memory layout).
        before: the value runs had before the option existed: left out of the digest at that value, so that
            cached runs keep their folder.
        teacher: a teacher or distillation option, left out of the digest of a run without teachers.
        cli: offered by the command line.
    """
    meta = dict(help=help, choices=tuple(choices) if choices is not None else None, flag=flag, digest=digest,
                before=before, teacher=teacher, cli=cli)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------- teachers
# TrainConfig fields of each teacher recipe (``warmup_fraction`` is turned into ``warmup_epochs`` per run length).
TEACHER_RECIPES: dict[str, dict] = {
    # the first reports' recipe: AdamW 1e-3, weight decay 0.05 on every parameter, cosine, crop and flip
    "adamw-cosine": dict(batch_size=128, lr=1e-3, wd_conv=0.05, wd_other=0.05, augment="basic"),
    # one-cycle: linear warm-up over 30 % of the run from lr/25 to 2e-3, then cosine to 1e-6 at the end of the run
    # (see benchmarks/teacher_ladder.py for what it reaches)
    "onecycle": dict(ONE_CYCLE, batch_size=128, wd_conv=0.05, wd_other=0.05, augment="basic"),
    # the same warm-up followed by timm's open cosine (lasting the run's length after the warm-up, so never reaching
    # its end): what "onecycle" was before annealing to the end was added; kept so that its teachers stay comparable
    "warmcos": dict(ONE_CYCLE, anneal_to_end=False, batch_size=128, wd_conv=0.05, wd_other=0.05, augment="basic"),
}


def in_last_quarter(epoch, epochs):
    """Whether 1-based ``epoch`` (a number or a numpy array) lies in the last quarter of a run of ``epochs``: where
    the evaluations may be denser (``eval_every_last_quarter``) and the over-fitting check reads its plateau."""
    return epoch > epochs * 0.75


def split_teacher(name: str) -> tuple[str, int | None]:
    """``"timm:resnet10t@16"`` -> ``("timm:resnet10t", 16)``: a teacher name may fix its own training length
    (a weak teacher needs fewer epochs than the strong one); without ``@`` the student's ``teacher_epochs`` apply.

    Raises:
        ValueError: on a length that is not a positive integer.
    """
    model, sep, epochs = name.partition("@")
    if not sep:
        return name, None
    if not epochs.isdigit() or int(epochs) < 1:
        raise ValueError(f"teacher {name!r}: the length after '@' must be a positive number of epochs")
    return model, int(epochs)


# --------------------------------------------------------------------------------------------- the run
@dataclass
class TrainConfig:
    """One training run. Defaults are the official recipe on the default data; a profile can fill them.

    Every field's meaning is its ``help`` (``python -m bnext_lib.train --help`` prints them all;
    ``dataclasses.fields(TrainConfig)[i].metadata`` holds them). Notes that do not fit one line:

    * ``train_subset`` is drawn from the training images left after the validation split (``val_split``), which
      is the same for every run, seed and variant (:meth:`~bnext_lib.data.ImageData.split_validation`) and
      never trained on; recipes, regimes and thresholds are chosen on it, the test set is for reported figures.
      ``subset_seed`` draws it (and the teachers' ``teacher_subset``): a student's teachers learn from the subset
      drawn with the student's ``subset_seed``, whatever their own seed.
    * ``anneal_to_end=False`` (official, timm's ``warmup_prefix``): the cosine lasts ``epochs`` *after* the
      warm-up, which a 512-epoch run barely notices but which leaves a short run with a 30 % warm-up at ~0.2x
      its peak lr; ``True`` ends the run at ``min_lr`` (one-cycle).
    * teachers are not trained by the engine (see :func:`bnext_lib.train.train`); they are runs of the run
      cache (:func:`teacher_config`), always seed 0, so that every student of a study distils from the same ones.
    * ``eval_every``: on a small training subset the full test set costs as much as the epoch itself.
    * ``compile`` and ``channels_last`` change how a run computes, not what, but they change its rounding, which a
      binary network turns into flipped signs: they are part of the digest (when on), so that two machines never
      record different runs under one digest. The thread count and the device are not (a profile fixes them;
      every ledger record keeps them, with the machine).
    """

    model: str = option("bnext_nano", "a registered model (bnext_nano, ...) or timm:<name> (full precision)")
    dataset: str = option("fashion_mnist", "the dataset", choices=DATASETS)
    data_root: str | None = option(None, "data folder (default data/); for imagefolder the folder holding train/ "
                                         "and val/")
    download: bool = option(False, "let torchvision download missing data (needs internet)")
    train_subset: int | None = option(None, "class-stratified training subset (default: all)")
    subset_seed: int = option(0, "the seed that draws train_subset and teacher_subset (a study sets it to the "
                                 "run's seed so that seeds vary the data too)", before=0)
    test_subset: int | None = option(None, "class-stratified test subset (default: all)")
    val_split: int | None = option(None, "hold this many training images out as a fixed, class-stratified "
                                         "validation split (val_top1 in the metrics)", before=None)
    image_size: int = option(224, "input side for imagefolder (in-memory datasets keep their size)")
    pad_to: int | None = option(None, "zero-pad in-memory images (train and test) to this side first; 28x28 "
                                      "Fashion-MNIST padded to 32 gives every stride-2 stage an even map",
                                before=None)
    epochs: int = option(10, "run length in epochs")
    batch_size: int = option(128, "global batch size over all processes")
    lr: float = option(1e-3, "AdamW's peak learning rate")
    min_lr: float = option(1e-7, "the cosine's final learning rate")
    warmup_lr: float = option(1e-5, "the learning rate the linear warm-up starts from")
    warmup_epochs: float | None = option(None, "warm-up length in epochs (default 5/512 of the run, the official "
                                               "proportion)")
    anneal_to_end: bool = option(False, "cosine over the epochs after the warm-up, ending at min_lr (one-cycle)",
                                 before=False)
    wd_conv: float = option(1e-8, "weight decay of 4-D kernels (and anything named binary_conv)")
    wd_other: float = option(1e-3, "weight decay of every other parameter")
    norm_lr_scale: float = option(1.0, "lr multiplier of the per-channel parameters (BatchNorm, PReLU, biases, "
                                       "shifts, Info-Recoupling's mix)", before=1.0)
    precise_bn: int = option(0, "evaluate with every BatchNorm's statistics recomputed over N training batches "
                                "(0: its running statistics, as the official code; an EMA is always recomputed)",
                             before=0)
    ema_decay: float = option(0.0, "evaluate an EMA of the weights with this decay, BatchNorm recomputed (0: off)",
                              before=0.0)
    clip_grad: float = option(5.0, "global gradient-norm clip (0: off)")
    temperature_reach: float = option(0.3, "share of the run at which the binarization temperature reaches its "
                                           "floor (exact sign from there on)")
    schedule_per_step: bool = option(True, "update lr and temperature every step", flag="--per-epoch-schedules")
    augment: str = option("released", "augmentation preset(s) joined by '+': none, basic, flip, randaugment, "
                                      "mixup, cutmix, random_erasing, label_smoothing, released")
    # not a `teacher` option: a run without teachers has always hashed its empty list
    teachers: tuple[str, ...] = option((), "teachers, comma-separated, main teacher last, each timm:<name> or a "
                                           "registered model, optionally @<epochs>")
    teacher_epochs: int = option(4, "teacher training length (a name's @<epochs> wins)", teacher=True)
    teacher_subset: int | None = option(None, "teacher training subset (default: all)", teacher=True)
    teacher_recipe: str = option("adamw-cosine", "the recipe that trains the teachers", choices=TEACHER_RECIPES,
                                 teacher=True, before="adamw-cosine")
    kd_weighting: str = option("adaptive", "multi-teacher weighting", choices=("adaptive", "fixed"), teacher=True)
    kd_granularity: str = option("batch", "per-batch or per-instance teacher weights",
                                 choices=("batch", "instance"), teacher=True)
    elm_attention: bool | None = option(None, "ELM-Attention mixers (default: the builder's)",
                                        flag="--no-elm-attention")
    info_recoupling: bool | None = option(None, "Info-Recoupling gates (default: the builder's)",
                                          flag="--no-info-recoupling")
    stem_stride: int | None = option(None, "stem stride (default: the builder's)", choices=(None, 1, 2))
    binary: bool | None = option(None, "binary convolutions (default: the builder's; --float-twin: the same network "
                                       "with every quantizer removed, BNext family)", flag="--float-twin",
                                 before=None)
    eval_train: bool = option(False, "also evaluate the training split in eval mode without augmentation "
                                     "(train_eval_top1: the train-minus-test gap)", before=False)
    eval_every: int = option(1, "evaluate after every N-th epoch and the last", before=1)
    test_every: int | None = option(None, "evaluate the test set after every N-th epoch and the last (default: "
                                          "eval_every; the validation and training splits keep theirs)",
                                    before=None)
    eval_every_last_quarter: int | None = option(
        None, "evaluate the validation and training splits after every N-th epoch in the last quarter of the run, "
              "where a plateau is read (default: eval_every)", before=None)
    eval_flip: bool = option(False, "evaluate with flip test-time augmentation: the mean of the logits of each "
                                    "image and its mirror image", before=False)
    seed: int = option(0, "base seed of everything random")
    order_seed: int | None = option(None, "seed of the data order and augmentation alone (default: seed), so that "
                                          "a variance budget can vary initialisation and data order apart",
                                    before=None)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", digest=False)
    amp: bool = option(False, "bf16 autocast for the student's training forward (and the teachers on a CPU); "
                              "evaluation stays float32 unless eval_amp")
    eval_amp: bool = option(False, "evaluate under the same autocast as training (bf16 on a CPU)", before=False)
    channels_last: bool = option(False, "train in the channels-last memory format", before=False)
    compile: bool = option(False, "torch.compile the student's training forward", before=False)
    threads: int | None = option(None, "torch CPU threads (default: torch's)", digest=False)
    out: str | None = option(None, "run folder for metrics and checkpoints (default: nothing written)",
                             digest=False)
    resume: bool = option(False, "continue from OUT/last.pt", digest=False)
    progress: bool = option(True, "show tqdm bars", flag="--no-progress", digest=False)

    def _state(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def validate(self) -> None:
        """Check every option before any data is read; raises ``ValueError`` saying what is allowed. A
        configuration is checked once on its way (a study, the executor, the engine): asked again unchanged, it
        returns at once."""
        if self.__dict__.get("_validated") == self._state():
            return
        errors = [e for f in dataclasses.fields(self) for e in _check_choice(f, getattr(self, f.name))]
        model_error = check_model_name(self.model) or check_model_options(self.model, self.model_options())
        if model_error:
            errors.append(f"model {model_error}")
        errors += self._range_errors()
        try:
            parse_augment(self.augment)
        except ValueError as e:
            errors.append(str(e))
        errors += [e for name in self.teachers for e in _teacher_errors(name)]
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            errors.append(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                errors.append("device 'cuda' asked for but CUDA is not available")
        if self.dataset == "imagefolder" and (self.pad_to is not None or self.eval_train or self.val_split):
            errors.append("pad_to, eval_train and val_split apply to in-memory datasets, not imagefolder")
        if self.resume and not self.out:
            errors.append("resume needs an out folder")
        if errors:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(errors))
        self.__dict__["_validated"] = self._state()

    def _range_errors(self) -> list[str]:
        errors = []
        for name in ("epochs", "batch_size", "teacher_epochs", "image_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("test_every", "eval_every_last_quarter"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
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
        if self.precise_bn < 0:
            errors.append(f"precise_bn must be >= 0 batches, got {self.precise_bn}")
        if not 0 <= self.ema_decay < 1:
            errors.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.temperature_reach <= 1:
            errors.append(f"temperature_reach must be in (0, 1], got {self.temperature_reach}")
        return errors

    @property
    def data_seed(self) -> int:
        """The seed of the data order and augmentation: ``order_seed``, else ``seed``."""
        return self.seed if self.order_seed is None else self.order_seed

    def model_options(self) -> dict:
        """The builder options this configuration sets (``None`` ones are left to the builder)."""
        return {k: getattr(self, k) for k in MODEL_OPTIONS if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["teachers"] = list(self.teachers)
        return d


def _check_choice(f: dataclasses.Field, value: Any) -> list[str]:
    if f.type in ("bool", "bool | None") and not (isinstance(value, bool) or (value is None and "None" in f.type)):
        return [f"{f.name} must be true or false{' (or unset)' if 'None' in f.type else ''}, got {value!r}"]
    choices = f.metadata.get("choices")
    if choices is None or value in choices:
        return []
    shown = [c for c in choices if c is not None]
    return [f"{f.name} {value!r} is unknown; choose one of {shown}"]


def _teacher_errors(name: str) -> list[str]:
    try:
        model, _ = split_teacher(name)
    except ValueError as e:
        return [str(e)]
    error = check_model_name(model)
    if error is None:
        return []
    if timm_name(model) is None:
        return [f"teacher {name!r} must be 'timm:<name>' or a registered model (optionally '@<epochs>')"]
    return [f"teacher {error}"]


def field_types() -> dict[str, type]:
    """Each field's value type (``int | None`` -> ``int``; the teachers' tuple -> ``tuple``), for the CLI."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
        out[name] = tuple if origin is tuple else (args[0] if args and origin is not tuple else hint)
    return out


def config_hash(cfg: TrainConfig) -> str:
    """A short digest of everything that changes a run's numbers: the fields whose ``digest`` is true, less those
    at the value they had before they existed, less the teacher options of a run without teachers; with the
    engine's :data:`NUMERICS` version from 2 on. Computed once per configuration (and engine version) on its way,
    however often asked."""
    state = (cfg._state(), NUMERICS)
    memo = cfg.__dict__.get("_digest")
    if memo is not None and memo[0] == state:
        return memo[1]
    values = cfg.to_dict()
    d = {}
    for f in dataclasses.fields(cfg):
        meta, v = f.metadata, values[f.name]
        if not meta["digest"] or (meta["before"] is not NOT_BEFORE and v == meta["before"]):
            continue
        if meta["teacher"] and not cfg.teachers:
            continue
        d[f.name] = v
    if NUMERICS != 1:
        d["numerics"] = NUMERICS
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    cfg.__dict__["_digest"] = (state, digest)
    return digest


def teacher_config(name: str, student: TrainConfig) -> TrainConfig:
    """The run that trains teacher ``name`` for ``student``: the student's data (dataset, teacher subset, padding,
    validation split: a teacher never learns from the images its student is validated on; on a subset, the one
    drawn with the student's ``subset_seed`` and the student's ``eval_every``), the student's precision and
    memory layout (``amp``, ``eval_amp``, ``channels_last``), the student's ``teacher_epochs`` (or the name's own
    ``@<epochs>``) and ``teacher_recipe``, seed 0, cross-entropy. A full-data teacher is the same run for every
    student seed."""
    model, epochs = split_teacher(name)
    epochs = epochs or student.teacher_epochs
    recipe = dict(TEACHER_RECIPES[student.teacher_recipe])
    fraction = recipe.pop("warmup_fraction", None)
    if fraction is not None:
        recipe["warmup_epochs"] = fraction * epochs
    # on a training subset: the student's draw of it, and its evaluation rhythm (the test set costs more than
    # an epoch there)
    on_subset = (dict(subset_seed=student.subset_seed, eval_every=student.eval_every)
                 if student.teacher_subset is not None else {})
    return TrainConfig(model=model, dataset=student.dataset, data_root=student.data_root, download=student.download,
                       epochs=epochs, train_subset=student.teacher_subset, pad_to=student.pad_to,
                       val_split=student.val_split, seed=0, progress=False, compile=student.compile,
                       amp=student.amp, eval_amp=student.eval_amp, channels_last=student.channels_last,
                       threads=student.threads, device=student.device, **recipe, **on_subset)
