"""BNext: binary networks of the MobileNet-like BNext layout (T/S/M/L), small-image variants, and BNext-18.

Paper: Nianhui Guo, Joseph Bethge, Christoph Meinel, Haojin Yang, "Join the High Accuracy Club on ImageNet with
A Binary Neural Network Ticket", arXiv 2211.12933 (2022); "Towards Optimization-Friendly Binary Neural Network",
TMLR 2023. Official code: https://github.com/hpi-xnor/BNext (``src/bnext.py``, ``src/birealnet.py``), whose
behaviour these modules reproduce; state-dict names are converted by :meth:`BNext.official_key_map`.

Departures from the official code, all without effect on the official configurations:

* the stem stride is an explicit argument (``stem_stride``); the official code uses 1 whenever
  ``num_classes != 1000``;
* the input channels are an argument (``in_chans``; official: 3);
* stride-2 shortcut pooling uses ``ceil_mode`` so that odd feature maps (28x28 inputs) work;
* the unused ``drop_rate`` of the official constructors is not taken.

@article{guo2022bnext, title={Join the High Accuracy Club on ImageNet with A Binary Neural Network Ticket},
  author={Guo, Nianhui and Bethge, Joseph and Meinel, Christoph and Yang, Haojin}, journal={arXiv:2211.12933}}
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..blocks import BinaryUnit, BNextBlock
from .registry import ModelInfo, register_model

__all__ = ["Stem", "BNext", "BNext18Block", "BNext18", "BNEXT_CHANNELS"]


# Stem width, then one output width per block (official ``stage_out_channel_*``).
BNEXT_CHANNELS = {
    "tiny": [32, 64] + [128] * 2 + [256] * 2 + [512] * 6 + [1024] * 2,
    "small": [48, 96] + [192] * 2 + [384] * 2 + [768] * 6 + [1536] * 2,
    "middle": [48, 96] + [192] * 4 + [384] * 4 + [768] * 8 + [1536] * 4,
    "large": [64, 128] + [256] * 4 + [512] * 4 + [1024] * 16 + [2048] * 4,
    # Small-image variants of this project (not in the paper): BNext-T's widths divided by 4, with T's 13 blocks
    # (nano) or two per width after the first (pico, 9). With a stride-2 stem on 28x28 Fashion-MNIST, one 60k-image
    # epoch trains in about 70 s (nano) / 50 s (pico) on 2 CPU cores (benchmarks/train_speed.py).
    "nano": [8, 16] + [32] * 2 + [64] * 2 + [128] * 6 + [256] * 2,
    "pico": [8, 16] + [32] * 2 + [64] * 2 + [128] * 2 + [256] * 2,
    # BNext-T's first seven blocks at half width (1.2 M parameters): wider early stages than nano, for a stride-1
    # stem on 28-32 px images, where the early stages hold most of the information.
    "micro": [16, 32] + [64] * 2 + [128] * 2 + [256] * 2,
}


class Stem(nn.Module):
    """Full-precision stem: conv -> BN (-> 3x3/2 max-pool for ResNet-style ImageNet stems).

    Args:
        in_chans: image channels.
        out_chs: stem width.
        stride: convolution stride.
        kernel_size: 3 (BNext) or 7 (BNext-18 on ImageNet).
        max_pool: follow with a 3x3 stride-2 max-pool.
        unused_prelu: create the PReLU of the official ``firstconv3x3``, which its forward never applies; kept,
            frozen, so that official checkpoints load strictly.
    """

    def __init__(self, in_chans: int, out_chs: int, stride: int = 1, kernel_size: int = 3, max_pool: bool = False,
                 unused_prelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.pool = nn.MaxPool2d(3, 2, 1) if max_pool else nn.Identity()
        if unused_prelu:
            self.prelu = nn.PReLU(out_chs).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(self.conv(x)))


def _check_common(num_classes: int, in_chans: int, stem_stride: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")


class BNext(nn.Module):
    """The BNext network: a full-precision stem, BNext blocks, PReLU, global pooling and a full-precision classifier.

    Block ``i`` (1-based, the stem being 0) uses the ELM-Attention token mixer when ``i`` is even and the additive
    one when it is odd (official); it has stride 2 where the width changes, except in the first block.

    Args:
        channels: stem width, then each block's output width (see ``BNEXT_CHANNELS``).
        num_classes: classifier outputs.
        in_chans: image channels.
        stem_stride: 2 for ImageNet-size inputs, 1 for small images (the official code's choice for
            ``num_classes != 1000``).
        elm_attention: ``False`` replaces every ELM-Attention mixer by the additive one (ablation).
        info_recoupling: ``False`` removes every Info-Recoupling gate (ablation).
        binary: ``False`` builds the float twin: the same network with every convolution's quantizers removed
            (and so no progressive binarization), the arm that asks whether an effect is specific to binary networks.
    """

    def __init__(self, channels: Sequence[int], num_classes: int = 1000, in_chans: int = 3, stem_stride: int = 2,
                 elm_attention: bool = True, info_recoupling: bool = True, binary: bool = True):
        super().__init__()
        _check_common(num_classes, in_chans, stem_stride)
        self.channels = list(channels)
        self.elm_attention = elm_attention
        self.info_recoupling = info_recoupling
        self.binary = binary
        self.num_classes = num_classes
        self.stem = Stem(in_chans, channels[0], stem_stride, unused_prelu=True)
        blocks = []
        for i in range(1, len(channels)):
            stride = 2 if i > 1 and channels[i - 1] != channels[i] else 1
            blocks.append(BNextBlock(channels[i - 1], channels[i], stride,
                                     elm_attention=elm_attention and i % 2 == 0,
                                     info_recoupling=info_recoupling, binary=binary))
        self.blocks = nn.Sequential(*blocks)
        self.prelu = nn.PReLU(channels[-1])
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1))

    def official_key_map(self) -> dict[str, str]:
        """``{our state-dict key: the official BNext key}`` (``feature.<i>.Attention|FFN_3x3|FFN|FFN_1|FFN_2...``)."""
        stem = {"conv": "conv1", "bn": "bn1", "prelu": "prelu"}
        out = {}
        for key in self.state_dict():
            if key.startswith("stem."):
                part, rest = key[len("stem."):].split(".", 1)
                out[key] = f"feature.0.{stem[part]}.{rest}"
            elif key.startswith("blocks."):
                _, j, slot, rest = key.split(".", 3)
                if slot == "mixer":
                    name = "Attention" if self.elm_attention else "FFN_3x3"
                else:
                    k, rest = rest.split(".", 1)
                    name = "FFN" if len(self.blocks[int(j)].ffn) == 1 else f"FFN_{int(k) + 1}"
                out[key] = f"feature.{int(j) + 1}.{name}.{BinaryUnit.official_name(rest)}"
            else:
                out[key] = key
        return out


class BNext18Block(nn.Module):
    """BNext-18's residual block (official ``birealnet.BasicBlock``): an ELM-Attention 3x3 unit, whose shortcut
    is projected (2x2 average pooling, 1x1 conv, BN) where the shape changes, then an additive 3x3 unit."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        shortcut = None
        if stride != 1 or in_chs != out_chs:
            shortcut = nn.Sequential(nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False),
                                     nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs))
        self.mixer = BinaryUnit(in_chs, out_chs, 3, stride, elm_attention=True, shortcut=shortcut,
                                gate_from_shortcut=True, weight_floor=1e-5)
        self.ffn = nn.ModuleList([BinaryUnit(out_chs, out_chs, 3, 1, clamp_in_eval=True, weight_floor=1e-5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn[0](self.mixer(x))


class BNext18(nn.Module):
    """BNext-18: BNext's units in the ResNet-18 layout (official ``birealnet.BNext18``).

    Args:
        num_classes: classifier outputs.
        in_chans: image channels.
        stem_stride: 2 gives the ImageNet stem (7x7/2 conv, BN, 3x3/2 max-pool), 1 the small-image stem (3x3/1
            conv, BN); the official code picks the first for 1000 classes.
        widths: stage widths.
        depths: blocks per stage.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, stem_stride: int = 2,
                 widths: Sequence[int] = (64, 128, 256, 512), depths: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        _check_common(num_classes, in_chans, stem_stride)
        self.num_classes = num_classes
        self.depths = list(depths)
        if stem_stride == 2:
            self.stem = Stem(in_chans, widths[0], 2, kernel_size=7, max_pool=True)
        else:
            self.stem = Stem(in_chans, widths[0], 1)
        blocks, in_chs = [], widths[0]
        for s, (width, depth) in enumerate(zip(widths, depths)):
            for b in range(depth):
                blocks.append(BNext18Block(in_chs, width, 2 if s > 0 and b == 0 else 1))
                in_chs = width
        self.blocks = nn.Sequential(*blocks)
        self.prelu = nn.PReLU(in_chs)
        self.fc = nn.Linear(in_chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1))

    def official_key_map(self) -> dict[str, str]:
        """``{our key: official key}`` (``conv1``, ``bn1``, ``layer<s>.<b>.Attention|FFN...``, ``prelu``, ``fc``)."""
        stage_of = [(s, b) for s, d in enumerate(self.depths) for b in range(d)]
        out = {}
        for key in self.state_dict():
            if key.startswith("stem."):
                part, rest = key[len("stem."):].split(".", 1)
                out[key] = f"{ {'conv': 'conv1', 'bn': 'bn1'}[part]}.{rest}"
            elif key.startswith("blocks."):
                _, j, slot, rest = key.split(".", 3)
                if slot == "ffn":
                    rest = rest.split(".", 1)[1]
                s, b = stage_of[int(j)]
                name = "Attention" if slot == "mixer" else "FFN"
                out[key] = f"layer{s}.{b}.{name}.{BinaryUnit.official_name(rest)}"
            else:
                out[key] = key
        return out


# --------------------------------------------------------------------------------------------- builders
_README = "hpi-xnor/BNext README"
_PAPER = "Guo et al. 2022, arXiv 2211.12933"


def _bnext(size: str, num_classes: int, **kwargs) -> BNext:
    return BNext(BNEXT_CHANNELS[size], num_classes=num_classes, **kwargs)


@register_model(ModelInfo("bnext", _PAPER, 72.4, _README, readme_ops=0.077, readme_degree=97.81))
def bnext_tiny(num_classes: int = 1000, elm_attention: bool = True, info_recoupling: bool = True,
               stem_stride: int = 2, in_chans: int = 3, binary: bool = True) -> BNext:
    """BNext-T (13 blocks, widths 64..1024). Args as for :class:`BNext`."""
    return _bnext("tiny", num_classes, elm_attention=elm_attention, info_recoupling=info_recoupling,
                  stem_stride=stem_stride, in_chans=in_chans, binary=binary)


@register_model(ModelInfo("bnext", _PAPER, 76.1, _README, readme_ops=0.172, readme_degree=98.47))
def bnext_small(num_classes: int = 1000, elm_attention: bool = True, info_recoupling: bool = True,
                stem_stride: int = 2, in_chans: int = 3, binary: bool = True) -> BNext:
    """BNext-S (BNext-T at 1.5x width). Args as for :class:`BNext`."""
    return _bnext("small", num_classes, elm_attention=elm_attention, info_recoupling=info_recoupling,
                  stem_stride=stem_stride, in_chans=in_chans, binary=binary)


@register_model(ModelInfo("bnext", _PAPER, 78.3, _README, readme_ops=0.317, readme_degree=99.02))
def bnext_middle(num_classes: int = 1000, elm_attention: bool = True, info_recoupling: bool = True,
                 stem_stride: int = 2, in_chans: int = 3, binary: bool = True) -> BNext:
    """BNext-M (21 blocks, stages 4:4:8:4, widths 96..1536). Args as for :class:`BNext`."""
    return _bnext("middle", num_classes, elm_attention=elm_attention, info_recoupling=info_recoupling,
                  stem_stride=stem_stride, in_chans=in_chans, binary=binary)


@register_model(ModelInfo("bnext", _PAPER, 80.6, _README, readme_ops=0.819, readme_degree=99.49))
def bnext_large(num_classes: int = 1000, elm_attention: bool = True, info_recoupling: bool = True,
                stem_stride: int = 2, in_chans: int = 3, binary: bool = True) -> BNext:
    """BNext-L (29 blocks, stages 4:4:16:4, widths 128..2048). Args as for :class:`BNext`."""
    return _bnext("large", num_classes, elm_attention=elm_attention, info_recoupling=info_recoupling,
                  stem_stride=stem_stride, in_chans=in_chans, binary=binary)


@register_model(ModelInfo("bnext", "this project (BNext-T at 1/4 width)", imagenet=False))
def bnext_nano(num_classes: int = 1000, elm_attention: bool = True, info_recoupling: bool = True,
               stem_stride: int = 2, in_chans: int = 3, binary: bool = True) -> BNext:
    """BNext-T at 1/4 width (13 blocks, widths 16..256) for Fashion-MNIST / CIFAR on a CPU; the stride-2 stem is
    chosen for speed (28x28 -> 14x14). Args as for :class:`BNext`."""
    return _bnext("nano", num_classes, elm_attention=elm_attention, info_recoupling=info_recoupling,
                  stem_stride=stem_stride, in_chans=in_chans, binary=binary)


@register_model(ModelInfo("bnext", "this project (BNext-T at 1/4 width, two blocks per width)", imagenet=False))
def bnext_pico(num_classes: int = 1000, elm_attention: bool = True, info_recoupling: bool = True,
               stem_stride: int = 2, in_chans: int = 3, binary: bool = True) -> BNext:
    """The smallest BNext (9 blocks, widths 16..256), for tests and quick studies. Args as for :class:`BNext`."""
    return _bnext("pico", num_classes, elm_attention=elm_attention, info_recoupling=info_recoupling,
                  stem_stride=stem_stride, in_chans=in_chans, binary=binary)


@register_model(ModelInfo("bnext", "this project (BNext-T's first 7 blocks at 1/2 width)", imagenet=False))
def bnext_micro(num_classes: int = 1000, elm_attention: bool = True, info_recoupling: bool = True,
                stem_stride: int = 1, in_chans: int = 3, binary: bool = True) -> BNext:
    """BNext-T's first seven blocks at half width (widths 32..256, stride-1 stem by default) for 28-32 px images.
    Args as for :class:`BNext`."""
    return _bnext("micro", num_classes, elm_attention=elm_attention, info_recoupling=info_recoupling,
                  stem_stride=stem_stride, in_chans=in_chans, binary=binary)


@register_model(ModelInfo("bnext", "official code, birealnet.py", None, "not published", readme_degree=61.04))
def bnext18(num_classes: int = 1000, stem_stride: int = 2, in_chans: int = 3) -> BNext18:
    """BNext-18 (ResNet-18 layout with BNext units). Args as for :class:`BNext18`."""
    return BNext18(num_classes, in_chans=in_chans, stem_stride=stem_stride)


@register_model(ModelInfo("bnext", "this project (BNext-18 at 1/4 width)", imagenet=False))
def bnext18_nano(num_classes: int = 1000, stem_stride: int = 1, in_chans: int = 3) -> BNext18:
    """BNext-18 at 1/4 width (16..128) for small images. Args as for :class:`BNext18`."""
    return BNext18(num_classes, in_chans=in_chans, stem_stride=stem_stride, widths=(16, 32, 64, 128))
