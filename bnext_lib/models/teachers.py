"""Full-precision teachers: timm architectures trained on the study's own data, and the recipes that train them.

The paper distils from ImageNet-pretrained EfficientNet-B0/B2/B4 and ConvNeXt-T (``docs/method.md`` §8.3).
Pretrained weights cannot be fetched here and would not fit a 28x28 dataset anyway, so teachers of clearly
different strength are trained on the same data by this project's engine. A teacher is an ordinary run of the
run cache (:func:`bnext_lib.runs.teacher_config`, :func:`bnext_lib.runs.load_teachers`): trained once, always
with seed 0 (every student of a study distils from the same teachers), on the student's images (same subset
rule, same padding), and reused by every later run.

This module only names the recipes; it imports nothing from the engine.
"""
from __future__ import annotations

from ..profiles import ONE_CYCLE

__all__ = ["TEACHER_RECIPES", "split_teacher"]

# TrainConfig fields of each teacher recipe (``warmup_fraction`` is turned into ``warmup_epochs`` per run length).
TEACHER_RECIPES: dict[str, dict] = {
    # the first reports' recipe: AdamW 1e-3, weight decay 0.05 on every parameter, cosine, crop and flip
    "adamw-cosine": dict(batch_size=128, lr=1e-3, wd_conv=0.05, wd_other=0.05, augment="basic"),
    # one-cycle: linear warm-up over 30 % of the run from lr/25 to 2e-3, then cosine to 1e-6 at the end of the run
    # (see benchmarks/teacher_ladder.py for what it reaches)
    "onecycle": dict(ONE_CYCLE, batch_size=128, wd_conv=0.05, wd_other=0.05, augment="basic"),
    # the same warm-up followed by timm's open cosine (lasting the run's length after the warm-up, so never reaching
    # its end): what "onecycle" was before annealing to the end was added; kept so that its teachers stay comparable
    "warmcos": dict(ONE_CYCLE, anneal_to_end=False, batch_size=128, wd_conv=0.05, wd_other=0.05, augment="basic"),
}


def split_teacher(name: str) -> tuple[str, int | None]:
    """``"timm:resnet10t@16"`` -> ``("timm:resnet10t", 16)``: a teacher name may fix its own training length
    (a weak teacher needs fewer epochs than the strong one); without ``@`` the student's ``teacher_epochs`` apply.

    Raises:
        ValueError: on a length that is not a positive integer.
    """
    model, sep, epochs = name.partition("@")
    if not sep:
        return name, None
    if not epochs.isdigit() or int(epochs) < 1:
        raise ValueError(f"teacher {name!r}: the length after '@' must be a positive number of epochs")
    return model, int(epochs)
