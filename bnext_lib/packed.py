"""Inference on packed bits: binary convolutions as XNOR + popcount over 64-bit words, exactly.

A binary convolution multiplies activations in {-1, 0, +1} (``sign``; 0 only for zero padding and exact zeros)
with kernels in {-1, 0, +1}. Both are packed one bit per value (``1`` for +1, ``0`` for -1 and for 0) along the
im2col axis ``(channel, ky, kx)``, 64 per word, and for an output position and channel

    dot_packed = K - 2 * popcount(a XOR w)          (K = in_channels/groups * kh * kw)

is the dot product of the encodings. The zeros the encoding read as -1 are put back exactly: with
``a = a_enc + [a = 0]`` and ``w = w_enc + [w = 0]``,

    sum(a * w) = dot_packed + sum([a = 0] * w_enc) + sum(a * [w = 0]).

The second term splits into zero padding, which depends only on the kernel and the input size and is computed
once per size, and exact zeros of ``sign(x)`` inside the image (checked each call; a float convolution of their
indicator when there are any); the third term exists only for kernels with exact zeros. Everything is integer
arithmetic held exactly in float32 (``|dot| <= K < 2**24``), so the result equals the float simulation bit for
bit, whatever the summation order.

The popcount kernel is a small C++ extension built on first use with torch's ``cpp_extension`` (``-O3
-march=native``: AVX-512 VPOPCNTQ where the CPU has it) into a cache folder named after the source and the CPU;
without a compiler it falls back to ``numpy.bitwise_count`` (numpy >= 2) or a byte table, correct but slower.

:func:`packed_model` turns a trained model (e.g. from :func:`~bnext_lib.export.load_packed`) into one whose binary
convolutions run on packed bits; :func:`load_packed_inference` does both.
"""
from __future__ import annotations

import copy
import hashlib
import os
import platform
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .binary import BinaryConv2d, MagnitudeAwareSign, ProgressiveSign

__all__ = ["PackedBinaryConv2d", "packed_model", "load_packed_inference", "pack_bits", "xnor_popcount",
           "kernel_backend"]

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstdint>

