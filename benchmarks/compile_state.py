"""Does a compiled run come out as it would alone, whatever its process compiled before it?

Trains the ablation's arms of the cpu profile's short run on a few thousand images, one after another in this
process, and prints the SHA-256 of each run's final weights; ``--alone ARM`` trains one arm in a process of its
own, the reference. A run whose weights differ from its arm trained alone depended on the process's history,
which no digest can see (docs/method.md §11.3). The engine resets torch.compile's state at the start of every
compiled run; ``--no-reset`` undoes that for the comparison (``torch._dynamo.reset`` made a no-op).

    OMP_NUM_THREADS=1 python benchmarks/compile_state.py --arms bnext elm neither
    OMP_NUM_THREADS=1 python benchmarks/compile_state.py --arms bnext elm neither --no-reset
    OMP_NUM_THREADS=1 python benchmarks/compile_state.py --arms bnext elm neither --no-reset --static
    OMP_NUM_THREADS=1 python benchmarks/compile_state.py --arms neither
"""
from __future__ import annotations

import argparse
import time

import torch

from bnext_lib.ledger import config_of, weights_sha256
from bnext_lib.profiles import SHORT_RUN
from bnext_lib.train import train

ARMS = {"bnext": dict(elm_attention=None, info_recoupling=None),
        "elm": dict(elm_attention=None, info_recoupling=False),
        "ir": dict(elm_attention=False, info_recoupling=None),
        "neither": dict(elm_attention=False, info_recoupling=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="+", choices=sorted(ARMS), required=True, help="trained in this order")
    ap.add_argument("--images", type=int, default=3000, help="training images (default 3000)")
    ap.add_argument("--no-reset", action="store_true", help="keep torch.compile's state between runs")
    ap.add_argument("--static", action="store_true",
                    help="switch dynamo's automatic dynamic shapes off (with --no-reset: is that the state that matters?)")
    args = ap.parse_args()
    if args.no_reset:
        torch._dynamo.reset = lambda: None
    if args.static:
        torch._dynamo.config.automatic_dynamic_shapes = False
    base = dict(SHORT_RUN, compile=True, train_subset=args.images, val_split=500, test_subset=1000, progress=False)
    print(f"{'position':>8}  {'arm':8}  {'weights SHA-256':16}  {'test top-1':>10}  {'s':>5}  "
          f"({'no reset' if args.no_reset else 'reset'}{', static shapes' if args.static else ''}, torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for i, arm in enumerate(args.arms, 1):
        t = time.perf_counter()
        r = train(config_of(dict(base, **ARMS[arm])), single_process=True)
        print(f"{i:>8}  {arm:8}  {weights_sha256(r['model'].state_dict())[:16]}  {r['final']['test_top1']:>10.2f}  "
              f"{time.perf_counter() - t:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
