"""Shared by ``make_official_reference.py`` (run against the official code) and ``test_official.py``.

A *case* is one model configuration. Both sides fill the official state dict with the same seeded values, in the
order of the sorted official key names, and run the same seeded input, both in float64; the fixture stores what the
official model printed, so the tests compare our model with the official one without needing the official code.

The values must be the same bits on every CPU: ``torch.randn`` is not (its vectorized Box-Muller differs in the last
bits between ATen's AVX2/AVX-512 and default kernels, i.e. x86 and ARM), ``torch.rand`` is (integer bits times
2**-24); :func:`portable_noise` scales it.
"""
from __future__ import annotations

import hashlib
import math

import torch

# id -> (our builder, our kwargs, official constructor, official kwargs, input size, temperatures to evaluate)
CASES = {
    "tiny_c10": ("bnext_tiny", dict(num_classes=10, stem_stride=1), "BNext",
                 dict(num_classes=10, size="tiny"), 32, (1.0, 0.05, 0.0)),
    "tiny_c10_noelm": ("bnext_tiny", dict(num_classes=10, stem_stride=1, elm_attention=False), "BNext",
                       dict(num_classes=10, size="tiny", ELM_Attention=False), 32, (1.0, 0.0)),
    "tiny_c10_noir": ("bnext_tiny", dict(num_classes=10, stem_stride=1, info_recoupling=False), "BNext",
                      dict(num_classes=10, size="tiny", Infor_Recoupling=False), 32, (1.0, 0.0)),
    "tiny_c10_none": ("bnext_tiny", dict(num_classes=10, stem_stride=1, elm_attention=False,
                                         info_recoupling=False), "BNext",
                      dict(num_classes=10, size="tiny", ELM_Attention=False, Infor_Recoupling=False), 32, (1.0, 0.0)),
    "tiny_c1000": ("bnext_tiny", dict(num_classes=1000, stem_stride=2), "BNext",
                   dict(num_classes=1000, size="tiny"), 64, (0.0,)),
    "small_c10": ("bnext_small", dict(num_classes=10, stem_stride=1), "BNext",
                  dict(num_classes=10, size="small"), 32, (0.0,)),
    "middle_c100": ("bnext_middle", dict(num_classes=100, stem_stride=1), "BNext",
                    dict(num_classes=100, size="middle"), 32, (0.0,)),
    "large_c10": ("bnext_large", dict(num_classes=10, stem_stride=1), "BNext",
                  dict(num_classes=10, size="large"), 32, (0.0,)),
    "bnext18_c1000": ("bnext18", dict(num_classes=1000, stem_stride=2), "BNext18",
                      dict(num_classes=1000), 64, (1.0, 0.0)),
    "bnext18_c10": ("bnext18", dict(num_classes=10, stem_stride=1), "BNext18",
                    dict(num_classes=10), 32, (0.0,)),
}


# Training-mode cases: a batch of TRAIN_BATCH images (batch statistics need more than 2: with 2 images, a 1x1
# convolution on a 2x2 map can give a channel 8 equal values, whose BatchNorm variance is 0 or 1e-14 depending on
# summation order), cross-entropy against the first labels of TRAIN_LABELS, backward; the fixture keeps the
# logits, the loss and, per parameter, the sum, the sum of squares and the sum of |.| of its gradient (float64).
TRAIN_CASES = ("tiny_c10", "tiny_c10_none")
TRAIN_BATCH = 8
TRAIN_LABELS = (3, 7, 1, 0, 9, 4, 2, 8)


def grad_stats(named_params) -> dict:
    """``{name: [sum, sum of squares, sum of |.|]}`` of each parameter's gradient (``module.`` prefixes removed)."""
    out = {}
    for k, p in named_params:
        if p.grad is not None:
            g = p.grad.double()
            out[k[len("module."):] if k.startswith("module.") else k] = [g.sum().item(), (g * g).sum().item(),
                                                                         g.abs().sum().item()]
    return out


def keys_digest(state: dict) -> str:
    """SHA-256 over the sorted ``name shape dtype`` lines of a state dict (``module.`` prefixes removed)."""
    lines = []
    for k in sorted(state):
        name = k[len("module."):] if k.startswith("module.") else k
        lines.append(f"{name} {tuple(state[k].shape)} {state[k].dtype}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def portable_noise(shape, generator: torch.Generator) -> torch.Tensor:
    """Mean 0, variance 1 (uniform on [-sqrt 3, sqrt 3)), float32, the same bits on every CPU: ``torch.rand`` gives
    multiples of 2**-24, ``2u - 1`` is exact, and the one multiplication is correctly rounded everywhere."""
    return (torch.rand(shape, generator=generator) * 2 - 1) * math.sqrt(3)


def fill_reference(state: dict, temperature: float, seed: int = 0) -> dict:
    """Deterministic, non-trivial values for every tensor, by key order: BN statistics away from identity,
    Info-Recoupling mixes partly outside [0, 1] (exercises the official eval-time clamp), all temperatures set."""
    names = sorted(state, key=lambda k: k[len("module."):] if k.startswith("module.") else k)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in names:
        t = state[k]
        shape = t.shape
        if not t.is_floating_point():
            out[k] = torch.zeros_like(t)
        elif k.endswith("temperature"):
            out[k] = torch.full(shape, temperature)
        elif k.endswith("running_var"):
            out[k] = 0.5 + 1.5 * torch.rand(shape, generator=g)
        elif k.endswith("running_mean"):
            out[k] = 0.2 * portable_noise(shape, g)
        elif k.endswith("scale"):
            out[k] = -0.2 + 1.4 * torch.rand(shape, generator=g)
        elif k.endswith("binary_conv.weight"):
            out[k] = 0.3 * portable_noise(shape, g)
        elif t.dim() == 1 and ("bn" in k or "norm" in k) and k.endswith("weight"):
            out[k] = 1.0 + 0.2 * portable_noise(shape, g)
        elif t.dim() == 1 and ("activation" in k or "prelu" in k):
            out[k] = 0.25 + 0.1 * portable_noise(shape, g)
        else:
            fan_in = max(1, t[0].numel()) if t.dim() > 1 else 1
            out[k] = portable_noise(shape, g) * (0.1 if t.dim() == 1 else fan_in ** -0.5)
    return out


def reference_input(size: int, seed: int = 1, batch: int = 2) -> torch.Tensor:
    return portable_noise((batch, 3, size, size), torch.Generator().manual_seed(seed))
