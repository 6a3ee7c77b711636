"""BNext's building blocks: the binary unit (ELM-Attention or additive), the Info-Recoupling gate, the BNext block.

Paper: Guo et al., "Join the High Accuracy Club on ImageNet with A Binary Neural Network Ticket", arXiv 2211.12933
(§3 ELM-Attention, §4 Info-Recoupling in ``docs/method.md``); official code hpi-xnor/BNext ``src/bnext.py``.

One :class:`BinaryUnit` covers the official ``Attention``, ``FFN_3x3`` and ``FFN_1x1`` modules, which share one set
of parameters and differ only in how the binary branch meets the shortcut. The four ablation variants of the paper
(ELM-Attention on/off x Info-Recoupling on/off) are the two flags of :class:`BNextBlock`.

Parameters the official forward never reads (``activation1`` of additive units, ``norm2`` of additive units
without Info-Recoupling) are kept, so that the models have exactly the official parameters and official checkpoints
load strictly; they are frozen (``requires_grad=False``), which changes no number (they never receive a gradient,
and AdamW skips parameters without one) but lets DDP run without ``find_unused_parameters``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binary import BinaryConv2d, HardTanh, ProgressiveSign, SignSTE

__all__ = ["LearnableBias", "InfoRecoupling", "BinaryUnit", "BNextBlock", "shortcut_pool"]


def shortcut_pool() -> nn.AvgPool2d:
    """The 2x2 average pooling of stride-2 shortcuts.

    ``ceil_mode`` is this project's choice: on even sizes it equals the official ``AvgPool2d(2, 2)``; on odd sizes
    (28x28 inputs reach 7x7) it yields the same size as the stride-2 convolution, where the official code crashes.
    ``count_include_pad=False`` gives the same numbers as the default without padding (the last window is averaged
    over the pixels it covers either way), but Inductor's backward of the default divides that window by 4, so
    ``torch.compile`` trained with wrong gradients on odd maps (pytorch/pytorch#198119).
    """
    return nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)


class LearnableBias(nn.Module):
    """A learnable per-channel shift ``x + b`` (ReActNet's RSign threshold; official ``move``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class InfoRecoupling(nn.Module):
    r"""Info-Recoupling: an SE-style channel gate on the binary branch, fed by a learned real/binary mix (§4).

    .. math::
        M = \rho \odot X + (1 - \rho) \odot Y,\quad
        g = \sigma(W_2\,\mathrm{ReLU}(W_1 \mathrm{GAP}(M) + b_1) + b_2),\quad \hat Y = g \odot Y

    :math:`\rho \in [0, 1]^C` starts at 0.5 and is clipped in place on every training forward (official).

    Args:
        channels: C, the channels of X and Y.
        reduction: the squeeze ratio (C -> C/8 -> C).
        clamp_in_eval: also clip :math:`\rho` at inference. The official ``FFN_1x1`` does (in place, even in
            eval) while ``Attention`` and ``FFN_3x3`` do not; reproduced so that official checkpoints give the
            official logits even when an optimizer step left :math:`\rho` slightly outside [0, 1].
    """

    def __init__(self, channels: int, reduction: int = 8, clamp_in_eval: bool = False):
        super().__init__()
        self.clamp_in_eval = clamp_in_eval
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), 0.5))
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def mix_weight(self) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.scale.clamp_(0.0, 1.0)
            return self.scale
        return self.scale.clamp(0.0, 1.0) if self.clamp_in_eval else self.scale

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rho = self.mix_weight()
        mix = rho * x + (1 - rho) * y
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(mix, 1)))))
        return gate * y


