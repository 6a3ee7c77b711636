"""File sizes of a binarized model: float32 state dict vs the 1-bit ``exact`` and ``compact`` exports.

    .venv/bin/python benchmarks/export_size.py                 # BNext-T, ImageNet head
    .venv/bin/python benchmarks/export_size.py bnext_small bnext_nano

Also checks that the exact export reloads with identical logits. The compact export's agreement is only
meaningful on a trained model (an untrained binary network flips its argmax under any rounding): that is checked
on Fashion-MNIST in tests/test_export.py. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bnext_lib.binary import set_temperature
from bnext_lib.export import load_packed, save_packed
from bnext_lib.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["bnext_tiny"])
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64, help="input side for the logits check")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = create_model(name, num_classes=args.num_classes).eval()
            set_temperature(model, 0.0)  # as at the end of training
            fp = Path(tmp) / "float.pt"
            torch.save(model.state_dict(), fp)
            exact = save_packed(model, Path(tmp) / "exact.safetensors")
            compact = save_packed(model, Path(tmp) / "compact.safetensors", format="compact")
            x = torch.randn(8, 3, args.size, args.size)
            with torch.no_grad():
                ref = model(x)
                same = torch.equal(load_packed(exact)(x), ref)
            mb = lambda p: p.stat().st_size / 1e6  # noqa: E731
            header = int.from_bytes(compact.read_bytes()[:8], "little")
            print(f"{name} ({args.num_classes} classes): float32 state dict {mb(fp):.1f} MB | exact {mb(exact):.2f} MB "
                  f"(logits identical: {same}) | compact {mb(compact):.2f} MB (header {header} bytes) "
                  f"| ratio float32/compact {mb(fp) / mb(compact):.1f}x")


if __name__ == "__main__":
    main()
