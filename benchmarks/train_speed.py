"""Training and inference throughput of the models at the shapes the profiles use (images/s, median of steps).

    .venv/bin/python benchmarks/train_speed.py                       # bnext_nano and bnext_pico on 28x28 grey
    .venv/bin/python benchmarks/train_speed.py bnext_tiny --size 32 --in-chans 3 --batch 64
    .venv/bin/python benchmarks/train_speed.py --compile             # also torch.compile'd
    .venv/bin/python benchmarks/train_speed.py bnext_tiny --size 32 --in-chans 3 --batch 64 --num-classes 100 \\
        --compile --official-src /tmp/BNext
        # also the official implementation (a clone of hpi-xnor/BNext; needs `pip install einops torchinfo`)

    .venv/bin/python benchmarks/train_speed.py bnext_tiny --size 32 --in-chans 3 --batch 128 --num-classes 10 \
        --official-src .official --amp --channels-last     # also ours under bf16 autocast (+ channels-last)
    python benchmarks/train_speed.py bnext_tiny --size 224 --in-chans 3 --batch 128 --num-classes 1000 \
        --device cuda --official-src .official --amp --compile bf16 --modes train --steps 8
        # on a GPU: official fp32, ours fp32 and bf16 eager, ours bf16 compiled; train steps only

A train step is forward, cross-entropy, backward and an AdamW step (the same optimizer for every model). The
variants of one model (official float32, ours float32 eager, ours bf16 autocast, ours compiled) are timed
round-robin, one step of each in turn, so that the load of a shared machine weighs on all of them alike; ratios to
the first variant are printed. On CUDA each step ends with a synchronisation. Prints figures; asserts nothing.
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
                 num_classes: int, device: str = "cpu", amp: bool = False, channels_last: bool = False):
        self.label, self.batch, self.device, self.amp = label, batch, torch.device(device), amp
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt)
        self.params_M = sum(p.numel() for p in model.parameters()) / 1e6
        self.fwd = torch.compile(self.model) if compile else self.model
        self.opt = torch.optim.AdamW(model.parameters(), 1e-3)
        self.x = torch.randn(batch, in_chans, size, size, device=self.device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, num_classes, (batch,), device=self.device)
        self.times: dict[str, list[float]] = {"train": [], "eval": []}

    def step(self, mode: str, record: bool = True) -> None:
        self.model.train(mode == "train")
        t = time.perf_counter()
        # evaluation stays float32, as in the engine; only the training forward runs under autocast
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp and mode == "train"):
            if mode == "train":
                loss = F.cross_entropy(self.fwd(self.x).float(), self.y)
            else:
                with torch.no_grad():
                    self.fwd(self.x)
        if mode == "train":
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if record:
            self.times[mode].append(time.perf_counter() - t)

    def rate(self, mode: str) -> float:
        return self.batch / statistics.median(self.times[mode])


def measure(variants: list[Variant], steps: int, warmup: int = 3,
            modes: tuple[str, ...] = ("train", "eval")) -> None:
    for mode in modes:
        for v in variants:
            for _ in range(warmup):  # compiles, allocator warm-up
                v.step(mode, record=False)
        for _ in range(steps):
            for v in variants:
                v.step(mode)


def profile_train_step(v: Variant, steps: int = 3, top: int = 15) -> None:
    """Where a train step's time goes: torch.profiler's operators by self time over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if v.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            v.step("train", record=False)
    key = "self_cuda_time_total" if v.device.type == "cuda" else "self_cpu_time_total"
    print(f"--- {v.label}: top operators by self time over {steps} train steps")
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=40), flush=True)


def _ours(args) -> list[tuple[str, bool, bool, bool]]:
    """(label, compiled, amp, channels_last) of each variant of ours to time."""
    out = [("fp32 eager", False, False, False)]
    if args.amp:
        out.append(("bf16 eager", False, True, False))
        if args.channels_last:
            out.append(("bf16 eager channels-last", False, True, True))
    if args.compile in ("both", "fp32"):
        out.append(("fp32 compiled", True, False, False))
    if args.compile in ("both", "bf16") and args.amp:
        out.append(("bf16 compiled", True, True, args.channels_last))
    return out


def _machine(device: str) -> str:
    """The CPU (model name and the flags that matter for bf16) or the GPU the figures come from."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    name, flags = platform.processor() or platform.machine(), []
    try:
        info = open("/proc/cpuinfo").read()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        flags = sorted({f for f in info.split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")})
    except (OSError, StopIteration):
        pass
    return f"{name} [{' '.join(flags)}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["bnext_nano", "bnext_pico"])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant and mode")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--compile", nargs="?", const="both", choices=("both", "fp32", "bf16"),
                    help="also measure torch.compile'd models (both, or only the fp32 or the bf16 one: each compile "
                         "of BNext-T costs a minute or more)")
    ap.add_argument("--official-src", help="a clone of hpi-xnor/BNext: also measure the official BNext (same shapes; "
                                           "it takes 3 channels and picks stem stride 1 for num_classes != 1000)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="also measure ours under bf16 autocast")
    ap.add_argument("--channels-last", action="store_true", help="the bf16 variants also in channels-last")
    ap.add_argument("--modes", nargs="+", choices=("train", "eval"), default=["train", "eval"],
                    help="which steps to time (eval of a compiled model compiles again)")
    ap.add_argument("--profile", metavar="TEXT", help="after timing, profile the train steps of the variants whose "
                                                      "label contains TEXT (torch.profiler, top operators)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_machine(args.device)}; "
          f"{args.steps} round-robin steps per variant, medians")
    shape = dict(batch=args.batch, in_chans=args.in_chans, size=args.size, num_classes=args.num_classes,
                 device=args.device)
    for name in args.models:
        variants = []
        if args.official_src:
            torch.manual_seed(0)
            variants.append(Variant(f"official {name} fp32", _official_model(args.official_src, name,
                                                                              args.num_classes), False, **shape))
        # the official model picks stem stride 1 for num_classes != 1000
        kwargs = {"stem_stride": 1 if args.num_classes != 1000 else 2} if args.official_src else {}
        for label, compiled, amp, cl in _ours(args):
            torch.manual_seed(0)
            model = create_model(name, num_classes=args.num_classes, in_chans=args.in_chans, **kwargs)
            variants.append(Variant(f"{name} {label}", model, compiled, amp=amp, channels_last=cl, **shape))
        measure(variants, args.steps, args.warmup, tuple(args.modes))
        if args.profile:
            for v in variants:
                if args.profile in v.label:
                    profile_train_step(v)
        base = variants[0]
        for v in variants:
            line = f"{v.label:>40s} {args.in_chans}x{args.size}x{args.size} batch {args.batch}  {v.params_M:.2f}M params"
            for mode in args.modes:
                line += f"  {mode} {v.rate(mode):7.1f} img/s ({v.rate(mode) / base.rate(mode):.2f}x)"
            if "train" in args.modes:
                line += f"  (60k-image epoch {60000 / v.rate('train'):.0f} s)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
