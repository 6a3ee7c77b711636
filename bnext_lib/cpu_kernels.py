"""Speed paths for CPUs: other kernels for the same numbers, kept apart from the method's layers.

:class:`~bnext_lib.binary.BinaryConv2d` asks :func:`binary_conv2d` first; it returns ``None`` wherever no speed
path applies, and the layer runs ``F.conv2d``. One path today: on tiny maps with many channels (BNext-T/S/M/L on
32x32 images end on 2x2 maps with 1024+ channels) oneDNN's convolution weight gradient is slow, and one GEMM over
im2col columns computes it ~3x faster; forward and input gradient stay oneDNN's, bit for bit. The threshold was
measured on 2 AVX-512 cores (``benchmarks/conv_paths.py`` re-measures it on any machine).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["binary_conv2d", "gemm_weight_grad_pays", "ConvGemmWeightGrad"]


def binary_conv2d(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """``conv``'s output on ``x`` with the (quantized) ``weight`` through a speed path, or ``None`` if none
    applies."""
    if gemm_weight_grad_pays(conv, x):
        return ConvGemmWeightGrad.apply(x, weight, conv.stride, conv.padding)
    return None


class ConvGemmWeightGrad(torch.autograd.Function):
    """``conv2d`` whose forward and input gradient are oneDNN's (bit for bit what ``F.conv2d`` gives) and whose
    weight gradient is one GEMM over im2col columns, ``g (O, N*L) @ cols (N*L, C*k*k)``.

    oneDNN's weight gradient is slow on tiny maps with many channels: BNext-T on 32x32 images ends on 2x2 maps
    with 1024 channels, where it takes ~120 ms per step at batch 64 on 2 cores against ~40 ms as a GEMM. Only the
    weight gradient changes, and only in summation order (~1e-6 relative); nothing feeds back into the forward.

    Under autocast the operands are cast once, as autocast casts ``conv2d``'s, and the backward runs in that dtype
    (a custom function's backward sees no autocast casts); the gradients go back in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
        ctx.dtypes = x.dtype, weight.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        with torch.autocast(x.device.type, enabled=False):
            return nn.functional.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, ctx.stride, ctx.padding, (1, 1),
                                                         False, (0, 0), 1, (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            n, c = x.shape[:2]
            o, _, kh, kw = weight.shape
            if (kh, kw) == (1, 1) and ctx.stride == (1, 1) and ctx.padding == (0, 0):
                cols = x.reshape(n, c, -1)
            else:
                cols = nn.functional.unfold(x, (kh, kw), padding=ctx.padding, stride=ctx.stride)
            length = cols.shape[-1]
            g = grad.reshape(n, o, length).transpose(0, 1).reshape(o, n * length)
            grad_w = (g @ cols.transpose(1, 2).reshape(n * length, c * kh * kw)).view_as(weight)
        x_dtype, w_dtype = ctx.dtypes
        return (None if grad_x is None else grad_x.to(x_dtype)), (None if grad_w is None else grad_w.to(w_dtype)), \
            None, None


def gemm_weight_grad_pays(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Training on CPU, maps of <= 4 pixels, filters of >= 512 weights (1x1) or >= 4096 (larger kernels): where
    the GEMM weight gradient measured faster than oneDNN's on 2 AVX-512 cores (1x1 over 512 / 1024 channels on
    2x2: 1.4x / 1.7x; 3x3 over 1024 channels on 2x2: 3x). Smaller filters, such as all of bnext_nano's, take
    < 1 ms either way and keep oneDNN, so the report's models train bit for bit as before."""
    if not (conv.training and torch.is_grad_enabled() and conv.weight.requires_grad and conv.bias is None
            and x.device.type == "cpu" and x.dim() == 4 and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)):
        return False
    return x.shape[-2] * x.shape[-1] <= 4 and conv.weight[0].numel() >= (512 if conv.kernel_size == (1, 1) else 4096)
