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
  here) left out.

The tensors are not stored one by one: a model of this project is rebuilt from its registry name, so the loader
knows every name and shape, and the file holds a few flat blobs (``u8`` sign bits, ``f32``, ``f16``, ``i64``) in
the model's state-dict order plus a digest of that layout. A per-tensor safetensors header would cost ~45 KB for
BNext-T (0.5 % of the compact file). Format version 3; files of versions 1 (BatchNorm unfolded) and 2 (one tensor
per name) still load.

A model whose progressive binarization has not reached its floor has no 1-bit form and is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .binary import BinaryConv2d
from .checkpoints import atomic_write
from .models import create_model

__all__ = ["save_packed", "load_packed", "PackedFileError", "NotBinaryError", "FORMAT", "FORMAT_VERSION"]

FORMAT = "bnext-packed"
FORMAT_VERSION = 3
_BLOB_DTYPES = {"u8": torch.uint8, "f32": torch.float32, "f16": torch.float16, "i64": torch.int64}


class PackedFileError(RuntimeError):
    """A packed file that cannot be read: not ours, a newer version, or corrupt."""


class NotBinaryError(ValueError):
    """The model's weights are not binary yet."""


def _binary_layers(model: nn.Module) -> dict[str, BinaryConv2d]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, BinaryConv2d) and m.weight_precision <= 1}


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


def _storage_dtype(value: torch.Tensor, format: str) -> torch.dtype:
    # Only large matrices (Info-Recoupling 1x1 convs, classifier) go to fp16. Per-channel vectors and small
    # kernels such as the stem stay fp32: they are ~1 % of the bytes, and every rounding upstream of a sign
    # flips some binary activations (fp16 stem alone: 1.2 % of Fashion-MNIST predictions change).
    if not value.is_floating_point():
        return torch.int64
    if format == "compact" and value.dim() >= 2 and value.numel() >= 4096:
        return torch.float16
    return torch.float32


