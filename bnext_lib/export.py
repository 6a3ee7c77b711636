"""1-bit export: binary kernels packed 8 per byte, everything else fp32 (``exact``) or fp16 (``compact``).

The file is a safetensors container. Its metadata holds the format name and version, the model's registry name and
builder arguments, the precision, and a SHA-256 over every tensor; :func:`load_packed` rebuilds the model with
:func:`~bnext_lib.models.create_model`, checks the digest and unpacks.

* Binary kernels (layers whose weight quantizer has ``precision == 1``) are stored as their signs, one bit per
  weight (``np.packbits`` of ``w > 0``), plus the rare exact zeros (``sign(0) = 0`` in the official forward) as a
  list of indices, and, for magnitude-aware binarizers, the per-channel scale.
* ``exact``: every other tensor in float32, so the reloaded model gives bit-identical logits.
* ``compact``: large real-valued matrices (>= 4096 entries: Info-Recoupling 1x1 convolutions, classifier) in
  float16, per-channel vectors (PReLU slopes, shifts) and small kernels (the stem) in float32, every BatchNorm
  folded into one scale and one shift per channel (float32, computed in float64; reloaded as a BatchNorm with
  mean 0 and variance 1 - eps), and parameters the forward never reads (the official model's unused ones, frozen
  here) left out. Format version 2 (version 1 files, without folding, still load).

A model whose progressive binarization has not reached its floor has no 1-bit form and is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .binary import BinaryConv2d, MagnitudeAwareSign, ProgressiveSign

__all__ = ["save_packed", "load_packed", "PackedFileError", "NotBinaryError", "FORMAT", "FORMAT_VERSION"]

FORMAT = "bnext-packed"
FORMAT_VERSION = 2


class PackedFileError(RuntimeError):
    """A packed file that cannot be read: not ours, a newer version, or corrupt."""


class NotBinaryError(ValueError):
    """The model's weights are not binary yet."""


def _binary_layers(model: nn.Module) -> dict[str, BinaryConv2d]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, BinaryConv2d) and getattr(m, "weight_precision", 32) <= 1}


def _batchnorms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats}


