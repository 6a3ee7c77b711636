"""Does bf16 autocast pay on this CPU? One training step (forward, backward, AdamW) of the cpu profile's teacher
(ResNet-10t, batch 128) and student (bnext_micro with a stride-1 stem, batch 32) on 28x28 images, float32 against
bf16 autocast, one thread, eager, the mean of five steps after one warm-up step.

    .venv/bin/python benchmarks/bf16_step.py

On a CPU without bf16 instructions (neither avx512_bf16 nor amx_bf16) autocast is emulated and the cpu profile
(bf16 for training and evaluation) crawls: docs/method.md §11.2. Prints the CPU, its instruction sets and the
figures; asserts nothing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bnext_lib.ledger import cpu_kind, machine  # noqa: E402
from bnext_lib.models import build_model  # noqa: E402


def seconds_per_step(model: torch.nn.Module, x: torch.Tensor, amp: bool, steps: int = 5) -> float:
    y = torch.randint(0, 10, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters())
    for i in range(steps + 1):
        if i == 1:  # the first step allocates and picks kernels
            t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"{cpu_kind(machine())}, torch {torch.__version__}, 1 thread")
    for name, batch, options in (("timm:resnet10t", 128, {}), ("bnext_micro", 32, {"stem_stride": 1})):
        model = build_model(name, 10, 1, **options).train()
        x = torch.randn(batch, 1, 28, 28)
        fp32, bf16 = (seconds_per_step(model, x, amp) for amp in (False, True))
        print(f"{name} batch {batch}: float32 {fp32:.3f} s/step, bf16 autocast {bf16:.3f} s/step ({bf16 / fp32:.1f}x)")


if __name__ == "__main__":
    main()