// out[m, o] = sum_w popcount(a[m, w] ^ b[o, w])
torch::Tensor xnor_popcount(torch::Tensor a, torch::Tensor b) {
  TORCH_CHECK(a.dtype() == torch::kInt64 && b.dtype() == torch::kInt64, "int64 words expected");
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), "shapes (M, W) and (O, W) expected");
  a = a.contiguous(); b = b.contiguous();
  const int64_t M = a.size(0), O = b.size(0), W = a.size(1);
  auto out = torch::empty({M, O}, torch::dtype(torch::kInt32));
  const uint64_t* pa = reinterpret_cast<const uint64_t*>(a.data_ptr<int64_t>());
  const uint64_t* pb = reinterpret_cast<const uint64_t*>(b.data_ptr<int64_t>());
  int32_t* po = out.data_ptr<int32_t>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const uint64_t* ra = pa + m * W;
      for (int64_t o = 0; o < O; ++o) {
        const uint64_t* rb = pb + o * W;
        int64_t acc = 0;
        for (int64_t w = 0; w < W; ++w) acc += __builtin_popcountll(ra[w] ^ rb[w]);
        po[m * O + o] = static_cast<int32_t>(acc);
      }
    }
  });
  return out;
}
"""

_EXT = None
_EXT_ERROR: str | None = None


def _cpu_tag() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "model name")):
                flags += line
    except OSError:
        pass
    return hashlib.sha256((_SOURCE + platform.machine() + flags + torch.__version__).encode()).hexdigest()[:12]


def _extension():
    """The compiled kernel, built once per machine; ``None`` (with a warning) when it cannot be built."""
    global _EXT, _EXT_ERROR
    if _EXT is not None or _EXT_ERROR is not None:
        return _EXT
    if os.environ.get("BNEXT_NO_EXTENSION"):
        _EXT_ERROR = "disabled by BNEXT_NO_EXTENSION"
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        tag = _cpu_tag()
        folder = Path(os.environ.get("BNEXT_CACHE", Path.home() / ".cache" / "bnext")) / f"xnor-{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        flags = ["-O3"] + (["-march=native"] if platform.machine() in ("x86_64", "AMD64") else [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _EXT = load_inline(name=f"bnext_xnor_{tag}", cpp_sources=_SOURCE, functions=["xnor_popcount"],
                               extra_cflags=flags, build_directory=str(folder), verbose=False)
    except Exception as e:  # no compiler, no ninja, ...: stay correct with numpy
        _EXT_ERROR = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        warnings.warn(f"bnext: the packed-bit kernel could not be built ({_EXT_ERROR}); using numpy (slower)")
    return _EXT


def kernel_backend() -> str:
    """``"c++"`` when the compiled kernel is in use, else ``"numpy"``."""
    return "c++" if _extension() is not None else "numpy"


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_numpy(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def xnor_popcount(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``out[m, o] = sum_w popcount(a[m, w] XOR b[o, w])`` for int64 word tensors ``(M, W)`` and ``(O, W)``."""
    ext = _extension()
    if ext is not None:
        return ext.xnor_popcount(a, b)
    an, bn = a.numpy().view(np.uint64), b.numpy().view(np.uint64)
    out = np.empty((an.shape[0], bn.shape[0]), dtype=np.int32)
    step = max(1, (1 << 22) // max(1, bn.size))
    for i in range(0, an.shape[0], step):
        out[i:i + step] = _popcount_numpy(an[i:i + step, None, :] ^ bn[None, :, :]).sum(-1, dtype=np.int64)
    return torch.from_numpy(out)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a boolean ``(..., K)`` tensor into int64 words ``(..., ceil(K/64))`` (padding bits 0)."""
    k = bits.shape[-1]
    words = -(-k // 64)
    b = bits.reshape(-1, k).numpy()
    if words * 64 != k:
        b = np.concatenate([b, np.zeros((b.shape[0], words * 64 - k), dtype=bool)], axis=1)
    packed = np.packbits(b, axis=-1, bitorder="little")  # 8 bytes per word, little-endian order within
    return torch.from_numpy(np.ascontiguousarray(packed).view(np.int64)).reshape(*bits.shape[:-1], words)


class PackedBinaryConv2d(nn.Module):
    """Inference-only binary convolution on packed bits; equals the :class:`BinaryConv2d` it is built from.

    Args:
        conv: a :class:`~bnext_lib.binary.BinaryConv2d` with a 1-bit input quantizer and a 1-bit weight quantizer
            (progressive sign at its floor, or magnitude-aware sign, whose per-channel scale is applied to the
            integer result).
    """

    def __init__(self, conv: BinaryConv2d):
        super().__init__()
        if conv.input_precision != 1 or conv.weight_precision != 1:
            raise ValueError("only convolutions with 1-bit inputs and 1-bit weights run on packed bits")
        wq = conv.weight_quantizer
        if isinstance(wq, ProgressiveSign) and not wq.is_binary:
            raise ValueError("the weights are not binary yet (temperature above its floor)")
        with torch.no_grad():
            w = conv.weight.detach().float()
            if isinstance(wq, MagnitudeAwareSign):
                scale = w.abs().mean(dim=(1, 2, 3))
                signs = torch.sign(w)
            else:
                scale = None
                signs = torch.sign(wq(w))
        self.input_quantizer = conv.input_quantizer
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.out_channels, self.in_channels = conv.out_channels, conv.in_channels
        self.kernel_size = conv.kernel_size
        o, cg, kh, kw = signs.shape
        self.k = cg * kh * kw
        self.register_buffer("signs", signs)                    # for the correction terms (small convolutions)
        self.register_buffer("w_words", pack_bits((signs > 0).reshape(self.groups, o // self.groups, self.k)))
        zeros = (signs == 0).float()
        self.register_buffer("w_zeros", zeros if bool(zeros.any()) else None)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self._pad_cache: dict[tuple, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, K={self.k}")

    def _conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def _padding_term(self, c: int, h: int, w: int) -> torch.Tensor:
        """sum over padded taps of w_enc, per output channel and position (input-independent, cached)."""
        key = (c, h, w)
        if key not in self._pad_cache:
            enc = torch.where(self.signs > 0, 1.0, -1.0)
            inside = self._conv(torch.ones(1, c, h, w), enc)                 # taps inside the image
            total = enc.sum(dim=(1, 2, 3)).view(1, -1, 1, 1)                  # all taps
            self._pad_cache[key] = total - inside
        return self._pad_cache[key]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.input_quantizer(x) if self.input_quantizer is not None else x
        cols = F.unfold(q, self.kernel_size, self.dilation, self.padding, self.stride)   # (N, C*kh*kw, L)
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        g, og = self.groups, self.out_channels // self.groups
        bits = (cols > 0).view(n, g, self.k, -1).permute(0, 3, 1, 2)                     # (N, L, G, K)
        a_words = pack_bits(bits.contiguous())                                          # (N, L, G, W)
        outs = []
        for gi in range(g):
            a = a_words[:, :, gi, :].reshape(n * ho * wo, -1)
            outs.append(xnor_popcount(a, self.w_words[gi]))                             # (N*L, Og)
        pop = torch.cat(outs, dim=1) if g > 1 else outs[0]
        y = (self.k - 2 * pop).to(torch.float32).view(n, ho, wo, g * og).permute(0, 3, 1, 2)
        if any(self.padding):
            y = y + self._padding_term(c, h, w)
        zero = q == 0
        if bool(zero.any()):                                                            # exact zeros of sign(x)
            y = y + self._conv(zero.float(), torch.where(self.signs > 0, 1.0, -1.0))
        if self.w_zeros is not None:
            y = y + self._conv(q, self.w_zeros)
        if self.scale is not None:
            y = y * self.scale.view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y.contiguous()


def packed_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode whose 1-bit binary convolutions run on packed bits; others stay float."""
    model = copy.deepcopy(model).eval()
    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, BinaryConv2d) and child.input_precision == 1 and child.weight_precision == 1:
                setattr(module, child_name, PackedBinaryConv2d(child))
                replaced += 1
    if replaced == 0:
        raise ValueError("the model has no binary convolution with 1-bit inputs and weights")
    return model


def load_packed_inference(path: str | os.PathLike) -> nn.Module:
    """:func:`~bnext_lib.export.load_packed` then :func:`packed_model`."""
    from .export import load_packed
    return packed_model(load_packed(path))
