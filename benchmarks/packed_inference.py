"""Packed-bit (XNOR + popcount) inference against the float simulation, BNext-T at batch 1.

    .venv/bin/python benchmarks/packed_inference.py                  # BNext-T, 224x224, ImageNet head
    .venv/bin/python benchmarks/packed_inference.py --size 112 --repeats 5

For every binary convolution of the model (forward hooks record each one's input), the float path is the
layer as trained (sign of the input, float conv2d with the +-1 kernel) and the packed path is
:class:`bnext_lib.packed.PackedBinaryConv2d` (sign, im2col, bit packing, XNOR-popcount kernel, exact padding
correction). Times are medians over repeats, summed over the 3x3 and the 1x1 convolutions separately, then the
whole model (everything else stays float in both). The ratio is float time / packed time; "of 64x" puts it
against the ceiling of 64 one-bit products per 64-bit word. Prints figures; asserts only that outputs are equal.
"""
from __future__ import annotations

import argparse

import torch

from bnext_lib.binary import BinaryConv2d, set_temperature
from bnext_lib.models import create_model
from bnext_lib.packed import PackedBinaryConv2d, kernel_backend, packed_model
from timing import median_seconds  # the warm-up call also makes the packed path's one-off padding correction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bnext_tiny")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=1000).eval()
    set_temperature(model, 0.0)
    x = torch.randn(1, 3, args.size, args.size)

    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: inputs.__setitem__(name, inp[0].detach()))
             for name, m in model.named_modules() if isinstance(m, BinaryConv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    print(f"{args.model} at 1x3x{args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"popcount kernel: {kernel_backend()}")

    totals = {}
    for name, m in model.named_modules():
        if name not in inputs:
            continue
        packed = PackedBinaryConv2d(m)
        xi = inputs[name]
        with torch.no_grad():
            ref = m(xi)
            out = packed(xi)
        assert torch.equal(out, ref), f"{name}: packed output differs from the float simulation"
        kind = f"{m.kernel_size[0]}x{m.kernel_size[1]}"
        with torch.no_grad():
            tf = median_seconds(lambda: m(xi), args.repeats)
            tp = median_seconds(lambda: packed(xi), args.repeats)
        t = totals.setdefault(kind, [0.0, 0.0, 0])
        t[0] += tf
        t[1] += tp
        t[2] += 1
    for kind, (tf, tp, n) in sorted(totals.items()):
        r = tf / tp
        print(f"binary {kind} convolutions ({n:2d}): float {1e3 * tf:8.1f} ms  packed {1e3 * tp:8.1f} ms  "
              f"ratio {r:5.2f}x  ({100 * r / 64:.1f} % of 64x)")

    pm = packed_model(model)
    with torch.no_grad():
        ref, out = model(x), pm(x)
        assert torch.equal(out, ref), "packed model logits differ from the float model's"
        tf = median_seconds(lambda: model(x), args.repeats)
        tp = median_seconds(lambda: pm(x), args.repeats)
    print(f"whole model: float {1e3 * tf:8.1f} ms  packed {1e3 * tp:8.1f} ms  ratio {tf / tp:5.2f}x  "
          f"({100 * tf / tp / 64:.1f} % of 64x); logits identical")


if __name__ == "__main__":
    main()
