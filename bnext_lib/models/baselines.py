"""Binary baselines of the architecture study, built from the same quantizers and counted by the same counter.

* ``binary_resnet18``: the naive binary ResNet-18 (BNN / XNOR-Net style; Courbariaux et al. 2016, Rastegari et
  al. 2016): each basic block binarizes two 3x3 convolutions (sign activation with the clipped STE, magnitude-aware
  sign weights) and has one shortcut around the pair; stem, downsample projections and classifier in full precision.
* ``birealnet18``: Bi-Real Net 18 (Liu et al., ECCV 2018): a shortcut around every binary 3x3 convolution,
  ApproxSign activations, real-valued downsample (2x2 average pooling, 1x1 conv, BN).
* ``reactnet_a``: ReActNet-A (Liu et al., ECCV 2020): the MobileNet-like layout BNext-T shares, with RSign
  (learnable threshold) and RPReLU (learnable shifts around a PReLU) around each binary 3x3 and 1x1 convolution.

These follow the published architectures as their authors' code defines them; they are re-implementations for a
like-for-like comparison, not loaders of those projects' checkpoints. ``*_nano`` variants are this project's
small-image versions at the width of ``bnext_nano`` / ``bnext18_nano``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..binary import BinaryConv2d, MagnitudeAwareSign, SignSTE, ApproxSign
from ..blocks import LearnableBias, shortcut_pool
from .bnext import BNEXT_CHANNELS, Stem, _check_common
from .registry import ModelInfo, register_model

__all__ = ["BinaryResNet", "ReActNet", "EARLIER_BLOCKS"]


def _downsample(in_chs: int, out_chs: int, stride: int, avg_pool: bool) -> nn.Module | None:
    if stride == 1 and in_chs == out_chs:
        return None
    if avg_pool:  # Bi-Real: average pooling then a stride-1 projection
        layers = [nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)] if stride != 1 else []
        return nn.Sequential(*layers, nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs))
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))


class _BiRealConv(nn.Module):
    """Bi-Real unit: ``BN(BinConv(ApproxSign(x))) + shortcut(x)``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.conv = BinaryConv2d(in_chs, out_chs, 3, stride, input_quantizer=ApproxSign(),
                                 weight_quantizer=MagnitudeAwareSign(), init="uniform")
        self.bn = nn.BatchNorm2d(out_chs)
        self.downsample = _downsample(in_chs, out_chs, stride, avg_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.bn(self.conv(x)) + shortcut


class _PlainBinaryBlock(nn.Module):
    """Naive binary basic block: ``BN(BinConv(sign(BN(BinConv(sign(x)))))) + shortcut(x)``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.conv1 = BinaryConv2d(in_chs, out_chs, 3, stride, input_quantizer=SignSTE(1.0),
                                  weight_quantizer=MagnitudeAwareSign(), init="default")
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = BinaryConv2d(out_chs, out_chs, 3, 1, input_quantizer=SignSTE(1.0),
                                  weight_quantizer=MagnitudeAwareSign(), init="default")
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = _downsample(in_chs, out_chs, stride, avg_pool=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.bn2(self.conv2(self.bn1(self.conv1(x)))) + shortcut


class BinaryResNet(nn.Module):
    """ResNet-18-layout binary network, with Bi-Real units (``block="bireal"``) or naive blocks (``"plain"``).

    Args:
        block: ``"bireal"`` (one shortcut per binary conv, 4 units per stage) or ``"plain"`` (one shortcut per
            two binary convs, 2 blocks per stage).
        num_classes: classifier outputs.
        in_chans: image channels.
        stem_stride: 2 for the ImageNet stem (7x7/2 conv, BN, 3x3/2 max-pool), 1 for a 3x3/1 conv + BN.
        widths: stage widths.
    """

    def __init__(self, block: str = "bireal", num_classes: int = 1000, in_chans: int = 3, stem_stride: int = 2,
                 widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        _check_common(num_classes, in_chans, stem_stride)
        if block not in ("bireal", "plain"):
            raise ValueError(f"block must be 'bireal' or 'plain', got {block!r}")
        unit, per_stage = (_BiRealConv, 4) if block == "bireal" else (_PlainBinaryBlock, 2)
        if stem_stride == 2:
            self.stem = Stem(in_chans, widths[0], 2, kernel_size=7, max_pool=True)
        else:
            self.stem = Stem(in_chans, widths[0], 1)
        layers, in_chs = [], widths[0]
        for s, width in enumerate(widths):
            for b in range(per_stage):
                layers.append(unit(in_chs, width, 2 if s > 0 and b == 0 else 1))
                in_chs = width
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(in_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _RPReLU(nn.Module):
    """ReActNet's RPReLU: ``PReLU(x - gamma) + zeta`` with learnable shifts."""

    def __init__(self, channels: int):
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels)
        self.shift_out = LearnableBias(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift_out(self.prelu(self.shift_in(x)))


class _ReActBlock(nn.Module):
    """ReActNet-A block: RSign -> binary 3x3 -> BN (+ shortcut) -> RPReLU, then RSign -> binary 1x1 (two of them,
    concatenated, where the width doubles) -> BN (+ shortcut) -> RPReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        if out_chs not in (in_chs, 2 * in_chs):
            raise ValueError(f"a ReActNet block keeps or doubles its channels, got {in_chs} -> {out_chs}")

        def bconv(k: int, s: int) -> BinaryConv2d:
            return BinaryConv2d(in_chs, in_chs, k, s, input_quantizer=ApproxSign(),
                                weight_quantizer=MagnitudeAwareSign(), init="uniform")

        self.shift1 = LearnableBias(in_chs)
        self.conv3x3 = bconv(3, stride)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.pool = shortcut_pool() if stride == 2 else nn.Identity()
        self.act1 = _RPReLU(in_chs)
        self.shift2 = LearnableBias(in_chs)
        self.conv1x1 = nn.ModuleList(bconv(1, 1) for _ in range(out_chs // in_chs))
        self.bn2 = nn.ModuleList(nn.BatchNorm2d(in_chs) for _ in range(out_chs // in_chs))
        self.act2 = _RPReLU(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.act1(self.bn1(self.conv3x3(self.shift1(x))) + self.pool(x))
        h = self.shift2(out1)
        out2 = torch.cat([bn(conv(h)) + out1 for conv, bn in zip(self.conv1x1, self.bn2)], dim=1)
        return self.act2(out2)


class ReActNet(nn.Module):
    """ReActNet-A layout: full-precision 3x3 stem, ReAct blocks, pooling, full-precision classifier.

    Args:
        channels: stem width, then each block's output width (ReActNet-A = BNext-T's list).
        num_classes, in_chans, stem_stride: as for :class:`~bnext_lib.models.bnext.BNext`.
    """

    def __init__(self, channels: Sequence[int], num_classes: int = 1000, in_chans: int = 3, stem_stride: int = 2):
        super().__init__()
        _check_common(num_classes, in_chans, stem_stride)
        self.stem = Stem(in_chans, channels[0], stem_stride)
        self.blocks = nn.Sequential(*(
            _ReActBlock(channels[i - 1], channels[i], 2 if i > 1 and channels[i - 1] != channels[i] else 1)
            for i in range(1, len(channels))))
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------------------------- builders
# readme_degree: the official BNext README's comparison row, which for these networks is (BOPs/64) over OPs with
# FLOPs at full cost (our ``degree_fp32_pct``), not the FLOPs/8 convention of its BNext rows (``degree_pct``)
@register_model(ModelInfo("baseline", "Rastegari et al. 2016 (XNOR-Net)", 51.2, "XNOR-Net paper, ResNet-18",
                          readme_degree=18.07))
def binary_resnet18(num_classes: int = 1000, stem_stride: int = 2, in_chans: int = 3) -> BinaryResNet:
    """Naive binary ResNet-18 (XNOR-style). Args as for :class:`BinaryResNet`."""
    return BinaryResNet("plain", num_classes, in_chans, stem_stride)


@register_model(ModelInfo("baseline", "Liu et al. 2018 (Bi-Real Net)", 56.4, "Bi-Real Net README",
                          readme_degree=17.86, extra={"published_ops_fp32": 0.163}))
def birealnet18(num_classes: int = 1000, stem_stride: int = 2, in_chans: int = 3) -> BinaryResNet:
    """Bi-Real Net 18. Args as for :class:`BinaryResNet`."""
    return BinaryResNet("bireal", num_classes, in_chans, stem_stride)


@register_model(ModelInfo("baseline", "Liu et al. 2020 (ReActNet)", 69.4, "ReActNet paper",
                          readme_degree=86.50, extra={"published_ops_fp32": 0.087}))
def reactnet_a(num_classes: int = 1000, stem_stride: int = 2, in_chans: int = 3) -> ReActNet:
    """ReActNet-A. Args as for :class:`ReActNet`."""
    return ReActNet(BNEXT_CHANNELS["tiny"], num_classes, in_chans, stem_stride)


# 3/8 of ResNet-18's widths: at 28x28 with a stride-2 stem this costs 0.106 M OPs, the same as bnext_nano
# (1.58 M vs 1.89 M parameters), so that the block comparison is at matched cost.
_NANO_RESNET_WIDTHS = (24, 48, 96, 192)


@register_model(ModelInfo("baseline", "this project (binary ResNet-18 at 3/8 width)", imagenet=False))
def binary_resnet18_nano(num_classes: int = 1000, stem_stride: int = 2, in_chans: int = 3) -> BinaryResNet:
    """Naive binary ResNet-18 at 3/8 width for small images (bnext_nano's OPs at 28x28)."""
    return BinaryResNet("plain", num_classes, in_chans, stem_stride, widths=_NANO_RESNET_WIDTHS)


@register_model(ModelInfo("baseline", "this project (Bi-Real Net 18 at 3/8 width)", imagenet=False))
def birealnet18_nano(num_classes: int = 1000, stem_stride: int = 2, in_chans: int = 3) -> BinaryResNet:
    """Bi-Real Net 18 at 3/8 width for small images (bnext_nano's OPs at 28x28)."""
    return BinaryResNet("bireal", num_classes, in_chans, stem_stride, widths=_NANO_RESNET_WIDTHS)


@register_model(ModelInfo("baseline", "this project (ReActNet-A in bnext_nano's layout)", imagenet=False))
def reactnet_nano(num_classes: int = 1000, stem_stride: int = 2, in_chans: int = 3) -> ReActNet:
    """ReActNet blocks in ``bnext_nano``'s layout, for a like-for-like block comparison on small images."""
    return ReActNet(BNEXT_CHANNELS["nano"], num_classes, in_chans, stem_stride)


# bnext_micro's counterparts (32x32 inputs, stride-1 stem): ResNet-18 at widths 18-144 costs about bnext_micro's
# OPs at 32x32 (0.00075 vs 0.00070 G); ReActNet's blocks take bnext_micro's own layout.
_MICRO_RESNET_WIDTHS = (18, 36, 72, 144)


@register_model(ModelInfo("baseline", "this project (binary ResNet-18 at bnext_micro's cost)", imagenet=False))
def binary_resnet18_micro(num_classes: int = 1000, stem_stride: int = 1, in_chans: int = 3) -> BinaryResNet:
    """Naive binary ResNet-18 at widths 18-144 (bnext_micro's OPs at 32x32, stride-1 stem)."""
    return BinaryResNet("plain", num_classes, in_chans, stem_stride, widths=_MICRO_RESNET_WIDTHS)


@register_model(ModelInfo("baseline", "this project (Bi-Real Net 18 at bnext_micro's cost)", imagenet=False))
def birealnet18_micro(num_classes: int = 1000, stem_stride: int = 1, in_chans: int = 3) -> BinaryResNet:
    """Bi-Real Net 18 at widths 18-144 (bnext_micro's OPs at 32x32, stride-1 stem)."""
    return BinaryResNet("bireal", num_classes, in_chans, stem_stride, widths=_MICRO_RESNET_WIDTHS)


@register_model(ModelInfo("baseline", "this project (ReActNet-A in bnext_micro's layout)", imagenet=False))
def reactnet_micro(num_classes: int = 1000, stem_stride: int = 1, in_chans: int = 3) -> ReActNet:
    """ReActNet blocks in ``bnext_micro``'s layout (stride-1 stem), for a like-for-like block comparison."""
    return ReActNet(BNEXT_CHANNELS["micro"], num_classes, in_chans, stem_stride)


# The earlier binary blocks matched to each small BNext student (the architecture study's comparison).
EARLIER_BLOCKS = {
    "bnext_pico": {"plain binary": "binary_resnet18_nano", "Bi-Real": "birealnet18_nano", "ReActNet": "reactnet_nano"},
    "bnext_nano": {"plain binary": "binary_resnet18_nano", "Bi-Real": "birealnet18_nano", "ReActNet": "reactnet_nano"},
    "bnext_micro": {"plain binary": "binary_resnet18_micro", "Bi-Real": "birealnet18_micro",
                    "ReActNet": "reactnet_micro"},
    "bnext_tiny": {"plain binary": "binary_resnet18", "Bi-Real": "birealnet18", "ReActNet": "reactnet_a"},
}
