"""Cost accounting: parameters (binary / real), BOPs, FLOPs, OPs, binarization degree and packed size.

One forward pass at batch 1 runs under torch's own FLOP counter (``torch.utils.flop_counter.FlopCounterMode``);
module hooks attribute each counted operation to the innermost module that ran it. A module's multiply-accumulates
(MACs = counted FLOPs / 2) are *binary* when its quantizers say so (``input_precision == weight_precision == 1``,
read from the layer, larq-style), *real* otherwise. Nothing here lists layer formulas per architecture.

Conventions (BNext README, ``docs/method.md`` §6):

* BOPs = binary MACs; FLOPs = real-valued MACs (stem, Info-Recoupling 1x1 convs, shortcut projections,
  classifier). BN, PReLU, pooling and element-wise operations are not counted, as in the papers.
* ``ops`` = BOPs/64 + FLOPs/8: the README's "OPs", which counts non-binary layers as 8-bit;
  ``ops_fp32`` = BOPs/64 + FLOPs: the Bi-Real / ReActNet convention.
* ``binarization_degree`` = (BOPs/64) / ``ops``.
* ``packed_bytes`` = 1 bit per binary weight + 32 bits per other parameter (buffers such as BN statistics are
  not counted; they fold into the next layer at deployment).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .binary import BinaryConv2d
from .models import create_model, model_info

__all__ = ["CostProfile", "profile", "cost_table", "binary_weight_params"]


@dataclass
class CostProfile:
    """The cost record of one model at one input size (counts are plain numbers, not G/M)."""

    input_size: tuple[int, ...]
    bops: float
    flops: float
    params_binary: int
    params_real: int
    layers: list[dict] = field(default_factory=list, repr=False)
    unknown: list[str] = field(default_factory=list)

    @property
    def ops(self) -> float:
        return self.bops / 64 + self.flops / 8

    @property
    def ops_fp32(self) -> float:
        return self.bops / 64 + self.flops

    @property
    def binarization_degree(self) -> float:
        return (self.bops / 64) / self.ops if self.ops else 0.0

    @property
    def params(self) -> int:
        return self.params_binary + self.params_real

    @property
    def packed_bytes(self) -> int:
        return math.ceil(self.params_binary / 8) + 4 * self.params_real

    @property
    def float32_bytes(self) -> int:
        return 4 * self.params

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "layers"}
        d.update(ops=self.ops, ops_fp32=self.ops_fp32, binarization_degree=self.binarization_degree,
                 params=self.params, packed_bytes=self.packed_bytes, float32_bytes=self.float32_bytes)
        return d


def _is_binary(module: nn.Module) -> bool:
    return getattr(module, "input_precision", 32) <= 1 and getattr(module, "weight_precision", 32) <= 1


def binary_weight_params(model: nn.Module) -> int:
    """Number of weights that are binary at inference (kernels of binary layers)."""
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, BinaryConv2d) and m.weight_precision <= 1)


@torch.no_grad()
def profile(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> CostProfile:
    """Count the cost of one forward pass of ``model`` on an input of ``input_size``.

    Args:
        model: any module; binary layers are recognised by their quantizers' ``precision``.
        input_size: the input shape, batch included; counts are per batch (use batch 1 for per-image figures).

    Returns:
        A :class:`CostProfile` with ``bops``, ``flops``, ``ops``, ``ops_fp32``, ``binarization_degree``,
        ``params_binary``, ``params_real``, ``packed_bytes``; ``layers`` lists each counted module, and
        ``unknown`` names modules whose counted operations are neither in a convolution nor a linear layer
        (counted as real FLOPs).
    """
    counter = FlopCounterMode(display=False)
    names = {m: n for n, m in model.named_modules()}
    stack: list[list] = []  # [module, flops at entry, flops of children]
    exclusive: dict[nn.Module, float] = {}

    def pre(module, _):
        stack.append([module, counter.get_total_flops(), 0.0])

    def post(module, _, __):
        mod, start, children = stack.pop()
        total = counter.get_total_flops() - start
        exclusive[mod] = exclusive.get(mod, 0.0) + total - children
        if stack:
            stack[-1][2] += total

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles += [m.register_forward_hook(post) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        x = torch.randn(*input_size, device=param.device if param is not None else "cpu")
        with counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    bops = flops = 0.0
    layers, unknown = [], []
    for module, f in exclusive.items():
        if f <= 0:
            continue
        macs = f / 2
        binary = _is_binary(module)
        if binary:
            bops += macs
        else:
            flops += macs
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                unknown.append(names.get(module, type(module).__name__) or type(module).__name__)
        layers.append({"name": names.get(module, ""), "type": type(module).__name__, "macs": macs,
                       "binary": binary})
    params_binary = binary_weight_params(model)
    params_real = sum(p.numel() for p in model.parameters()) - params_binary
    return CostProfile(tuple(input_size), bops, flops, params_binary, params_real, layers, unknown)


def cost_table(models: Iterable[str] | Mapping[str, nn.Module], input_size: Sequence[int] = (1, 3, 224, 224),
               num_classes: int = 1000, **model_kwargs):
    """A pandas table of :func:`profile` for several models, with the published figures beside ours.

    Args:
        models: registered model names, or ``{label: module}``.
        input_size: input shape at batch 1.
        num_classes: classifier size for models built from names.
        **model_kwargs: passed to :func:`~bnext_lib.models.create_model` for models built from names
            (``in_chans`` defaults to ``input_size[1]``).

    Returns:
        ``pandas.DataFrame`` indexed by model, with params (M), binary/real params (M), BOPs (G), FLOPs (M),
        OPs (G), OPs fp32 (G), degree (%), packed and float32 size (MB), and, for registered models, the
        README's OPs and degree and the published ImageNet top-1.
    """
    import pandas as pd

    model_kwargs.setdefault("in_chans", input_size[1])
    rows = []
    items = models.items() if isinstance(models, Mapping) else ((n, None) for n in models)
    for label, module in items:
        info = None
        if module is None:
            info = model_info(label)
            module = create_model(label, num_classes=num_classes, **model_kwargs)
        p = profile(module, input_size)
        rows.append({
            "model": label,
            "params_M": p.params / 1e6,
            "binary_params_M": p.params_binary / 1e6,
            "real_params_M": p.params_real / 1e6,
            "BOPs_G": p.bops / 1e9,
            "FLOPs_M": p.flops / 1e6,
            "OPs_G": p.ops / 1e9,
            "OPs_fp32_G": p.ops_fp32 / 1e9,
            "degree_pct": 100 * p.binarization_degree,
            "degree_fp32_pct": 100 * p.bops / 64 / p.ops_fp32,
            "packed_MB": p.packed_bytes / 1e6,
            "float32_MB": p.float32_bytes / 1e6,
            "readme_OPs_G": info.readme_ops if info else None,
            "readme_degree_pct": info.readme_degree if info else None,
            "published_top1": info.top1 if info else None,
        })
        del module
    return pd.DataFrame(rows).set_index("model")


def main(argv: Sequence[str] | None = None) -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(prog="python -m bnext_lib.complexity",
                                 description="Print the cost table (params, BOPs, FLOPs, OPs, degree, size).")
    ap.add_argument("models", nargs="*", default=["bnext_tiny", "bnext_small", "bnext_middle", "bnext_large"])
    ap.add_argument("--input-size", type=int, default=224, help="square input side (default 224)")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--stem-stride", type=int, default=None, help="override the builders' stem stride")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    table = cost_table(args.models, (1, 3, args.input_size, args.input_size), args.num_classes,
                       stem_stride=args.stem_stride)
    if table["readme_OPs_G"].notna().any():
        table["OPs_vs_readme_pct"] = 100 * (table["OPs_G"] / table["readme_OPs_G"] - 1)
        table["degree_vs_readme_pt"] = table["degree_pct"] - table["readme_degree_pct"]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(table)


if __name__ == "__main__":
    main()