class BinaryUnit(nn.Module):
    r"""One binary convolution with BNext's wrapping: shift -> sign -> binary conv -> BN -> PReLU -> gate -> merge.

    With :math:`Y = \mathrm{PReLU}_2(\mathrm{BN}_1(\mathrm{BinConv}(\mathrm{sign}(X + \beta))))`, the optional
    Info-Recoupling gate :math:`\hat Y = g \odot Y` and :math:`P` the shortcut (2x2 pooling at stride 2):

    * ELM-Attention (``elm_attention=True``, official ``Attention``, §3): with :math:`R = P(\mathrm{PReLU}_1(X))`,
      :math:`Z = R + \mathrm{BN}_2(\hat Y \odot R)` — the binary branch is an element-wise attention map on the
      real-valued input.
    * additive (official ``FFN_3x3``/``FFN_1x1``, the "bias" mode): :math:`Z = P(X) + \mathrm{BN}_2(\hat Y)` with
      the gate, :math:`Z = P(X) + Y` without it (the official additive unit skips ``BN_2`` then).

    Args:
        in_chs: input channels.
        out_chs: output channels (differs from ``in_chs`` only in BNext-18, whose shortcut then projects).
        kernel_size: 3 for the token mixer, 1 for the FFN.
        stride: 1 or 2.
        elm_attention: multiplicative (ELM-Attention) merge instead of the additive one.
        info_recoupling: add the :class:`InfoRecoupling` gate.
        shortcut: module applied to the shortcut; default 2x2 average pooling at stride 2, else identity.
        gate_from_shortcut: feed the gate's mix with the shortcut :math:`R` instead of :math:`P(X)` (BNext-18).
        clamp_in_eval: see :class:`InfoRecoupling`.
        weight_floor: temperature floor of the weight binarizer (1e-7; BNext-18 uses 1e-5).
        binary: ``False`` builds the unit's float twin (the context arm that asks whether an effect is specific
            to binary networks): full-precision weights, and :class:`~bnext_lib.binary.HardTanh` (the sign's
            straight-through surrogate, bounded as the sign is) in place of the activation's sign.
    """

    # Names in the official ``Attention``/``FFN_*`` modules, for checkpoint conversion (ours -> official).
    OFFICIAL_NAMES = {
        "shift.bias": "move.bias",
        "binary_conv.input_quantizer.temperature": "binary_activation.temperature",
        "binary_conv.weight_quantizer.temperature": "binary_conv.temperature",
        "act_in.weight": "activation1.weight",
        "act.weight": "activation2.weight",
        "recoupling.scale": "scale",
        "recoupling.fc1.": "se.se.1.",
        "recoupling.fc2.": "se.se.3.",
        "shortcut.": "downsample.",
    }

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 elm_attention: bool = False, info_recoupling: bool = True, shortcut: nn.Module | None = None,
                 gate_from_shortcut: bool = False, clamp_in_eval: bool = False, weight_floor: float = 1e-7,
                 binary: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.elm_attention = elm_attention
        self.gate_from_shortcut = gate_from_shortcut
        self.shift = LearnableBias(in_chs)
        # binary=False: the float twin, full-precision weights and the sign's bounded surrogate on the input
        self.binary_conv = BinaryConv2d(in_chs, out_chs, kernel_size, stride=stride,
                                        input_quantizer=SignSTE(1.5, track_temperature=True) if binary
                                        else HardTanh(1.5),
                                        weight_quantizer=ProgressiveSign(floor=weight_floor) if binary else None)
        self.norm1 = nn.BatchNorm2d(out_chs)
        self.act = nn.PReLU(out_chs)
        self.norm2 = nn.BatchNorm2d(out_chs)
        self.act_in = nn.PReLU(in_chs)
        self.recoupling = InfoRecoupling(out_chs, clamp_in_eval=clamp_in_eval) if info_recoupling else None
        if shortcut is None:
            shortcut = shortcut_pool() if stride == 2 else nn.Identity()
        self.shortcut = shortcut
        if not elm_attention:
            self.act_in.requires_grad_(False)  # official additive units create it but never use it
            if self.recoupling is None:
                self.norm2.requires_grad_(False)

    @classmethod
    def official_name(cls, key: str) -> str:
        """The official name of one of this unit's state-dict keys (relative to the unit)."""
        for ours, official in cls.OFFICIAL_NAMES.items():
            if key.startswith(ours):
                return official + key[len(ours):]
        return key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.binary_conv(self.shift(x))))
        if self.elm_attention:
            r = self.shortcut(self.act_in(x))
            if self.recoupling is not None:
                y = self.recoupling(r if self.gate_from_shortcut else self.shortcut(x), y)
            return self.norm2(y * r) + r
        r = self.shortcut(x)
        if self.recoupling is not None:
            return self.norm2(self.recoupling(r, y)) + r
        return y + r


class BNextBlock(nn.Module):
    """The BNext basic block: a 3x3 binary token mixer, then one 1x1 binary FFN, or two whose outputs are
    concatenated where the channels double.

    Args:
        in_chs: input channels.
        out_chs: ``in_chs`` or ``2 * in_chs``.
        stride: stride of the token mixer.
        elm_attention: ELM-Attention token mixer; ``False`` gives the additive mixer (the ablation "no ELM").
            In the full model this alternates per block (see :class:`~bnext_lib.models.bnext.BNext`).
        info_recoupling: Info-Recoupling gates in all three units (the ablation "no IR" when ``False``).
        binary: ``False``: every unit's float twin (:class:`BinaryUnit`).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, elm_attention: bool = True,
                 info_recoupling: bool = True, binary: bool = True):
        super().__init__()
        if out_chs not in (in_chs, 2 * in_chs):
            raise ValueError(f"a BNext block keeps or doubles its channels, got {in_chs} -> {out_chs}")
        self.mixer = BinaryUnit(in_chs, in_chs, 3, stride, elm_attention=elm_attention,
                                info_recoupling=info_recoupling, binary=binary)
        self.ffn = nn.ModuleList(
            BinaryUnit(in_chs, in_chs, 1, 1, info_recoupling=info_recoupling, clamp_in_eval=True, binary=binary)
            for _ in range(out_chs // in_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixer(x)
        if len(self.ffn) == 1:
            return self.ffn[0](x)
        return torch.cat([ffn(x) for ffn in self.ffn], dim=1)
