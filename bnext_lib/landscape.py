"""Loss landscapes: 2-D slices along filter-normalized random directions (Li et al., NeurIPS 2018).

The paper motivates BNext's block design with smoother loss landscapes than earlier binary blocks
(``docs/method.md`` §12). A slice is :math:`L(\\theta + a\\,d_1 + b\\,d_2)` on a grid of ``(a, b)`` for two random
directions whose every filter (output channel of a kernel, row of a linear layer) is rescaled to the norm of the
same filter of :math:`\\theta`. One-dimensional parameters (biases, BatchNorm, learnable biases, Info-Recoupling
gates) are not perturbed, as in Li et al.; BatchNorm runs on its running statistics (eval mode). For binary
layers the latent weights are perturbed: what moves the loss is which signs flip.

Roughness is the mean absolute discrete Laplacian of the loss over the grid's interior (in loss units per grid
step squared): 0 for a plane, large for a surface that wrinkles between neighbouring points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from .augment import Augmenter
from .train import training_images

__all__ = ["Landscape", "filter_normalized_direction", "loss_landscape", "roughness", "run_landscape", "landscape_key",
           "landscape_table"]


@dataclass
class Landscape:
    """A 2-D loss slice: ``loss[i, j]`` at ``(alphas[i], betas[j])``; ``top1`` likewise (in %)."""

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    top1: np.ndarray

    @property
    def centre_loss(self) -> float:
        return float(self.loss[len(self.alphas) // 2, len(self.betas) // 2])

    @property
    def roughness(self) -> float:
        return roughness(self.loss)

    @property
    def rise(self) -> float:
        """Mean loss over the slice minus the loss at the trained point."""
        return float(self.loss.mean() - self.centre_loss)

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("alphas", "betas", "loss", "top1")}

    @classmethod
    def from_dict(cls, d: dict) -> "Landscape":
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """A Gaussian direction per parameter, each filter rescaled to the parameter's filter norm; zero for
    parameters with fewer than two dimensions and for frozen ones."""
    out = []
    for p in model.parameters():
        if p.ndim < 2 or not p.requires_grad:
            out.append(torch.zeros_like(p))
            continue
        # drawn on the CPU, so that the directions are the same whatever device the model is on
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        dims = tuple(range(1, p.ndim))
        d *= (torch.linalg.vector_norm(p.detach(), dim=dims, keepdim=True)
              / torch.linalg.vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-12))
        out.append(d)
    return out


def roughness(loss: np.ndarray) -> float:
    """Mean absolute discrete Laplacian over the interior of a 2-D grid."""
    z = np.asarray(loss, dtype=np.float64)
    if min(z.shape) < 3:
        raise ValueError(f"roughness needs a grid of at least 3x3, got {z.shape}")
    lap = z[2:, 1:-1] + z[:-2, 1:-1] + z[1:-1, 2:] + z[1:-1, :-2] - 4 * z[1:-1, 1:-1]
    return float(np.abs(lap).mean())


@torch.no_grad()
def loss_landscape(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 9,
                   span: float = 1.0, seed: int = 0, batch_size: int = 512) -> Landscape:
    """Evaluate the loss on a ``steps x steps`` grid over ``[-span, span]^2``.

    Args:
        model: a trained model (its parameters are restored afterwards).
        images, labels: a fixed evaluation batch (already normalized).
        steps: grid points per axis (odd, so that the trained point is on the grid).
        span: half-width of the grid in units of the filter-normalized directions.
        seed: seed of the two directions.
    """
    if steps < 3 or steps % 2 == 0:
        raise ValueError(f"steps must be odd and >= 3 (the centre must be on the grid), got {steps}")
    if span <= 0:
        raise ValueError(f"span must be positive, got {span}")
    g = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    origin = [p.detach().clone() for p in params]
    d1 = filter_normalized_direction(model, g)
    d2 = filter_normalized_direction(model, g)
    alphas = np.linspace(-span, span, steps)
    loss = np.zeros((steps, steps))
    top1 = np.zeros((steps, steps))
    was_training = model.training
    model.eval()
    try:
        for i, a in enumerate(alphas):
            for j, b in enumerate(alphas):
                for p, o, u, v in zip(params, origin, d1, d2):
                    p.copy_(o + float(a) * u + float(b) * v)
                total = correct = 0.0
                for k in range(0, len(images), batch_size):
                    logits = model(images[k:k + batch_size]).float()
                    y = labels[k:k + batch_size]
                    total += F.cross_entropy(logits, y, reduction="sum").item()
                    correct += (logits.argmax(1) == y).sum().item()
                loss[i, j] = total / len(images)
                top1[i, j] = 100 * correct / len(images)
    finally:
        for p, o in zip(params, origin):
            p.copy_(o)
        model.train(was_training)
    return Landscape(alphas, alphas.copy(), loss, top1)


def landscape_key(steps: int, span: float, images: int, seed: int) -> str:
    """The name a run's slice is kept under in its ledger record's ``derived`` values."""
    return f"landscape_s{steps}_w{span:g}_n{images}_seed{seed}"


def run_landscape(cfg, model: nn.Module, steps: int, span: float, images: int, seed: int) -> Landscape:
    """The loss landscape of a trained run of ``cfg`` on the first ``images`` of its own training images (a fixed,
    class-balanced batch), as it saw them: what :mod:`bnext_lib.runs` computes when the run finishes and keeps in
    its ledger record (:func:`landscape_key`), so that the report never needs the run's weights again."""
    data = training_images(cfg)[0]
    batch = data.subset(min(images, len(data)))  # the stratified subset of the training subset
    device = next(model.parameters()).device
    x = Augmenter("none", data.mean, data.std, data.num_classes).eval_batch(batch.images.to(device))
    return loss_landscape(model, x, batch.labels.to(device), steps=steps, span=span, seed=seed)


def landscape_table(slices: dict):
    """``{(label, seed): Landscape or [Landscape per direction seed]}`` -> a table of centre loss, mean rise over
    the slice and roughness per run, each the mean over the run's direction seeds, with the roughness's spread
    between them (``roughness_sd``, NaN with one direction) and their number: the roughness a comparison of models
    reads is the run's mean, and its seed-to-seed spread carries what one pair of directions adds."""
    import numpy as np
    import pandas as pd

    rows = []
    for (label, seed), s in slices.items():
        many = list(s) if isinstance(s, (list, tuple)) else [s]
        rough = np.array([x.roughness for x in many])
        rows.append({"label": label, "seed": seed, "directions": len(many),
                     "centre_loss": float(np.mean([x.centre_loss for x in many])),
                     "rise": float(np.mean([x.rise for x in many])), "roughness": float(rough.mean()),
                     "roughness_sd": float(rough.std(ddof=1)) if len(many) > 1 else float("nan"),
                     "centre_top1": float(many[0].top1[len(many[0].alphas) // 2, len(many[0].betas) // 2])})
    return pd.DataFrame(rows)