"""Where does the CE student over-fit? The cpu profile's student and recipe (:data:`bnext_lib.profiles.SHORT_RUN`)
trained on class-stratified training subsets for many epochs, its training subset evaluated in eval mode without
augmentation (``TrainConfig.eval_train``) and the fixed validation split (5,000 training images never trained on)
evaluated every ``--eval-every`` epochs; the test set is evaluated too but chooses nothing.

    .venv/bin/python benchmarks/overfitting_regime.py --regimes 2000x24 2000x40 --seeds 10 11

A regime lets the over-fitting, distillation and augmentation claims show when the CE student has fitted its
training images and stopped generalising better: train top-1 (eval mode) >= 97 %, train-minus-validation gap
>= 8 points, >= 1,000 optimizer steps, and validation top-1 flat or falling over the last quarter of the run
(:func:`bnext_lib.record.last_quarter_rise`: the least-squares line's rise across that quarter). Runs go
through the run cache. Prints per regime and seed what each check measured and writes ``--csv`` (every evaluated
epoch) and the figure ``--figure`` (the curves). Asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student_frontier import cpu_name, save_figure, train_named, write_csv  # noqa: E402

from bnext_lib.config import TrainConfig  # noqa: E402
from bnext_lib.profiles import SHORT_RUN, THRESHOLDS, one_cycle  # noqa: E402
from bnext_lib.record import last_quarter_rise  # noqa: E402


def regime_config(regime: str, seed: int, eval_every: int, threads: int = 1) -> TrainConfig:
    """``NxE`` (N training images, E epochs; ``NxE:PRESET`` for another augmentation) on the cpu recipe."""
    size, _, preset = regime.partition(":")
    n, _, epochs = size.partition("x")
    if not (n.isdigit() and epochs.isdigit()):
        raise ValueError(f"a regime is NxE or NxE:PRESET (e.g. 2000x24), got {regime!r}")
    # the subset drawn with the run's seed (as the report draws it); the test set only at the end (it chooses
    # nothing here)
    values = dict(SHORT_RUN, **one_cycle(int(epochs)), epochs=int(epochs), train_subset=int(n), eval_train=True,
                  eval_every=eval_every, test_every=int(epochs), subset_seed=seed, compile=True, seed=seed,
                  threads=threads, progress=False)
    values.update(lr=SHORT_RUN["lr"], warmup_lr=SHORT_RUN["warmup_lr"])  # the recipe's lr, not ONE_CYCLE's
    if preset:
        values["augment"] = preset
    return TrainConfig(**values)


def measure(regime: str, cfg: TrainConfig, run) -> tuple[list[dict], dict]:
    """Every evaluated epoch as a row, and the regime's checks for this run."""
    h = run.history().dropna(subset=["val_top1"])
    final = run.final
    rows = [{"regime": regime, "seed": cfg.seed, "epoch": int(r.epoch), "train_eval_top1": r.train_eval_top1,
             "val_top1": r.val_top1, "test_top1": r.test_top1, "train_top1_augmented": r.train_top1,
             "val_gap": r.train_eval_top1 - r.val_top1, "wall_s": round(float(r.wall_s), 1)}
            for r in h.itertuples()]
    last = h.iloc[-1]
    steps = cfg.epochs * (cfg.train_subset // cfg.batch_size)
    check = {"regime": regime, "seed": cfg.seed, "steps": steps, "train_eval_top1": last.train_eval_top1,
             "val_top1": last.val_top1, "val_gap": last.train_eval_top1 - last.val_top1,
             "val_rise_last_quarter": last_quarter_rise(h["epoch"], h["val_top1"], cfg.epochs),
             "test_top1": final["test_top1"], "cpu_s": float(last.wall_s) * cfg.threads}
    return rows, check


def _figure(df, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (regime, g) in enumerate(df.groupby("regime", sort=False)):
        for j, (seed, s) in enumerate(g.groupby("seed")):
            kw = dict(color=f"C{i}", lw=1.2, label=regime if j == 0 else None)
            axes[0].plot(s["epoch"], s["train_eval_top1"], "-", **kw)
            axes[0].plot(s["epoch"], s["val_top1"], "--", color=f"C{i}", lw=1.2)
            axes[1].plot(s["epoch"], s["val_gap"], "o-", ms=3, **kw)
    axes[0].set(xlabel="epoch", ylabel="top-1 (%)", title="training subset (eval mode, solid) and validation (dashed)")
    axes[1].axhline(THRESHOLDS["overfit_gap"], ls="--", lw=0.8, color="grey")
    axes[1].set(xlabel="epoch", ylabel="train (eval mode) - validation top-1 (points)", title="the gap")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Over-fitting regimes of the cpu profile's CE student ({cpu_name()})", fontsize=10)
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", nargs="+", default=["2000x24", "2000x40"],
                    help="NxE: N training images for E epochs (NxE:PRESET for another augmentation preset)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 11], help="choice seeds (not the report's)")
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/overfitting_regime.csv"))
    ap.add_argument("--figure", default=str(ROOT / "reports/figures/00_overfitting_regime.png"))
    args = ap.parse_args()
    trained = train_named(ap, lambda r, s: regime_config(r, s, args.eval_every, args.threads), args.regimes,
                          args.seeds, args.workers, args.threads)
    rows, checks = [], []
    for regime, cfg, run in trained:
        r, c = measure(regime, cfg, run)
        rows += r
        checks.append(c)
    import pandas as pd

    print(f"machine: {cpu_name()}")
    with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
        print(pd.DataFrame(checks).to_string(index=False))
    df = write_csv(rows, Path(args.csv))
    _figure(df, Path(args.figure))


if __name__ == "__main__":
    main()
