"""Training and inference throughput of the models at the shapes the profiles use (images/s, median of steps).

    .venv/bin/python benchmarks/train_speed.py                       # bnext_nano and bnext_pico on 28x28 grey
    .venv/bin/python benchmarks/train_speed.py bnext_tiny --size 32 --in-chans 3 --batch 64
    .venv/bin/python benchmarks/train_speed.py --compile             # also torch.compile'd
    .venv/bin/python benchmarks/train_speed.py bnext_tiny --size 32 --in-chans 3 --batch 64 --num-classes 100 \\
        --compile --official-src /tmp/BNext
        # also the official implementation (a clone of hpi-xnor/BNext; needs `pip install einops torchinfo`)

A train step is forward, cross-entropy, backward and an AdamW step (the same optimizer for every model). The
variants of one model (official, ours eager, ours compiled) are timed round-robin, one step of each in turn, so
that the load of a shared machine weighs on all of them alike; ratios to the first variant are printed. Prints
figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from bnext_lib.models import create_model


def _official_model(src: str, name: str, num_classes: int):
    import contextlib
    import io
    import sys

    sys.path.insert(0, f"{src}/src")
    import bnext as official  # noqa: E402  (the official code, not part of this repository)

    with contextlib.redirect_stdout(io.StringIO()):
        return official.BNext(num_classes=num_classes, size=name.split("_")[1])


class Variant:
    """One model as timed: its train step and eval step on a fixed batch."""

    def __init__(self, label: str, model: torch.nn.Module, compile: bool, batch: int, in_chans: int, size: int,
                 num_classes: int):
        self.label, self.model, self.batch = label, model, batch
        self.params_M = sum(p.numel() for p in model.parameters()) / 1e6
        self.fwd = torch.compile(model) if compile else model
        self.opt = torch.optim.AdamW(model.parameters(), 1e-3)
        self.x = torch.randn(batch, in_chans, size, size)
        self.y = torch.randint(0, num_classes, (batch,))
        self.times: dict[str, list[float]] = {"train": [], "eval": []}

    def step(self, mode: str, record: bool = True) -> None:
        self.model.train(mode == "train")
        t = time.perf_counter()
        if mode == "train":
            loss = F.cross_entropy(self.fwd(self.x), self.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        else:
            with torch.no_grad():
                self.fwd(self.x)
        if record:
            self.times[mode].append(time.perf_counter() - t)

    def rate(self, mode: str) -> float:
        return self.batch / statistics.median(self.times[mode])


def measure(variants: list[Variant], steps: int, warmup: int = 3) -> None:
    for mode in ("train", "eval"):
        for v in variants:
            for _ in range(warmup):  # compiles, allocator warm-up
                v.step(mode, record=False)
        for _ in range(steps):
            for v in variants:
                v.step(mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["bnext_nano", "bnext_pico"])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant and mode")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile'd models")
    ap.add_argument("--official-src", help="a clone of hpi-xnor/BNext: also measure the official BNext (same shapes; "
                                           "it takes 3 channels and picks stem stride 1 for num_classes != 1000)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"{args.steps} round-robin steps per variant, medians")
    shape = dict(batch=args.batch, in_chans=args.in_chans, size=args.size, num_classes=args.num_classes)
    for name in args.models:
        variants = []
        if args.official_src:
            torch.manual_seed(0)
            variants.append(Variant(f"official {name}", _official_model(args.official_src, name, args.num_classes),
                                    False, **shape))
        kwargs = {"stem_stride": 1} if args.official_src else {}  # the official model uses stride 1 here
        for compiled in ([False, True] if args.compile else [False]):
            torch.manual_seed(0)
            model = create_model(name, num_classes=args.num_classes, in_chans=args.in_chans, **kwargs)
            variants.append(Variant(f"{name} {'compiled' if compiled else 'eager'}", model, compiled, **shape))
        measure(variants, args.steps)
        base = variants[0]
        for v in variants:
            train, evals = v.rate("train"), v.rate("eval")
            print(f"{v.label:>28s} {args.in_chans}x{args.size}x{args.size} batch {args.batch}  {v.params_M:.2f}M params"
                  f"  train {train:7.1f} img/s ({train / base.rate('train'):.2f}x)"
                  f"  eval {evals:7.1f} img/s ({evals / base.rate('eval'):.2f}x)"
                  f"  (60k-image epoch {60000 / train:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
