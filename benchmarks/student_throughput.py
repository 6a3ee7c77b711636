"""Training throughput of the report's students through the engine itself, on the machine at hand: what wins
for many short runs on one device (batch size, torch.compile, bf16 autocast, several runs side by side).

    .venv/bin/python benchmarks/student_throughput.py --threads 1 --procs 1        # CPU, one run
    python benchmarks/student_throughput.py --device cuda --batch 256 1024 --compile both --amp both --procs 1 8

Each cell trains ``--images`` Fashion-MNIST images for two epochs with :func:`bnext_lib.train.train` (the
engine's real step: data, augmentation, temperature, schedules, metrics) and reports the second epoch's images/s,
so that compilation and warm-up stay out of it; the first epoch's seconds are printed beside it (that is where the
compile cost shows). With ``--procs N`` the same cell runs N times side by side, each in its own process
(:func:`bnext_lib.pool.parallel_map`), and the N second-epoch rates are summed: the aggregate a report profile
gets from N workers. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

from bnext_lib.pool import parallel_map
from bnext_lib.train import TrainConfig, train


def _cell(cfg: TrainConfig) -> tuple[float, float]:
    """(second-epoch images/s, first-epoch seconds) of one run."""
    history = train(cfg, single_process=True)["history"]
    return history[1]["train_images_s"], history[0]["epoch_s"]


def _choices(value: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bnext_nano")
    ap.add_argument("--stem-stride", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=20000, help="training images per epoch")
    ap.add_argument("--batch", type=int, nargs="+", default=[128])
    ap.add_argument("--compile", choices=["off", "on", "both"], default="off")
    ap.add_argument("--amp", choices=["off", "on", "both"], default="off")
    ap.add_argument("--procs", type=int, nargs="+", default=[1], help="runs side by side")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run")
    ap.add_argument("--pad-to", type=int, default=None, help="zero-pad the 28x28 images to this side")
    ap.add_argument("--channels-last", action="store_true", help="train in the channels-last memory format")
    ap.add_argument("--augment", default="basic")
    args = ap.parse_args()
    base = TrainConfig(model=args.model, dataset="fashion_mnist", train_subset=args.images, test_subset=1000,
                       epochs=2, augment=args.augment, stem_stride=args.stem_stride, device=args.device,
                       threads=args.threads, progress=False, pad_to=args.pad_to, channels_last=args.channels_last)
    base.validate()
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(f"{args.model} on {where}, torch {torch.__version__}, {args.images} images x 2 epochs per run, "
          f"{args.threads or torch.get_num_threads()} thread(s) per run")
    for batch, compiled, amp, procs in itertools.product(args.batch, _choices(args.compile), _choices(args.amp),
                                                         args.procs):
        cfg = TrainConfig(**{**base.to_dict(), "teachers": (), "batch_size": batch, "compile": compiled,
                             "amp": amp})
        t = time.perf_counter()
        results = parallel_map(_cell, [cfg] * procs, workers=procs, threads=args.threads)
        rate = sum(r[0] for r in results)
        first = max(r[1] for r in results)
        print(f"batch {batch:5d} {'compiled' if compiled else 'eager   '} {'bf16' if amp else 'fp32'} x{procs:<3d}"
              f" {rate:9.0f} img/s ({rate / procs:8.0f} per run) | first epoch {first:6.1f} s"
              f" | cell {time.perf_counter() - t:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