def _unit_variance(eps: float) -> float:
    """A float32 ``v`` with ``v + eps == 1`` in float32, so a folded BatchNorm divides by exactly 1."""
    v = torch.tensor(1.0 - eps, dtype=torch.float32)
    one = torch.tensor(1.0, dtype=torch.float32)
    for _ in range(8):
        total = v + torch.tensor(eps, dtype=torch.float32)
        if total == one:
            break
        v = torch.nextafter(v, one if total < one else -one)
    return float(v)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_packed(model: nn.Module, path: str | os.PathLike, format: str = "exact") -> Path:
    """Write ``model`` with 1-bit kernels to ``path`` (atomically).

    Args:
        model: a model built by :func:`~bnext_lib.models.create_model`, fully binarized.
        path: the file to write (``.safetensors`` by convention).
        format: ``"exact"`` (fp32 for non-binary tensors, bit-identical logits) or ``"compact"`` (fp16, unused
            parameters dropped).

    Raises:
        NotBinaryError: a progressive binarizer's temperature has not reached its floor.
        ValueError: unknown format, or a model not built by ``create_model``.
    """
    from safetensors.torch import save_file

    if format not in ("exact", "compact"):
        raise ValueError(f"format must be 'exact' or 'compact', got {format!r}")
    if not hasattr(model, "model_name"):
        raise ValueError("save_packed needs a model built by bnext_lib.models.create_model (it records how to "
                         "rebuild it)")
    layers = _binary_layers(model)
    not_binary = [(n, float(m.weight_quantizer.temperature.item()), m.weight_quantizer.floor)
                  for n, m in layers.items()
                  if isinstance(m.weight_quantizer, ProgressiveSign) and not m.weight_quantizer.is_binary]
    if not_binary:
        name, tau, floor = not_binary[0]
        raise NotBinaryError(
            f"{len(not_binary)} binary layers are not binary yet (e.g. {name}: temperature {tau:.3g} >= floor "
            f"{floor:g}); finish training (the schedule reaches the floor at 30 % of the run) or call "
            "bnext_lib.binary.set_temperature(model, 0.0) if you mean to binarize now")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    tensors: dict[str, torch.Tensor] = {}
    for name, m in layers.items():
        w = m.weight.detach().cpu().float()
        tensors[f"{name}.weight.bits"] = torch.from_numpy(np.packbits((w > 0).numpy().reshape(-1)))
        zeros = torch.nonzero(w.reshape(-1) == 0).flatten()
        if len(zeros):
            tensors[f"{name}.weight.zeros"] = zeros.to(torch.int64)
        if isinstance(m.weight_quantizer, MagnitudeAwareSign):
            scale = w.abs().mean(dim=tuple(range(1, w.dim())))
            tensors[f"{name}.weight.scale"] = scale if format == "exact" else scale.half()
    binary_weights = {f"{n}.weight" for n in layers}
    folded: set[str] = set()
    if format == "compact":
        for name, bn in _batchnorms(model).items():
            folded |= {f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
            if not bn.weight.requires_grad:  # a norm the forward never runs (frozen): nothing to keep
                continue
            std = torch.sqrt(bn.running_var.double() + bn.eps)
            scale = bn.weight.detach().double() / std
            tensors[f"{name}.bn_scale"] = scale.float()
            tensors[f"{name}.bn_shift"] = (bn.bias.detach().double() - bn.running_mean.double() * scale).float()
    for key, value in model.state_dict().items():
        if key in binary_weights or key in folded or (format == "compact" and key in frozen):
            continue
        value = value.detach().cpu()
        # Only large matrices (Info-Recoupling 1x1 convs, classifier) go to fp16. Per-channel vectors and small
        # kernels such as the stem stay fp32: they are ~1 % of the bytes, and every rounding upstream of a sign
        # flips some binary activations (fp16 stem alone: 1.2 % of Fashion-MNIST predictions change).
        if format == "compact" and value.is_floating_point() and value.dim() >= 2 and value.numel() >= 4096:
            value = value.half()
        tensors[key] = value.contiguous().clone()
    metadata = {"format": FORMAT, "version": str(FORMAT_VERSION), "precision": format,
                "model": model.model_name, "kwargs": json.dumps(model.model_kwargs, sort_keys=True),
                "sha256": _digest(tensors)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_packed(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model stored by :func:`save_packed` (eval mode, weights exactly +-1 / 0).

    Raises:
        PackedFileError: missing, unreadable or corrupt file (checksum), or not a bnext packed file.
    """
    from safetensors import safe_open

    from .models import create_model

    path = Path(path)
    if not path.is_file():
        raise PackedFileError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a damaged header or payload
        raise PackedFileError(f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated") from e
    if metadata.get("format") != FORMAT:
        raise PackedFileError(f"{path} is not a bnext packed file (format {metadata.get('format')!r})")
    if int(metadata.get("version", "0")) > FORMAT_VERSION:
        raise PackedFileError(f"{path} has format version {metadata['version']}; this bnext_lib reads "
                              f"{FORMAT_VERSION}: upgrade bnext_lib")
    if _digest(tensors) != metadata.get("sha256"):
        raise PackedFileError(f"{path} is corrupt: its tensors do not match the checksum in its header")
    model = create_model(metadata["model"], **json.loads(metadata["kwargs"]))
    state = model.state_dict()
    for name, m in _binary_layers(model).items():
        shape = m.weight.shape
        n = m.weight.numel()
        bits = np.unpackbits(tensors.pop(f"{name}.weight.bits").numpy())[:n]
        sign = torch.from_numpy(bits.astype(np.float32) * 2 - 1)
        zeros = tensors.pop(f"{name}.weight.zeros", None)
        if zeros is not None:
            sign[zeros] = 0.0
        weight = sign.view(shape)
        scale = tensors.pop(f"{name}.weight.scale", None)
        if scale is not None:  # mean|scale * sign| is the scale again
            weight = weight * scale.float().view(-1, *([1] * (len(shape) - 1)))
        state[f"{name}.weight"] = weight
        if isinstance(m.weight_quantizer, ProgressiveSign):
            state[f"{name}.weight_quantizer.temperature"] = torch.zeros(1)
    for name, bn in _batchnorms(model).items():
        scale, shift = tensors.pop(f"{name}.bn_scale", None), tensors.pop(f"{name}.bn_shift", None)
        if scale is None:
            continue
        state[f"{name}.weight"], state[f"{name}.bias"] = scale.float(), shift.float()
        state[f"{name}.running_mean"] = torch.zeros_like(scale, dtype=torch.float32)
        state[f"{name}.running_var"] = torch.full_like(scale, _unit_variance(bn.eps), dtype=torch.float32)
        state[f"{name}.num_batches_tracked"] = torch.zeros((), dtype=torch.int64)
    for key, value in tensors.items():
        if key not in state:
            raise PackedFileError(f"{path} holds {key!r}, which {metadata['model']} does not have")
        state[key] = value.to(state[key].dtype)
    model.load_state_dict(state, strict=True)
    return model.eval()
