"""Full-precision teachers: timm architectures trained on the dataset by this project's engine, cached under data/.

The paper distils from ImageNet-pretrained EfficientNet-B0/B2/B4 and ConvNeXt-T (``docs/method.md`` §8.3).
Pretrained weights cannot be fetched here and would not fit a 28x28 dataset anyway, so teachers of clearly
different strength are trained on the same data, by :func:`bnext_lib.train.train`, once: a teacher is cached by a
digest of its full training configuration in ``data/teachers/<digest>/`` and listed with its test accuracy in
``data/teachers/manifest.json``; later runs reuse it.

Suggested ladder for small grey images (weak to strong, all timm): ``timm:mobilenetv3_small_050``,
``timm:resnet10t``, ``timm:resnet18``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from ..checkpoints import atomic_save, read_checkpoint
from ..data import default_data_root

__all__ = ["teacher_config", "teacher_digest", "get_teacher", "read_manifest"]


def teacher_config(name: str, dataset: str, data_root: str | None, epochs: int, subset: int | None, seed: int,
                   download: bool = False):
    """The training configuration of a teacher: AdamW 1e-3 with weight decay 0.05 on every parameter, cosine
    schedule, crop-and-flip augmentation, cross-entropy."""
    from ..train import TrainConfig

    return TrainConfig(model=name, dataset=dataset, data_root=data_root, download=download, epochs=epochs,
                       train_subset=subset,
                       batch_size=128, lr=1e-3, wd_conv=0.05, wd_other=0.05, augment="basic", seed=seed,
                       progress=False)


def teacher_digest(name: str, dataset: str, data_root: str | None, epochs: int, subset: int | None, seed: int = 0,
                   download: bool = False) -> str:
    """The cache key of a teacher (its folder under ``data/teachers/`` and its manifest entry)."""
    from ..train import config_hash
    return config_hash(teacher_config(name, dataset, data_root, epochs, subset, seed, download))


def _cache_root(data_root: str | None) -> Path:
    return (Path(data_root) if data_root else default_data_root()) / "teachers"


def read_manifest(data_root: str | None = None) -> dict:
    """``{digest: entry}`` of every cached teacher (name, dataset, epochs, test top-1, ...)."""
    path = _cache_root(data_root) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_manifest(root: Path, digest: str, entry: dict) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest[digest] = entry
    tmp = root / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)


def get_teacher(name: str, dataset: str, data_root: str | None = None, epochs: int = 4, subset: int | None = None,
                seed: int = 0, device: torch.device | str = "cpu", is_main: bool = True, world: int = 1,
                download: bool = False) -> tuple[nn.Module, float]:
    """A frozen, eval-mode teacher and its test top-1, trained and cached on first use.

    Under several processes only rank 0 trains a missing teacher while the others wait; train teachers before
    launching ``torchrun`` to avoid the wait.
    """
    from ..train import build_model, train

    cfg = teacher_config(name, dataset, data_root, epochs, subset, seed, download)
    digest = teacher_digest(name, dataset, data_root, epochs, subset, seed, download)
    root = _cache_root(data_root)
    folder = root / digest
    weights = folder / "teacher.pt"
    if not weights.exists() and is_main:
        t = time.perf_counter()
        result = train(cfg, single_process=True)
        model = result["model"]
        atomic_save({"model": model.state_dict(), "test_top1": result["final"]["test_top1"],
                     "num_classes": result["num_classes"], "in_chans": result["in_chans"],
                     "config": cfg.to_dict()}, weights)
        _write_manifest(root, digest, {
            "name": name, "dataset": dataset, "epochs": epochs, "subset": subset, "seed": seed,
            "test_top1": result["final"]["test_top1"], "train_top1": result["final"]["train_top1"],
            "params": sum(p.numel() for p in model.parameters()), "train_s": round(time.perf_counter() - t, 1)})
    if world > 1 and dist.is_initialized():
        dist.barrier()
    state = read_checkpoint(weights)
    model = build_model(name, state["num_classes"], state["in_chans"])
    model.load_state_dict(state["model"])
    model.eval().requires_grad_(False).to(device)
    return model, float(state["test_top1"])
