"""Knowledge distillation: the official soft-target loss, multi-teacher knowledge complementation, consecutive KD.

``docs/method.md`` §8; official code ``utils/KD_loss.py`` and the training loop of
``train_assistant_group_amp.py``.

* Per teacher: :math:`L_{KD}(t) = -\\sum_c p_{t,c} \\log p_{s,c}` with softmax at temperature 1, no hard-label
  term (:func:`soft_target_ce`).
* Knowledge complementation (:class:`MultiTeacherLoss`): per sample, :math:`\\alpha_{n,\\cdot} =
  \\mathrm{softmax}_k(h_{n,k})` with :math:`h_{n,k}` the student's current (detached) cross-entropy to teacher
  ``k`` — the teacher the student fits worse gets more weight. The official code then multiplies the *batch-mean*
  loss of each teacher by :math:`\\alpha_{n,k}` and averages, so the effective weight is
  :math:`\\bar\\alpha_k = \\mathrm{mean}_n \\alpha_{n,k}` (``granularity="batch"``, the default and the
  official behaviour); ``granularity="instance"`` weights each sample's loss by its own :math:`\\alpha_{n,k}`, as
  the method's description suggests. Both divide by the number of teachers K, as the official code does.
  ``weighting="fixed"`` uses constant weights (official: 0.5 each).
* Consecutive KD (:class:`ConsecutiveKD`): the run is split into equal rounds, one per assistant teacher; round
  ``r`` distils from ``{assistant_r, main}``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Teacher", "StudentLoss", "soft_target_ce", "MultiTeacherLoss", "ConsecutiveKD"]


@dataclass
class Teacher:
    """A trained teacher handed to the engine: the module (frozen and put in eval mode by the engine) and its
    test top-1; where it comes from the run cache or the ledger, its run's digest and the SHA-256 of its weights,
    which a student's ledger record names (:mod:`bnext_lib.ledger`)."""

    model: nn.Module
    test_top1: float
    digest: str | None = None
    weights_sha256: str | None = None


