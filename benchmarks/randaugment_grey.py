"""Which of RandAugment's operations change a grey image? The released policy (timm ``rand-m7-mstd0.5-inc1``) was
made for colour ImageNet images; some of its operations (colour saturation) can do nothing to a one-channel image,
and a RandAugment arm that spends its draws on them is a weaker regulariser than it says.

    .venv/bin/python benchmarks/randaugment_grey.py --images 1000

Each operation of the policy's increasing list, alone and always applied (probability 1, the policy's magnitude
and its magnitude noise), on ``--images`` Fashion-MNIST training images as the loader hands them to RandAugment
(``L`` mode, 28x28, the fill the engine uses): the share of images it changes at all and the mean absolute pixel
change (0-255). ``changes_grey`` marks an operation whose mean change reaches ``--min-change`` grey levels (AutoContrast
moves a few pixels of one image in ten: Fashion-MNIST images already span the range);
:data:`bnext_lib.augment.GREY_OPS` must list exactly those (``tests/test_augment.py`` holds it to this table).
Writes ``--csv`` (default ``reports/tables/randaugment_grey_ops.csv``). Asserts nothing.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnext_lib.data import load_dataset  # noqa: E402

POLICY = "rand-m7-mstd0.5-inc1"


def measure(images: np.ndarray, fill: int, min_change: float, seed: int = 0) -> pd.DataFrame:
    """One row per operation of the policy: share of ``images`` (N x H x W, uint8) changed, mean |Δ| pixel."""
    from PIL import Image
    from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS, rand_augment_ops

    size = images.shape[-1]
    hparams = {"translate_const": int(size * 0.45), "img_mean": (fill,), "magnitude_std": 0.5}
    rows = []
    for name in _RAND_INCREASING_TRANSFORMS:
        [op] = rand_augment_ops(magnitude=7, prob=1.0, hparams=dict(hparams), transforms=[name])
        random.seed(seed)  # timm draws the magnitude noise and the sign from Python's generator
        changed, delta = 0, 0.0
        for img in images:
            out = np.asarray(op(Image.fromarray(img, mode="L")), dtype=np.int16)
            d = np.abs(out - img.astype(np.int16))
            changed += bool(d.any())
            delta += float(d.mean())
        share = changed / len(images)
        rows.append(dict(op=name, share_changed=share, mean_abs_change=delta / len(images),
                         changes_grey=delta / len(images) >= min_change))
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--min-change", type=float, default=1.0, help="an operation whose mean absolute pixel change "
                                                                   "stays below this (grey levels) does nothing")
    ap.add_argument("--csv", default=str(ROOT / "reports" / "tables" / "randaugment_grey_ops.csv"))
    args = ap.parse_args()
    data = load_dataset("fashion_mnist", "train").subset(args.images, seed=0)
    images = data.images[:, 0].numpy()
    fill = min(255, round(255 * data.mean[0]))  # the engine's fill (Augmenter._ra_fill)
    table = measure(images, fill, args.min_change)
    print(f"RandAugment {POLICY}, each operation alone at probability 1, {len(images)} Fashion-MNIST images:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("operations that change a grey image: " + ", ".join(table.op[table.changes_grey]))
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False, float_format="%.4f")
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
