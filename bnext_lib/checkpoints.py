"""Checkpoints: loading those of the official BNext training script strictly, writing files atomically.

The official script (hpi-xnor/BNext ``train_assistant_group_amp.py``) saves
``{"epoch", "state_dict", "optimizer", "best_top1_acc", "train_loss", ...}`` with the student wrapped in
DistributedDataParallel, so its keys start with ``module.``; the released checkpoints are such files.
:func:`load_official` accepts them (or the bare state dict), converts the names with the model's
``official_key_map()``, and loads strictly: a missing, unexpected or mis-shaped tensor is an error that names it.
The official script itself loads its own checkpoints with ``strict=False``; a silently half-loaded model is a
failure users of binary-network projects have reported (``docs/sources.md`` §3), so nothing here is lenient.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "load_official", "to_official_state_dict", "save_official", "atomic_write",
           "atomic_write_text", "atomic_save",
           "read_checkpoint"]

_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or does not match the model."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = True) -> Path:
    """Write a file through ``write(f)`` into a temporary file in the same folder, then rename it: an interrupted
    write never leaves a truncated file under ``path`` (the one helper every writer of this project uses)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a string."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def read_checkpoint(path: str | os.PathLike, trusted: bool = False) -> Any:
    """Read a ``torch.save`` file on the CPU, naming the file in every error.

    Args:
        path: the file.
        trusted: allow arbitrary pickled objects (``weights_only=False``). Only for files you trust: unpickling
            can run code. Plain tensors, numbers, strings, lists and dicts (what the official script writes) load
            without it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        if trusted or "Unsupported global" not in str(e):  # not a refused object: the bytes are not a checkpoint
            raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file "
                                  f"({_first_line(e)}); re-download or re-create it") from e
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain containers ({_first_line(e)}). If you "
            f"trust the file, pass trusted=True to load it with weights_only=False.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); "
                              f"re-download or re-create it") from e


def _first_line(e: BaseException) -> str:
    """The gist of a library error (torch's unpickling errors run to a dozen lines of advice)."""
    text = str(e)
    if "Unsupported global" in text:  # torch's advice comes first; the refused object is what matters
        return "Unsupported global" + text.split("Unsupported global", 1)[1].split(" was not", 1)[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = [ln for ln in lines[1:] if not ln.startswith(("Please file an issue", "Check the documentation"))]
    return lines[0] if lines else type(e).__name__


def _unwrap(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{where}: expected a state dict of tensors, or a dict with one under 'state_dict'")
    out = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _key_map(model: nn.Module) -> dict[str, str]:
    fn = getattr(model, "official_key_map", None)
    if fn is None:
        raise CheckpointError(f"{type(model).__name__} has no official checkpoint format (only the BNext family "
                              "and BNext-18 have one)")
    return fn()


def to_official_state_dict(model: nn.Module, ddp_prefix: bool = True) -> dict[str, torch.Tensor]:
    """The model's state dict under the official names (``module.feature.3.Attention.binary_conv.weight``...)."""
    names = _key_map(model)
    prefix = "module." if ddp_prefix else ""
    return {prefix + names[k]: v.detach().clone() for k, v in model.state_dict().items()}


def save_official(model: nn.Module, path: str | os.PathLike, epoch: int = 0, **extra: Any) -> Path:
    """Write a checkpoint in the official training script's format (atomically)."""
    return atomic_save({"epoch": epoch, "state_dict": to_official_state_dict(model), **extra}, path)


def _hint(missing: list[str], unexpected: list[str]) -> str:
    text = " ".join(missing + unexpected)
    hints = []
    if "FFN_3x3" in text and "Attention" in text:
        hints.append("the ELM-Attention flag differs (checkpoint and model disagree on Attention vs FFN_3x3)")
    if ".se." in text or ".scale" in text:
        hints.append("the Info-Recoupling flag differs (se/scale tensors on one side only)")
    if any(k.startswith("feature.") for k in missing + unexpected):
        hints.append("the model size differs (block counts or names)")
    return ("; likely cause: " + "; ".join(hints)) if hints else ""


def load_official(model: nn.Module, source: str | os.PathLike | Mapping, trusted: bool = False,
                  max_listed: int = 20) -> nn.Module:
    """Load an official BNext checkpoint into ``model``, strictly.

    Args:
        model: a model of the BNext family built with the checkpoint's configuration (size, ``num_classes``,
            ``elm_attention``, ``info_recoupling``).
        source: a path to a file written by the official training script, or the dict it holds, or a bare state
            dict; keys may carry ``module.`` prefixes.
        trusted: see :func:`read_checkpoint`.
        max_listed: how many names of each kind the error message lists.

    Returns:
        ``model``, with every tensor loaded. Afterwards it gives the official model's logits (eval mode).

    Raises:
        CheckpointError: unreadable file, or any missing, unexpected or mis-shaped tensor (all named).
    """
    key_map = _key_map(model)
    where = str(source) if isinstance(source, (str, os.PathLike)) else "checkpoint dict"
    raw = read_checkpoint(source, trusted) if isinstance(source, (str, os.PathLike)) else source
    state = _unwrap(raw, where)
    to_ours = {official: ours for ours, official in key_map.items()}
    own = model.state_dict()
    missing = sorted(k for k in to_ours if k not in state)
    unexpected = sorted(k for k in state if k not in to_ours)
    mismatched = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[to_ours[k]].shape)}"
                        for k in to_ours if k in state and state[k].shape != own[to_ours[k]].shape)
    if missing or unexpected or mismatched:
        def listed(title: str, items: list[str]) -> str:
            if not items:
                return ""
            more = f" ... and {len(items) - max_listed} more" if len(items) > max_listed else ""
            return f"\n  {len(items)} {title}: " + ", ".join(items[:max_listed]) + more
        raise CheckpointError(
            f"{where} does not match {type(model).__name__} (official names shown)"
            + listed("missing", missing) + listed("unexpected", unexpected)
            + listed("shape mismatches", mismatched) + _hint(missing, unexpected))
    model.load_state_dict({to_ours[k]: v for k, v in state.items()}, strict=True)
    return model
