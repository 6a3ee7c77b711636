"""The command line of the training engine: ``python -m bnext_lib.train`` (the same under ``torchrun``).

Unset options take the profile's value (``--profile``), then :class:`~bnext_lib.train.TrainConfig`'s default. Teachers
come from the run cache (:func:`bnext_lib.runs.load_teachers`: trained on first use, by rank 0 under ``torchrun``).
Errors in the user's arguments or files print one ``error:`` line and exit non-zero (2; 3 for a diverged run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import torch.distributed as dist

from .checkpoints import CheckpointError
from .data import DATASETS, DatasetError
from .profiles import get_profile
from .runs import load_teachers
from .train import TrainConfig, TrainingDiverged, train

__all__ = ["config_from_args", "main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bnext_lib.train",
                                 description="Train one model (official BNext recipe by default). Unset options "
                                             "take the profile's value, then TrainConfig's default.")
    ap.add_argument("--profile", help="smoke, cpu or gpu: fills the defaults below")
    ap.add_argument("--model", help="registered model or timm:<name> (default bnext_nano)")
    ap.add_argument("--dataset", help=f"one of {', '.join(DATASETS)}")
    ap.add_argument("--data-root", dest="data_root", help="data folder (default data/)")
    ap.add_argument("--download", action="store_true", default=None, help="allow torchvision downloads")
    ap.add_argument("--train-subset", dest="train_subset", type=int)
    ap.add_argument("--test-subset", dest="test_subset", type=int)
    ap.add_argument("--val-split", dest="val_split", type=int,
                    help="hold this many training images out as a fixed, class-stratified validation split")
    ap.add_argument("--image-size", dest="image_size", type=int, help="imagefolder input size")
    ap.add_argument("--pad-to", dest="pad_to", type=int, help="zero-pad in-memory images to this side")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", dest="batch_size", type=int, help="global batch size")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--warmup-epochs", dest="warmup_epochs", type=float,
                    help="linear warm-up length in epochs (default 5/512 of the run); with --warmup-lr lr/25 and "
                         "0.3 x epochs this is a one-cycle schedule")
    ap.add_argument("--warmup-lr", dest="warmup_lr", type=float)
    ap.add_argument("--min-lr", dest="min_lr", type=float)
    ap.add_argument("--anneal-to-end", dest="anneal_to_end", action="store_true", default=None,
                    help="cosine over the epochs after the warm-up, ending at --min-lr (one-cycle)")
    ap.add_argument("--clip-grad", dest="clip_grad", type=float)
    ap.add_argument("--temperature-reach", dest="temperature_reach", type=float)
    ap.add_argument("--per-epoch-schedules", dest="schedule_per_step", action="store_false", default=None,
                    help="update lr and temperature once per epoch, as the official code")
    ap.add_argument("--augment", help="preset(s) joined by '+': none, basic, randaugment, mixup, cutmix, "
                                      "random_erasing, label_smoothing, released")
    ap.add_argument("--teachers", help="comma-separated, main teacher last, e.g. "
                                       "timm:mobilenetv3_small_050,timm:resnet18")
    ap.add_argument("--teacher-epochs", dest="teacher_epochs", type=int)
    ap.add_argument("--teacher-recipe", dest="teacher_recipe", help="adamw-cosine (default) or onecycle")
    ap.add_argument("--kd-weighting", dest="kd_weighting", choices=["adaptive", "fixed"])
    ap.add_argument("--kd-granularity", dest="kd_granularity", choices=["batch", "instance"])
    ap.add_argument("--no-elm-attention", dest="elm_attention", action="store_false", default=None)
    ap.add_argument("--no-info-recoupling", dest="info_recoupling", action="store_false", default=None)
    ap.add_argument("--stem-stride", dest="stem_stride", type=int)
    ap.add_argument("--eval-train", dest="eval_train", action="store_true", default=None,
                    help="also evaluate the training split (eval mode, no augmentation) every epoch")
    ap.add_argument("--eval-every", dest="eval_every", type=int,
                    help="evaluate after every N-th epoch and the last (default 1)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device", help="auto, cpu, cuda")
    ap.add_argument("--amp", action="store_true", default=None,
                    help="bf16 autocast for the training forward (CPU and CUDA)")
    ap.add_argument("--compile", action="store_true", default=None, help="torch.compile the student")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", help="run folder for metrics and checkpoints")
    ap.add_argument("--resume", action="store_true", default=None, help="continue from OUT/last.pt")
    ap.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    ap.add_argument("--debug", action="store_true", help="show the Python traceback of a data or checkpoint error")
    return ap


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse CLI arguments into a validated :class:`TrainConfig` (profile defaults, then explicit flags)."""
    ap = _parser()
    args = vars(ap.parse_args(argv))
    args.pop("debug")
    values: dict[str, Any] = {}
    profile = args.pop("profile")
    if profile is not None:
        try:
            values.update(get_profile(profile).train)
        except ValueError as e:
            ap.error(str(e))
    if args.get("teachers") is not None:
        args["teachers"] = tuple(t.strip() for t in args["teachers"].split(",") if t.strip())
    values.update({k: v for k, v in args.items() if v is not None})
    cfg = TrainConfig(**values)
    try:
        cfg.validate()
    except ValueError as e:
        ap.error(str(e))
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # show the traceback of a user error too (the parser accepts and drops the flag)
    cfg = config_from_args(argv)
    try:
        result = train(cfg, teachers=load_teachers(cfg) if cfg.teachers else None)
    except (TrainingDiverged, DatasetError, CheckpointError, FileExistsError) as e:
        if debug:  # the user's files or a diverged run: the message says it all, unless asked for more
            raise
        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, TrainingDiverged) else 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    final = result["final"]
    if final is not None and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"test_top1": round(final["test_top1"], 3), "train_top1": round(final["train_top1"], 3),
                          "epochs": final["epoch"], "wall_s": round(result["wall_s"], 1),
                          "teachers": result["teachers"], "out": result["out"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
