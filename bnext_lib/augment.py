"""Named augmentation presets, built from timm and torchvision parts (``docs/method.md`` §9).

A preset name, or several joined by ``+`` (``"basic+randaugment"``), resolves to an :class:`AugmentConfig`;
:class:`Augmenter` applies it. Per-image work that needs PIL (timm's RandAugment) runs in the loader, per image;
everything else runs on whole batches on the training device: random crop with padding, horizontal flip,
normalisation, timm's ``RandomErasing`` and timm's ``Mixup`` (mixup / cutmix, with label smoothing).

Presets (the released recipe, ``released``, is timm RandAugment ``rand-m7-mstd0.5-inc1`` on top of the crop and
flip; mixup, cutmix, random erasing and repeated augmentation are all off in the official scripts):

=================  ==============================================================================================
``none``           nothing
``basic``          random crop with 4 px padding, horizontal flip (the official CIFAR transform)
``flip``           horizontal flip only
``randaugment``    timm RandAugment, the official policy ``rand-m7-mstd0.5-inc1``
``mixup``          timm Mixup, alpha 0.8
``cutmix``         timm CutMix, alpha 1.0
``random_erasing`` timm RandomErasing, probability 0.25, per-pixel noise
``label_smoothing`` label smoothing 0.1 (ignored under distillation, as in the official code)
``released``       ``basic+randaugment``
``randaugment_grey`` ``randaugment`` without the operations that do nothing to a grey image (:data:`GREY_OPS`)
``released_grey``  ``basic+randaugment_grey``: the released recipe for one-channel images
=================  ==============================================================================================

:func:`for_images` gives a preset's grey variant for one-channel data (``benchmarks/randaugment_grey.py`` measured
that RandAugment's colour operation leaves a grey image as it was and AutoContrast nearly so).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "PRESETS", "GREY_OPS", "GREY_DATASETS", "for_images", "parse_augment", "Augmenter"]


@dataclass(frozen=True)
class AugmentConfig:
    """What to apply. Zero / ``None`` / ``False`` disables a part.

    Attributes:
        crop_padding: random crop back to the input size after zero padding by this many pixels.
        flip: random horizontal flip with probability 0.5.
        randaugment: a timm RandAugment config string.
        randaugment_ops: the operations RandAugment draws from (None: the policy's own list).
        mixup: mixup alpha.
        cutmix: cutmix alpha.
        random_erasing: random-erasing probability.
        label_smoothing: label smoothing (with mixup/cutmix it is folded into their soft targets).
    """

    crop_padding: int = 0
    flip: bool = False
    randaugment: str | None = None
    randaugment_ops: tuple[str, ...] | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    random_erasing: float = 0.0
    label_smoothing: float = 0.0


PRESETS = {
    "none": AugmentConfig(),
    "basic": AugmentConfig(crop_padding=4, flip=True),
    "flip": AugmentConfig(flip=True),
    "randaugment": AugmentConfig(randaugment="rand-m7-mstd0.5-inc1"),
    "mixup": AugmentConfig(mixup=0.8),
    "cutmix": AugmentConfig(cutmix=1.0),
    "random_erasing": AugmentConfig(random_erasing=0.25),
    "label_smoothing": AugmentConfig(label_smoothing=0.1),
}
PRESETS["released"] = dataclasses.replace(PRESETS["basic"], randaugment=PRESETS["randaugment"].randaugment)
# The released policy's operations that change a one-channel image: its increasing list without ColorIncreasing
# (saturation: nothing to change) and AutoContrast (mean change 0.0004 grey levels: Fashion-MNIST already spans the
# range); measured by benchmarks/randaugment_grey.py (reports/tables/randaugment_grey_ops.csv), held to it by a test.
GREY_OPS = ("Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
            "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
            "TranslateYRel")
PRESETS["randaugment_grey"] = dataclasses.replace(PRESETS["randaugment"], randaugment_ops=GREY_OPS)
PRESETS["released_grey"] = dataclasses.replace(PRESETS["released"], randaugment_ops=GREY_OPS)
# datasets whose images have one channel
GREY_DATASETS = ("fashion_mnist",)


def for_images(preset: str, grey: bool) -> str:
    """The preset to train with on grey (one-channel) or colour images: a RandAugment preset's grey variant on
    grey images, the preset itself otherwise."""
    return f"{preset}_grey" if grey and f"{preset}_grey" in PRESETS else preset


def parse_augment(spec: str | AugmentConfig) -> AugmentConfig:
    """Resolve ``"name"`` or ``"name+name+..."`` (or pass a config through); unknown names raise ``ValueError``."""
    if isinstance(spec, AugmentConfig):
        return spec
    names = [s.strip() for s in str(spec).split("+") if s.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if not names or unknown:
        raise ValueError(f"unknown augmentation {unknown or spec!r}; choose from {sorted(PRESETS)}, joined by '+'")
    merged = {}
    default = AugmentConfig()
    for n in names:
        for f in dataclasses.fields(AugmentConfig):
            value = getattr(PRESETS[n], f.name)
            if value != getattr(default, f.name):
                merged[f.name] = value
    return AugmentConfig(**merged)


class Augmenter:
    """Applies an :class:`AugmentConfig` to batches of ``uint8`` images.

    Args:
        config: a config or preset spec.
        mean, std: per-channel normalisation (dataset units, [0, 1]).
        num_classes: classes (for mixup/cutmix soft targets).
    """

    def __init__(self, config: AugmentConfig | str, mean: tuple[float, ...], std: tuple[float, ...],
                 num_classes: int):
        self.config = parse_augment(config)
        self.mean, self.std, self.num_classes = tuple(mean), tuple(std), num_classes
        c = self.config
        self._erase = None
        if c.random_erasing > 0:
            from timm.data.random_erasing import RandomErasing
            self._erase = RandomErasing(probability=c.random_erasing, mode="pixel", device="cpu")
        self._mixup = None
        if c.mixup > 0 or c.cutmix > 0:
            from timm.data.mixup import Mixup
            self._mixup = Mixup(mixup_alpha=c.mixup, cutmix_alpha=c.cutmix, label_smoothing=c.label_smoothing,
                                num_classes=num_classes)
        self._ra_fill = tuple(min(255, round(255 * m)) for m in self.mean)
        self._ra_cache: dict[int, object] = {}

    @property
    def soft_targets(self) -> bool:
        """Whether :meth:`train_batch` returns soft (mixed) targets."""
        return self._mixup is not None

    def sample_transform(self):
        """The per-image transform for the loader (``uint8 C x H x W -> uint8 C x H x W``), or ``None``."""
        if not self.config.randaugment:
            return None
        return self._randaugment

    def _randaugment(self, img: torch.Tensor) -> torch.Tensor:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        size = min(img.shape[-2:])
        ra = self._ra_cache.get(size)
        if ra is None:  # timm's own hyper-parameters for the image size (create_transform's aa_params)
            ops = list(self.config.randaugment_ops) if self.config.randaugment_ops else None
            ra = rand_augment_transform(self.config.randaugment, {"translate_const": int(size * 0.45),
                                                                  "img_mean": self._ra_fill}, transforms=ops)
            self._ra_cache[size] = ra
        arr = img.numpy()
        pil = Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
        out = np.asarray(ra(pil))
        out = out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
        return torch.from_numpy(np.array(out))  # a writable copy

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` batch -> normalised float batch."""
        x = images.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one batch (uses the global torch, NumPy and Python generators, seeded per epoch by the engine).

        Returns:
            ``(x, target)``: the normalised float batch and integer labels, or soft targets ``N x K`` when
            mixup/cutmix is on.
        """
        c = self.config
        n, _, h, w = images.shape
        if c.crop_padding:
            p = c.crop_padding
            padded = F.pad(images, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,)).tolist()
            dx = torch.randint(0, 2 * p + 1, (n,)).tolist()
            images = torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx))])
        if c.flip:
            flip = torch.rand(n) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
        x = self.normalize(images)
        if self._erase is not None:
            self._erase.device = x.device
            x = self._erase(x)
        target = labels
        if self._mixup is not None:
            if n % 2:
                raise ValueError("mixup/cutmix need an even batch size per process")
            x, target = self._mixup(x, labels)
        return x, target
