"""The command line of the training engine: ``python -m bnext_lib.train`` (the same under ``torchrun``).

Every option is a :class:`~bnext_lib.config.TrainConfig` field, with the help its metadata gives. Unset options take
the profile's value (``--profile``), then the field's default. Teachers come from the run cache (:func:`bnext_lib.runs.load_teachers`: trained on first use, by rank 0 under ``torchrun``).
Errors in the user's arguments or files print one ``error:`` line and exit non-zero (2; 3 for a diverged run).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Sequence

import torch.distributed as dist

from .checkpoints import CheckpointError
from .config import TrainConfig, field_types
from .data import DatasetError
from .profiles import get_profile
from .runs import load_teachers
from .train import TrainingDiverged, train

__all__ = ["config_from_args", "main"]


def _parser() -> argparse.ArgumentParser:
    """The engine's options, one per :class:`~bnext_lib.config.TrainConfig` field, from the fields' metadata."""
    ap = argparse.ArgumentParser(prog="python -m bnext_lib.train",
                                 description="Train one model (official BNext recipe by default). Unset options "
                                             "take the profile's value, then TrainConfig's default.")
    ap.add_argument("--profile", help="smoke, cpu, gpu or paper: fills the defaults below")
    ap.add_argument("--regime", choices=("full", "overfitting"),
                    help="with --profile: the profile's full-data settings (default) or its over-fitting regime (the "
                         "training subset and length the over-fitting, distillation and augmentation studies use)")
    types = field_types()
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta["cli"]:
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        help_text = meta["help"] + (f" (one of {[c for c in meta['choices'] if c is not None]})"
                                    if meta["choices"] else "")
        if types[f.name] is bool:
            # a bare switch: sets True, or False where the flag names the opposite (--no-progress)
            ap.add_argument(flag, dest=f.name, action="store_const", const=meta["flag"] is None, default=None,
                            help=help_text)
        elif types[f.name] is tuple:
            ap.add_argument(flag, dest=f.name, type=_comma_list, help=help_text)
        else:
            ap.add_argument(flag, dest=f.name, type=types[f.name], help=help_text)
    ap.add_argument("--debug", action="store_true", help="show the Python traceback of a data or checkpoint error")
    return ap


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse CLI arguments into a validated :class:`TrainConfig` (profile defaults, then explicit flags)."""
    ap = _parser()
    args = vars(ap.parse_args(argv))
    args.pop("debug")
    values: dict[str, Any] = {}
    profile, regime = args.pop("profile"), args.pop("regime")
    if regime is not None and profile is None:
        ap.error("--regime needs --profile (the regime is the profile's)")
    if profile is not None:
        try:
            chosen = get_profile(profile)
        except ValueError as e:
            ap.error(str(e))
        values.update(chosen.train)
        if regime == "overfitting":
            values.update(chosen.overfitting)
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
        # the validation top-1 (with a validation split) is the number choices are made on; test is for reporting
        shown = {k: round(final[k], 3) for k in ("test_top1", "val_top1", "train_top1", "train_eval_top1")
                 if final.get(k) is not None}
        print(json.dumps({**shown, "epochs": final["epoch"], "wall_s": round(result["wall_s"], 1),
                          "teachers": result["teachers"], "out": result["out"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
