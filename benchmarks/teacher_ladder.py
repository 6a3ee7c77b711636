"""Teacher candidates for the report: test top-1 and training cost of full-precision timm teachers trained by the
run cache exactly as the report trains them (:func:`bnext_lib.config.teacher_config`), so that every teacher this
script trains is reused by the report and the other way round.

    .venv/bin/python benchmarks/teacher_ladder.py --models timm:resnet10t timm:resnet18 --epochs 6 10 \\
        --recipe onecycle --pad-to 32 --workers 2
    .venv/bin/python benchmarks/teacher_ladder.py --models timm:mobilenetv3_small_050@6 --pad-to 32 --append

A model named ``<name>@<epochs>`` trains for its own length (as in a profile's teacher list).

Prints per candidate: test top-1 after each epoch, train top-1, wall time and CPU-minutes (wall x threads); writes
``--csv``. Asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student_frontier import cpu_name, write_csv  # noqa: E402

from bnext_lib.config import TEACHER_RECIPES, teacher_config  # noqa: E402
from bnext_lib.profiles import get_profile  # noqa: E402
from bnext_lib.runs import run_many  # noqa: E402
from bnext_lib.train import TrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["timm:mobilenetv3_small_050", "timm:resnet10t", "timm:resnet18"])
    ap.add_argument("--epochs", type=int, nargs="+", default=[6])
    ap.add_argument("--recipe", nargs="+", default=["onecycle"], choices=sorted(TEACHER_RECIPES),
                    help="teacher recipes, each with every model and length")
    ap.add_argument("--pad-to", type=int, default=None, help="the student's padding (teachers see its images)")
    ap.add_argument("--profile", default=None,
                    help="take the student's data, precision and validation split from this profile's training "
                         "settings (e.g. cpu: then every teacher trained here is the report's own)")
    ap.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    ap.add_argument("--subset-seeds", type=int, nargs="+", default=[0],
                    help="the seeds that draw --subset (a student of that subset_seed learns from the same images)")
    ap.add_argument("--val-split", type=int, default=None,
                    help="hold out the student's validation split (5000 in the cpu profile): val_top1 chooses")
    ap.add_argument("--eval-every", type=int, default=1, help="evaluate every N-th epoch and the last (on --subset)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/teacher_ladder.csv"))
    ap.add_argument("--append", action="store_true", help="add the rows to --csv (replacing equal teacher, length "
                                                          "and recipe) instead of overwriting it")
    args = ap.parse_args()
    configs = []
    try:
        for recipe, epochs, seed in ((r, e, s) for r in args.recipe for e in args.epochs for s in args.subset_seeds):
            base = (dict(get_profile(args.profile).train) if args.profile else
                    dict(dataset="fashion_mnist", pad_to=args.pad_to, val_split=args.val_split))
            student = TrainConfig(**{**base, "teacher_epochs": epochs, "teacher_subset": args.subset,
                                     "subset_seed": seed, "eval_every": args.eval_every, "teacher_recipe": recipe,
                                     "compile": True, "threads": args.threads, "teachers": tuple(args.models)})
            student.validate()
            configs += [(recipe, teacher_config(m, student)) for m in args.models]
    except ValueError as e:
        ap.error(str(e))
    runs = run_many([c for _, c in configs], workers=args.workers, threads=args.threads)
    rows = []
    for (recipe, cfg), run in zip(configs, runs):
        h = run.history()
        wall = float(run.result["wall_s"])
        rows.append({"teacher": cfg.model, "epochs": cfg.epochs, "recipe": recipe, "pad_to": cfg.pad_to,
                     "train_images": cfg.train_subset or 60000 - (cfg.val_split or 0),
                     "subset_seed": cfg.subset_seed,
                     "val_top1": float(h["val_top1"].iloc[-1]) if "val_top1" in h else None,
                     "test_top1": float(h["test_top1"].iloc[-1]),
                     "train_top1": float(h["train_top1"].iloc[-1]),
                     "test_top1_per_epoch": " ".join(f"{v:.2f}" for v in h["test_top1"].dropna()),
                     "wall_s": round(wall, 1), "cpu_min": round(wall * args.threads / 60, 2)})
    print(f"machine: {cpu_name()}, CPU-minutes = wall time x threads per run")
    if args.append and Path(args.csv).exists():
        import pandas as pd

        old = pd.read_csv(args.csv).to_dict("records")
        same = ("teacher", "epochs", "recipe", "train_images", "subset_seed")
        key = [tuple(r[k] for k in same) for r in rows]
        rows = [r for r in old if tuple(r.get(k) for k in same) not in key] + rows
    write_csv(rows, Path(args.csv))


if __name__ == "__main__":
    main()