def _layout(model: nn.Module, format: str) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """Every stored tensor as ``(name, storage dtype, shape)``, in file order; save and load both derive it from
    the model, so the file needs no per-tensor header."""
    layers = _binary_layers(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    scale_dtype = torch.float32 if format == "exact" else torch.float16
    out = []
    for name, m in layers.items():
        out.append((f"{name}.weight.bits", torch.uint8, ((m.weight.numel() + 7) // 8,)))
        if m.weight_quantizer.scaled:
            out.append((f"{name}.weight.scale", scale_dtype, (m.weight.shape[0],)))
    skip = {f"{n}.weight" for n in layers}
    if format == "compact":
        for name, bn in _batchnorms(model).items():
            skip |= {f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
            if bn.weight.requires_grad:  # a frozen norm is one the forward never runs: nothing to keep
                out += [(f"{name}.bn_scale", torch.float32, tuple(bn.weight.shape)),
                        (f"{name}.bn_shift", torch.float32, tuple(bn.weight.shape))]
        skip |= frozen
    for key, value in model.state_dict().items():
        if key not in skip:
            out.append((key, _storage_dtype(value, format), tuple(value.shape)))
    return out


def _layout_digest(layout) -> str:
    return hashlib.sha256(json.dumps([(n, str(d), s) for n, d, s in layout]).encode()).hexdigest()[:16]


def _blob_name(dtype: torch.dtype) -> str:
    return next(k for k, v in _BLOB_DTYPES.items() if v == dtype)


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
    from safetensors.torch import save

    if format not in ("exact", "compact"):
        raise ValueError(f"format must be 'exact' or 'compact', got {format!r}")
    if not hasattr(model, "model_name"):
        raise ValueError("save_packed needs a model built by bnext_lib.models.create_model (it records how to "
                         "rebuild it)")
    layers = _binary_layers(model)
    not_binary = [(n, m.weight_quantizer) for n, m in layers.items() if not m.weight_quantizer.is_binary]
    if not_binary:
        name, q = not_binary[0]
        state = ", ".join(f"{k} {float(v.flatten()[0]):.3g}" for k, v in q.named_buffers()) or q.extra_repr()
        raise NotBinaryError(
            f"{len(not_binary)} binary layers are not binary yet (e.g. {name}: {type(q).__name__} with {state}); "
            "finish training (the schedule reaches the floor at 30 % of the run) or call "
            "bnext_lib.binary.set_temperature(model, 0.0) if you mean to binarize now")
    values: dict[str, torch.Tensor] = {}
    zeros: dict[str, int] = {}
    zero_index = []
    for name, m in layers.items():
        w = m.weight.detach().cpu().float()
        values[f"{name}.weight.bits"] = torch.from_numpy(np.packbits((w > 0).numpy().reshape(-1)))
        idx = torch.nonzero(w.reshape(-1) == 0).flatten()
        if len(idx):  # sign(0) = 0: the rare exact zeros are listed
            zeros[name] = len(idx)
            zero_index.append(idx)
        if m.weight_quantizer.scaled:
            values[f"{name}.weight.scale"] = m.weight_quantizer.scale(w)
    if format == "compact":
        for name, bn in _batchnorms(model).items():
            std = torch.sqrt(bn.running_var.double() + bn.eps)
            scale = bn.weight.detach().double() / std
            values[f"{name}.bn_scale"] = scale.float()
            values[f"{name}.bn_shift"] = (bn.bias.detach().double() - bn.running_mean.double() * scale).float()
    state = model.state_dict()
    layout = _layout(model, format)
    parts: dict[str, list[torch.Tensor]] = {}
    for key, dtype, _ in layout:
        value = values[key] if key in values else state[key]
        parts.setdefault(_blob_name(dtype), []).append(value.detach().cpu().reshape(-1).to(dtype))
    blobs = {k: torch.cat(v) for k, v in parts.items()}
    if zero_index:
        blobs["zeros"] = torch.cat(zero_index).to(torch.int64)
    metadata = {"format": FORMAT, "version": str(FORMAT_VERSION), "precision": format,
                "model": model.model_name, "kwargs": json.dumps(model.model_kwargs, sort_keys=True),
                "layout": _layout_digest(layout), "zeros": json.dumps(zeros), "sha256": _digest(blobs)}
    return atomic_write(path, lambda f: f.write(save(blobs, metadata=metadata)))


def _unflatten(path: Path, model: nn.Module, metadata: dict, blobs: dict[str, torch.Tensor]) -> dict:
    """Version-3 blobs -> ``{name: tensor}`` as versions 1-2 stored them."""
    layout = _layout(model, metadata.get("precision", "exact"))
    if _layout_digest(layout) != metadata.get("layout"):
        raise PackedFileError(f"{path} was written for a {metadata['model']} with other tensors than this "
                              "bnext_lib builds (layout digest differs); load it with the version that wrote it")
    offsets = dict.fromkeys(blobs, 0)
    tensors = {}
    for key, dtype, shape in layout:
        blob = _blob_name(dtype)
        n = int(np.prod(shape)) if shape else 1
        start = offsets[blob]
        tensors[key] = blobs[blob][start:start + n].reshape(shape)
        offsets[blob] = start + n
    if any(offsets[k] != len(blobs[k]) for k in offsets if k != "zeros"):
        raise PackedFileError(f"{path}: its blobs do not match {metadata['model']}'s layout")
    start = 0
    for name, count in json.loads(metadata.get("zeros", "{}")).items():
        tensors[f"{name}.weight.zeros"] = blobs["zeros"][start:start + count]
        start += count
    return tensors


def load_packed(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model stored by :func:`save_packed` (eval mode, weights exactly +-1 / 0).

    Raises:
        PackedFileError: missing, unreadable or corrupt file (checksum), or not a bnext packed file.
    """
    from safetensors import safe_open

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
    if int(metadata["version"]) >= 3:
        tensors = _unflatten(path, model, metadata, tensors)
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
        for k, v in m.weight_quantizer.binary_state().items():
            state[f"{name}.weight_quantizer.{k}"] = v
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
