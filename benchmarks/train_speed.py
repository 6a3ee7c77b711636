"""Training and inference throughput of the models at the shapes the profiles use (images/s, median of steps).

    .venv/bin/python benchmarks/train_speed.py                       # bnext_nano and bnext_pico on 28x28 grey
    .venv/bin/python benchmarks/train_speed.py bnext_tiny --size 32 --in-chans 3 --batch 128
    .venv/bin/python benchmarks/train_speed.py --compile             # also torch.compile'd
    .venv/bin/python benchmarks/train_speed.py bnext_tiny --size 32 --in-chans 3 --official-src /tmp/BNext
        # also the official implementation (a clone of hpi-xnor/BNext; needs `pip install einops torchinfo`)

A train step is forward, cross-entropy, backward and an AdamW step. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from bnext_lib.models import create_model


def _median_rate(step, batch: int, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def _official_model(src: str, name: str, num_classes: int):
    import contextlib
    import io
    import sys

    sys.path.insert(0, f"{src}/src")
    import bnext as official  # noqa: E402  (the official code, not part of this repository)

    with contextlib.redirect_stdout(io.StringIO()):
        return official.BNext(num_classes=num_classes, size=name.split("_")[1])


def measure(name: str, size: int, in_chans: int, batch: int, num_classes: int, steps: int, compile: bool,
            official_src: str | None = None, **kwargs) -> dict:
    torch.manual_seed(0)
    if official_src:
        model = _official_model(official_src, name, num_classes)
    else:
        model = create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    fwd = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, in_chans, size, size)
    y = torch.randint(0, num_classes, (batch,))

    def train_step():
        loss = F.cross_entropy(fwd(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def eval_step():
        fwd(x)

    model.train()
    train = _median_rate(train_step, batch, 3 if compile else 2, steps)
    model.eval()
    evals = _median_rate(eval_step, batch, 3 if compile else 2, steps)
    return {"model": ("official " if official_src else "") + name, "compiled": compile, "input": f"{in_chans}x{size}x{size}", "batch": batch,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "train_img_s": train,
            "eval_img_s": evals, "epoch_60k_s": 60000 / train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["bnext_nano", "bnext_pico"])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile'd models")
    ap.add_argument("--official-src", help="a clone of hpi-xnor/BNext: also measure the official BNext (same shapes; "
                                           "it takes 3 channels and picks stem stride 1 for num_classes != 1000)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    runs = [(name, compiled, None) for name in args.models for compiled in ([False, True] if args.compile else [False])]
    if args.official_src:
        runs = [(name, False, args.official_src) for name in args.models] + runs
    for name, compiled, official in runs:
        kwargs = {"stem_stride": 1} if args.official_src else {}  # the official model uses stride 1 here
        r = measure(name, args.size, args.in_chans, args.batch, args.num_classes, args.steps, compiled, official,
                    **kwargs)
        print(f"{r['model']:>25s} {'compiled' if compiled else 'eager':>8s} {r['input']:>9s} batch {r['batch']}"
              f"  {r['params_M']:.2f}M params  train {r['train_img_s']:7.0f} img/s"
              f"  eval {r['eval_img_s']:7.0f} img/s  (60k-image epoch {r['epoch_60k_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