def soft_target_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean"
                   ) -> torch.Tensor:
    """Soft-target cross-entropy ``-sum_c softmax(t)_c * log_softmax(s)_c`` (temperature 1; teacher detached).

    Args:
        student_logits, teacher_logits: ``N x K`` logits.
        reduction: ``"mean"`` over the batch or ``"none"`` (per sample).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    loss = -(F.softmax(teacher_logits.detach().float(), dim=1) * F.log_softmax(student_logits.float(), dim=1)).sum(1)
    return loss.mean() if reduction == "mean" else loss


class MultiTeacherLoss(nn.Module):
    """Distillation loss from K teachers with adaptive ("hard-knowledge aware") or fixed weights.

    Args:
        weighting: ``"adaptive"`` (official) or ``"fixed"``.
        granularity: ``"batch"`` (what the official code computes) or ``"instance"``.
        fixed_weights: weights for ``"fixed"`` (default ``1/K`` each, the official 0.5 for two teachers).
    """

    def __init__(self, weighting: str = "adaptive", granularity: str = "batch",
                 fixed_weights: Sequence[float] | None = None):
        super().__init__()
        if weighting not in ("adaptive", "fixed"):
            raise ValueError(f"weighting must be 'adaptive' or 'fixed', got {weighting!r}")
        if granularity not in ("batch", "instance"):
            raise ValueError(f"granularity must be 'batch' or 'instance', got {granularity!r}")
        self.weighting, self.granularity = weighting, granularity
        self.fixed_weights = None if fixed_weights is None else [float(w) for w in fixed_weights]

    def weights(self, student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor],
                per_sample: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample teacher weights ``N x K`` (detached); ``per_sample``: the ``N x K`` soft-target losses, when
        the caller has them already."""
        n, k = student_logits.shape[0], len(teacher_logits)
        if self.weighting == "fixed":
            w = self.fixed_weights or [1.0 / k] * k
            if len(w) != k:
                raise ValueError(f"{len(w)} fixed weights for {k} teachers")
            return torch.tensor(w, device=student_logits.device).expand(n, k)
        if per_sample is None:
            per_sample = torch.stack([soft_target_ce(student_logits, t, "none") for t in teacher_logits], dim=1)
        return F.softmax(per_sample.detach(), dim=1)

    def forward(self, student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(loss, alpha)`` with ``alpha`` the batch-mean weight of each teacher (``K``)."""
        if not teacher_logits:
            raise ValueError("no teacher logits")
        k = len(teacher_logits)
        per_sample = torch.stack([soft_target_ce(student_logits, t, "none") for t in teacher_logits], dim=1)
        alpha = self.weights(student_logits, teacher_logits, per_sample)
        if self.granularity == "instance":
            loss = (alpha * per_sample).sum(1).mean() / k
        else:
            loss = (alpha.mean(0) * per_sample.mean(0)).sum() / k
        return loss, alpha.mean(0)


class ConsecutiveKD:
    """Which teachers are active in which epoch: assistants in equal consecutive rounds, the main one always.

    ``ConsecutiveKD(["b0", "b2"], "b4", epochs=512)`` uses ``[b0, b4]`` for epochs 0-255 and ``[b2, b4]``
    afterwards (official BNext-M). Without assistants it is single-teacher KD.

    Args:
        assistants: assistant teachers in round order.
        main: the main teacher, active throughout.
        epochs: run length.
    """

    def __init__(self, assistants: Sequence[str], main: str, epochs: int):
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        self.assistants, self.main, self.epochs = list(assistants), main, epochs

    @classmethod
    def from_list(cls, teachers: Sequence[str], epochs: int) -> "ConsecutiveKD":
        """``[assistant_1, ..., assistant_A, main]`` (the main teacher last)."""
        if not teachers:
            raise ValueError("at least one teacher is needed")
        return cls(teachers[:-1], teachers[-1], epochs)

    def round_of(self, epoch: int) -> int:
        if not self.assistants:
            return 0
        return min(len(self.assistants) - 1, math.floor(epoch / (self.epochs / len(self.assistants))))

    def teachers_for(self, epoch: int) -> list[str]:
        if not self.assistants:
            return [self.main]
        return [self.assistants[self.round_of(epoch)], self.main]

    @property
    def all_teachers(self) -> list[str]:
        return [*self.assistants, self.main]


class StudentLoss:
    """The student's loss for one training step (the engine's only loss; timm's distillation task is the model).

    With active teachers: :class:`MultiTeacherLoss` on their logits (soft targets only, no hard-label term, as the
    official code; label smoothing is ignored). Without: cross-entropy, on soft targets for mixup/cutmix batches
    (timm's ``SoftTargetCrossEntropy``), else on labels with ``label_smoothing``.

    Args:
        teachers: ``{name: module}``, frozen and in eval mode.
        weighting, granularity: see :class:`MultiTeacherLoss`.
        label_smoothing: for the cross-entropy on labels.
        teacher_autocast: ``torch.autocast`` arguments for the teachers' forward (``device_type``, ``dtype``,
            ``enabled``).
    """

    def __init__(self, teachers: Mapping[str, nn.Module] | None = None, weighting: str = "adaptive",
                 granularity: str = "batch", label_smoothing: float = 0.0, teacher_autocast: dict | None = None):
        from timm.loss import SoftTargetCrossEntropy

        self.teachers = dict(teachers or {})
        self.kd = MultiTeacherLoss(weighting, granularity)
        self.soft_ce = SoftTargetCrossEntropy()
        self.label_smoothing = label_smoothing
        self.teacher_autocast = teacher_autocast or {"device_type": "cpu", "enabled": False}

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor, active: Sequence[str] = ()
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(loss, alpha)``: ``alpha`` the teachers' weights (``None`` without teachers)."""
        if active:
            with torch.no_grad(), torch.autocast(**self.teacher_autocast):
                t_logits = [self.teachers[t](x).float() for t in active]
            return self.kd(logits, t_logits)
        if target.ndim == 2:  # mixup / cutmix targets
            return self.soft_ce(logits, target), None
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing), None
