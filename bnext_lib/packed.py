"""Inference on packed bits: binary convolutions as XNOR + popcount over 64-bit words, exactly.

A binary convolution multiplies activations in {-1, 0, +1} (``sign``; 0 only for zero padding and exact zeros)
with kernels in {-1, 0, +1}. Both are packed one bit per value (``1`` for +1, ``0`` for -1 and for 0): the
activations' channels once per pixel (64 per word), then im2col gathers whole words per tap, in the order
``(ky, kx, channel)`` that the kernels are packed in; for an output position and channel

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

from .binary import BinaryConv2d
from .export import load_packed

__all__ = ["PackedBinaryConv2d", "packed_model", "load_packed_inference", "pack_bits", "xnor_popcount",
           "kernel_backend"]

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstdint>
#include <algorithm>
#include <vector>

// out[m, o] = sum_w popcount(a[m, w] ^ b[o, w]); with k >= 0, out = k - 2 * that as float32 (the +-1 dot
// product), stored transposed as out[o, m] (for one image that is already NCHW).
torch::Tensor xnor_kernel(torch::Tensor a, torch::Tensor b, int64_t k) {
  TORCH_CHECK(a.dtype() == torch::kInt64 && b.dtype() == torch::kInt64, "int64 words expected");
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), "shapes (M, W) and (O, W) expected");
  a = a.contiguous(); b = b.contiguous();
  const int64_t M = a.size(0), O = b.size(0), W = a.size(1);
  auto out = k >= 0 ? torch::empty({O, M}, torch::dtype(torch::kFloat32))
                    : torch::empty({M, O}, torch::dtype(torch::kInt32));
  const uint64_t* pa = reinterpret_cast<const uint64_t*>(a.data_ptr<int64_t>());
  const uint64_t* pb = reinterpret_cast<const uint64_t*>(b.data_ptr<int64_t>());
  if (k >= 0) {  // float dot products, out[o, m]: kernels outside (4 at a time), positions inside
    float* pf = out.data_ptr<float>();
    at::parallel_for(0, (O + 3) / 4, 1, [&](int64_t begin, int64_t end) {
      for (int64_t ob = begin; ob < end; ++ob) {
        const int64_t o = ob * 4, nb = std::min<int64_t>(4, O - o);
        const uint64_t* b0 = pb + o * W;
        const uint64_t* b1 = pb + (o + std::min<int64_t>(1, nb - 1)) * W;
        const uint64_t* b2 = pb + (o + std::min<int64_t>(2, nb - 1)) * W;
        const uint64_t* b3 = pb + (o + std::min<int64_t>(3, nb - 1)) * W;
        for (int64_t m = 0; m < M; ++m) {
          const uint64_t* ra = pa + m * W;
          int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
          for (int64_t w = 0; w < W; ++w) {
            const uint64_t x = ra[w];
            c0 += __builtin_popcountll(x ^ b0[w]);
            c1 += __builtin_popcountll(x ^ b1[w]);
            c2 += __builtin_popcountll(x ^ b2[w]);
            c3 += __builtin_popcountll(x ^ b3[w]);
          }
          const int64_t c[4] = {c0, c1, c2, c3};
          for (int64_t j = 0; j < nb; ++j) pf[(o + j) * M + m] = static_cast<float>(k - 2 * c[j]);
        }
      }
    });
    return out;
  }
  int32_t* pi = out.data_ptr<int32_t>();
  at::parallel_for(0, M, 8, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const uint64_t* ra = pa + m * W;
      for (int64_t o = 0; o < O; ++o) {
        const uint64_t* rb = pb + o * W;
        int64_t acc = 0;
        for (int64_t w = 0; w < W; ++w) acc += __builtin_popcountll(ra[w] ^ rb[w]);
        pi[m * O + o] = static_cast<int32_t>(acc);
      }
    }
  });
  return out;
}

// Sign bits of a float NCHW tensor packed per pixel: out[n, ph + y, pw + x, g, c / 64] bit (c % 64) is
// x[n, g * Cg + c, y, x] > 0, in a zero-initialised (N, H + 2ph, W + 2pw, G, Wc) buffer (zero words are the
// padding). Returns (words, number of exact zeros).
std::vector<torch::Tensor> pack_signs(torch::Tensor x, int64_t groups, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 4, "float32 NCHW expected");
  x = x.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), Wd = x.size(3), G = groups, Cg = C / G;
  const int64_t Wc = (Cg + 63) / 64, Hp = H + 2 * ph, Wp = Wd + 2 * pw, HW = H * Wd;
  auto out = torch::zeros({N, Hp, Wp, G, Wc}, torch::dtype(torch::kInt64));
  uint64_t* po = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  const float* px = x.data_ptr<float>();
  std::vector<int64_t> zeros(N * G * Wc, 0);
  at::parallel_for(0, N * G * Wc, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / (G * Wc), g = (t / Wc) % G, wc = t % Wc;
      const int64_t c0 = wc * 64, c1 = std::min<int64_t>(Cg, c0 + 64);
      int64_t nz = 0;
      for (int64_t p0 = 0; p0 < HW; p0 += 256) {
        const int64_t p1 = std::min<int64_t>(HW, p0 + 256);
        uint64_t acc[256] = {0};
        for (int64_t c = c0; c < c1; ++c) {
          const float* row = px + ((n * C + g * Cg + c) * HW);
          const uint64_t bit = 1ull << (c - c0);
          for (int64_t p = p0; p < p1; ++p) {
            const float v = row[p];
            acc[p - p0] |= (v > 0.f) ? bit : 0ull;
            nz += (v == 0.f);
          }
        }
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t y = p / Wd, xx = p % Wd;
          po[(((n * Hp + y + ph) * Wp + xx + pw) * G + g) * Wc + wc] = acc[p - p0];
        }
      }
      zeros[t] = nz;
    }
  });
  int64_t total = 0;
  for (auto z : zeros) total += z;
  return {out, torch::tensor(total)};
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
            _EXT = load_inline(name=f"bnext_xnor_{tag}", cpp_sources=_SOURCE, functions=["xnor_kernel", "pack_signs"],
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
        return ext.xnor_kernel(a, b, -1)
    an, bn = a.numpy().view(np.uint64), b.numpy().view(np.uint64)
    out = np.empty((an.shape[0], bn.shape[0]), dtype=np.int32)
    step = max(1, (1 << 22) // max(1, bn.size))
    for i in range(0, an.shape[0], step):
        out[i:i + step] = _popcount_numpy(an[i:i + step, None, :] ^ bn[None, :, :]).sum(-1, dtype=np.int64)
    return torch.from_numpy(out)


def _xnor_dot(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """``k - 2 * xnor_popcount(a, b)`` as float32, transposed to ``(O, M)``: the +-1 dot products."""
    ext = _extension()
    if ext is not None:
        return ext.xnor_kernel(a, b, k)
    return (k - 2 * xnor_popcount(a, b)).to(torch.float32).t()


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
        if not wq.is_binary:
            raise ValueError(f"the weights are not binary yet ({type(wq).__name__}: {wq.extra_repr()})")
        with torch.no_grad():
            w = conv.weight.detach().float()
            if wq.scaled:
                scale = wq.scale(w)
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
        # im2col order (ky, kx, channel): channels are packed per pixel once, taps gather whole words
        taps = signs.permute(0, 2, 3, 1).reshape(self.groups, o // self.groups, kh * kw, cg) > 0
        self.register_buffer("w_words", pack_bits(taps).reshape(self.groups, o // self.groups, -1))
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
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        g, og = self.groups, self.out_channels // self.groups
        ext = _extension()
        iq = self.input_quantizer  # a binary, unscaled quantizer's forward is exactly torch.sign (Quantizer)
        if iq.is_binary and not iq.scaled and ext is not None and x.dtype == torch.float32:
            # sign, bit packing, zero padding and the exact-zero count in one pass over x
            words, n_zero = ext.pack_signs(x, g, ph, pw)                                # (N, H+2ph, W+2pw, G, Wc)
            q = x if int(n_zero) == 0 else torch.sign(x)
            has_zero = int(n_zero) > 0
        else:
            q = self.input_quantizer(x) if self.input_quantizer is not None else x
            bits = (q > 0).permute(0, 2, 3, 1).reshape(n, h, w, g, c // g)
            words = pack_bits(bits.contiguous())                                        # (N, H, W, G, Wc)
            if ph or pw:  # zero words: padding reads as -1, put back by the padding term
                padded = words.new_zeros(n, h + 2 * ph, w + 2 * pw, g, words.shape[-1])
                padded[:, ph:ph + h, pw:pw + w] = words
                words = padded
            has_zero = bool((q == 0).any())
        if kh == kw == 1:
            cols = words[:, ::sh, ::sw][:, :ho, :wo].unsqueeze(4)
        else:
            cols = torch.stack([words[:, ky * dh:ky * dh + sh * (ho - 1) + 1:sh, kx * dw:kx * dw + sw * (wo - 1) + 1:sw]
                                for ky in range(kh) for kx in range(kw)], dim=4)        # (N, Ho, Wo, G, T, Wc)
        cols = cols.reshape(n * ho * wo, g, -1)
        if g == 1:
            dot = _xnor_dot(cols[:, 0].contiguous(), self.w_words[0], self.k)
        else:
            dot = torch.cat([_xnor_dot(cols[:, gi].contiguous(), self.w_words[gi], self.k) for gi in range(g)], 0)
        # (O, N*Ho*Wo) -> NCHW; a copy only for N > 1 (NCHW keeps the float ops downstream bit-identical)
        y = dot.view(g * og, n, ho, wo).permute(1, 0, 2, 3).contiguous()
        if ph or pw:
            y = y + self._padding_term(c, h, w)
        if has_zero:                                                                    # exact zeros of sign(x)
            q = torch.sign(q)
            y = y + self._conv((q == 0).float(), torch.where(self.signs > 0, 1.0, -1.0))
        if self.w_zeros is not None:
            y = y + self._conv(torch.sign(q), self.w_zeros)
        if self.scale is not None:
            y = y * self.scale.view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


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
    return packed_model(load_packed(path))
