"""oneDNN's weight gradient vs the GEMM one :class:`~bnext_lib.binary.BinaryConv2d` uses on tiny maps, per layer.

    .venv/bin/python benchmarks/conv_paths.py                      # BNext-T's binary convolutions on 32x32 inputs
    .venv/bin/python benchmarks/conv_paths.py --model bnext_nano --size 28 --in-chans 1 --stem-stride 2

For every distinct binary convolution shape of the model at that input: forward + backward time (median of
repeats, sign inputs, batch 64) through ``F.conv2d`` (all oneDNN) and through ``ConvGemmWeightGrad`` (oneDNN
forward and input gradient, GEMM weight gradient), their ratio, the largest relative difference of the weight
gradients (output and input gradient are identical by construction), and which one ``BinaryConv2d`` takes in
training. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bnext_lib.binary import BinaryConv2d
from bnext_lib.cpu_kernels import ConvGemmWeightGrad as _ConvGemmWeightGrad
from bnext_lib.cpu_kernels import gemm_weight_grad_pays as _gemm_weight_grad_pays
from bnext_lib.models import create_model
from timing import median_seconds


def _shapes(model, size: int, in_chans: int):
    """``(in_chs, out_chs, kernel, stride, padding, input side)`` of every binary convolution, in order."""
    seen, hooks = [], []
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: seen.append(
                (mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.padding[0],
                 inp[0].shape[-1]))))
    with torch.no_grad():
        model.eval()(torch.zeros(1, in_chans, size, size))
    for h in hooks:
        h.remove()
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bnext_tiny")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--in-chans", type=int, default=3)
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10, in_chans=args.in_chans, stem_stride=args.stem_stride)
    shapes = _shapes(model, args.size, args.in_chans)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model} on {args.size}x{args.size}, "
          f"batch {args.batch}; fwd+bwd ms (x = how many times each shape occurs)")
    total = {"onednn": 0.0, "chosen": 0.0}
    for shape in sorted(set(shapes), key=shapes.index):
        cin, cout, k, stride, pad, side = shape
        x = torch.randn(args.batch, cin, side, side).sign().requires_grad_()
        w = (1e-3 * torch.randn(cout, cin, k, k)).requires_grad_()
        conv = BinaryConv2d(cin, cout, k, stride)
        paths = {"onednn": lambda a, b: F.conv2d(a, b, stride=stride, padding=pad),
                 "gemm": lambda a, b: _ConvGemmWeightGrad.apply(a, b, (stride, stride), (pad, pad))}
        ref = paths["onednn"](x, w)
        g = torch.randn_like(ref)
        ref_gw = torch.autograd.grad(ref, w, g)[0]
        gw = torch.autograd.grad(paths["gemm"](x, w), w, g)[0]
        err = ((gw - ref_gw).abs().max() / ref_gw.abs().max()).item()
        ms = {name: 1e3 * median_seconds(lambda f=f: torch.autograd.grad(f(x, w), (x, w), g), args.repeats)
              for name, f in paths.items()}
        chosen = "gemm" if _gemm_weight_grad_pays(conv.train(), x) else "onednn"
        n = shapes.count(shape)
        total["onednn"] += n * ms["onednn"]
        total["chosen"] += n * ms[chosen]
        print(f"{cin:5d}->{cout:<5d} {k}x{k}/{stride} on {side:2d}x{side:<2d} x{n:<2d} oneDNN {ms['onednn']:7.1f}  "
              f"GEMM weight grad {ms['gemm']:7.1f}  ratio {ms['onednn'] / ms['gemm']:5.2f}  weight grad rel diff {err:.1e}  "
              f"BinaryConv2d takes {chosen}")
    print(f"all binary convolutions, fwd+bwd per step: oneDNN only {total['onednn']:.0f} ms, as BinaryConv2d "
          f"chooses {total['chosen']:.0f} ms ({total['onednn'] / total['chosen']:.2f}x)")


if __name__ == "__main__":
    main()
