"""Where does the CE student over-fit? The train-minus-test gap of a frontier candidate trained on class-stratified
training subsets, measured every epoch with the training subset evaluated in eval mode without augmentation
(``TrainConfig.eval_train``), against the full 10k test set.

    .venv/bin/python benchmarks/overfitting_regime.py --subsets 1000 2000 --epochs 12
    .venv/bin/python benchmarks/overfitting_regime.py --subsets 1000 2000 1000:basic   # and crop + flip on 1000

The overfitting, distillation and augmentation studies need a regime where the CE student's gap is >= 3 points
(the counter-intuitive overfitting claim, and the claims that KD and augmentation fight it, cannot show otherwise).
Runs go through the run cache (reused by the report when the configuration matches). Prints the per-epoch gap
per subset and writes ``--csv`` and the figure ``--figure``. Asserts nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student_frontier import candidate_config, cpu_name, save_figure, write_csv  # noqa: E402

from bnext_lib.profiles import rescaled_warmup  # noqa: E402
from bnext_lib.runs import run_many  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", default="micro-s1-onecycle-flip-pad32",
                    help="a student_frontier.py candidate (its recipe)")
    ap.add_argument("--subsets", nargs="+", default=["1000", "2000"],
                    help="training subset sizes, N or N:PRESET for another augmentation than --augment's")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--augment", nargs="+", default=[None],
                    help="augmentation presets, each with every subset (default: the candidate's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/overfitting_regime.csv"))
    ap.add_argument("--figure", default=str(ROOT / "reports/figures/00_overfitting_regime.png"))
    args = ap.parse_args()
    try:
        base = candidate_config(args.candidate, args.seed, args.threads)
        configs = []
        pairs = [(n.split(":")[0], n.split(":")[1] if ":" in n else a) for a in args.augment for n in args.subsets]
        for n, augment in dict.fromkeys(pairs):
            if not n.isdigit():
                raise ValueError(f"a subset is N or N:PRESET, got {n!r}")
            c = dataclasses.replace(base, train_subset=int(n), epochs=args.epochs, eval_train=True,
                                    augment=augment or base.augment,
                                    warmup_epochs=rescaled_warmup(base.warmup_epochs, base.epochs, args.epochs))
            c.validate()
            configs.append(c)
    except ValueError as e:
        ap.error(str(e))
    runs = run_many(configs, workers=args.workers, threads=args.threads)
    rows = []
    for cfg, run in zip(configs, runs):
        for _, r in run.history().iterrows():
            rows.append({"candidate": args.candidate, "augment": cfg.augment, "train_subset": cfg.train_subset,
                         "epoch": int(r["epoch"]),
                         "train_eval_top1": r["train_eval_top1"], "test_top1": r["test_top1"],
                         "gap": r["train_eval_top1"] - r["test_top1"], "train_top1_augmented": r["train_top1"],
                         "wall_s": round(float(r["wall_s"]), 1)})
    print(f"machine: {cpu_name()}")
    df = write_csv(rows, Path(args.csv))
    _figure(df, Path(args.figure))


def _figure(df, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (n, augment), g in df.groupby(["train_subset", "augment"]):
        ax.plot(g["epoch"], g["gap"], marker="o", ms=3, label=f"{n} training images, {augment}")
    ax.axhline(3.0, ls="--", lw=0.8, color="grey")
    ax.set(xlabel="epoch", ylabel="train (eval mode) - test top-1 (points)",
           title=f"Over-fitting regime of the CE student ({df['candidate'].iloc[0]})")
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
