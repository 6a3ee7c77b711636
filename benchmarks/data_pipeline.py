"""Data-pipeline throughput (images/s) per augmentation preset, next to the model's training-step throughput.

    .venv/bin/python benchmarks/data_pipeline.py                   # Fashion-MNIST, bnext_nano, batch 128
    .venv/bin/python benchmarks/data_pipeline.py --dataset synthetic

The pipeline is what the engine runs per batch in the training process: the in-memory loader (with the per-image
RandAugment where the preset has it) and the batch augmentation. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import time

import torch

from bnext_lib.augment import Augmenter
from bnext_lib.data import BatchLoader, load_dataset

from train_speed import measure


def pipeline_rate(data, preset: str, batch: int, batches: int) -> float:
    aug = Augmenter(preset, data.mean, data.std, data.num_classes)
    loader = BatchLoader(data, batch, sample_transform=aug.sample_transform())
    rates = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        it = iter(loader)
        t = time.perf_counter()
        n = 0
        for _ in range(batches):
            images, labels = next(it)
            aug.train_batch(images, labels)
            n += len(labels)
        rates.append(n / (time.perf_counter() - t))
    return sorted(rates)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--model", default="bnext_nano")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--presets", nargs="*", default=["none", "basic", "randaugment", "released", "mixup",
                                                      "cutmix", "random_erasing"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_dataset(args.dataset, "train")
    print(f"{args.dataset}: {len(data)} images {tuple(data.images.shape[1:])}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads")
    model = measure(args.model, data.images.shape[-1], data.in_chans, args.batch, data.num_classes, 8, False)
    print(f"{'model ' + args.model:>28s}: train step {model['train_img_s']:8.0f} img/s")
    for preset in args.presets:
        rate = pipeline_rate(data, preset, args.batch, args.batches)
        print(f"{'pipeline ' + preset:>28s}: {rate:8.0f} img/s  ({rate / model['train_img_s']:.1f}x the train step)")


if __name__ == "__main__":
    main()
