"""Time to accuracy: what a trained CE student costs, in CPU-seconds, optimizer steps and images seen, until its
top-1 first reaches a target and at the end of its run; the report's current student and recipe against the
candidates, in one invocation on one machine.

    .venv/bin/python benchmarks/time_to_accuracy.py --only today fast --seeds 0 1 2          # the headline table
    .venv/bin/python benchmarks/time_to_accuracy.py --only fast fast+ls fast+lr4e-3 --seeds 10 11   # choosing
    .venv/bin/python benchmarks/time_to_accuracy.py --regime overfitting --only today fast --seeds 0 1 2

Every run trains on the Fashion-MNIST training images less a fixed, class-stratified validation split of 5,000
(``TrainConfig.val_split``), and is evaluated after every epoch on that split (for choosing) and on the full
10k test set (for the reported figure). ``today`` is the cpu profile's CE student and recipe as v2 of the report
ran it (:data:`TODAY`, float32, compiled); every other candidate is a change to it, named
by its parts (:data:`CANDIDATES`). Runs go through the run cache (:func:`bnext_lib.runs.run_many`, two
single-thread workers by default): an interrupted invocation resumes, and a later one re-reads what is there. The
Inductor cache is the report's (``build/inductor``), so a graph compiled once is loaded by every later run, as in
a report.

Cost is what a run pays: CPU-seconds = wall time x threads, from the engine's start (data, compilation, every
evaluation) to the end of the epoch where the target is first reached (``cpu_s_to_target``) or to the run's end
(``cpu_s``). ``flip_val_top1`` evaluates the finished model again on the validation split with flip test-time
augmentation (the logits of the image and its mirror averaged): what that technique would add, for one more
forward of each evaluated split and no training. Prints the table
(the CPU and its flags named) and a summary per candidate; writes ``--csv`` and the "top-1 against CPU-seconds"
figure (``--figure``). Asserts nothing: every figure depends on the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / "build" / "inductor"))

from student_frontier import cpu_name, save_figure, train_named, write_csv  # noqa: E402

from bnext_lib.profiles import OVERFITTING, one_cycle  # noqa: E402
from bnext_lib.train import TrainConfig, evaluate, evaluation_splits  # noqa: E402

VAL_SPLIT = 5000
TARGET = 89.0
# ``today``: the cpu profile's CE student and recipe as report v2 ran it (bnext_micro, stride-1 stem, 32x32, flips,
# 2 epochs, batch 128, one-cycle to 2e-3, float32, compiled); every candidate is a change to it
TODAY = dict(model="bnext_micro", stem_stride=1, dataset="fashion_mnist", pad_to=32, augment="flip", epochs=2,
             batch_size=128, **one_cycle(2), train_subset=None, test_subset=None)


def _cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "?"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags)


def _part(part: str, epochs: int) -> dict:
    """TrainConfig changes of one candidate part: ``bf16`` (autocast), ``cl`` (channels-last), ``e<N>`` (N epochs,
    one-cycle), ``b<N>`` (batch N, lr scaled by the square root), ``lr<peak>``, ``wu<percent>`` (warm-up share),
    ``tau<percent>`` (binary from that share of the run), ``ls`` (label smoothing 0.1), ``nopad`` (28x28 as
    stored), ``ema<digits>`` (EMA of the weights, decay 0.<digits>), ``nlr<N>`` (per-channel parameters' lr x N), ``n<N>``
    (N training images an epoch, drawn class-stratified with the run's seed: a shorter run)."""
    if part == "bf16":
        return {"amp": True}
    if part == "cl":
        return {"channels_last": True}
    if part == "tta":
        return {"eval_flip": True}
    if part == "ls":
        return {"augment": "flip+label_smoothing"}
    if part == "nopad":
        return {"pad_to": None}
    if part.startswith("e") and part[1:].isdigit():
        return dict(one_cycle(int(part[1:])), epochs=int(part[1:]))
    if part.startswith("b") and part[1:].isdigit():
        # the learning rate scaled with the square root of the batch (Adam), the warm-up start with it
        scale = math.sqrt(int(part[1:]) / TODAY["batch_size"])
        return {"batch_size": int(part[1:]), "lr_scale": scale}
    if part.startswith("lr"):
        return {"lr_scale": float(part[2:]) / TODAY["lr"]}
    if part.startswith("wu") and part[2:].isdigit():
        return {"warmup_share": int(part[2:]) / 100}
    if part.startswith("ema") and part[3:].isdigit():
        return {"ema_decay": int(part[3:]) / 10 ** len(part[3:])}
    if part.startswith("nlr") and part[3:].isdigit():
        return {"norm_lr_scale": float(part[3:])}
    if part.startswith("tau") and part[3:].isdigit():
        return {"temperature_reach": int(part[3:]) / 100}
    if part.startswith("n") and part[1:].isdigit():
        return {"train_subset": int(part[1:])}
    raise ValueError(f"unknown candidate part {part!r}")


def candidate_config(name: str, seed: int, regime: str = "full", threads: int = 1) -> TrainConfig:
    """The run of candidate ``name`` (``today``, or parts joined by ``+``, e.g. ``bf16+cl+e1``; ``fast`` stands for
    :data:`FAST`'s parts) for ``seed``."""
    values = dict(TODAY, compile=True, val_split=VAL_SPLIT, seed=seed, threads=threads, progress=False)
    if regime == "overfitting":
        values.update(OVERFITTING)  # evaluated as the report evaluates it (every 6th epoch)
    elif regime != "full":
        raise ValueError(f"regime must be 'full' or 'overfitting', got {regime!r}")
    parts = [] if name == "today" else [q for p in name.split("+") for q in (FAST.split("+") if p == "fast" else [p])]
    lr_scale, warmup_share = 1.0, None
    for part in parts:
        change = _part(part, values["epochs"])
        if "epochs" in change and regime == "overfitting":
            continue  # the regime fixes the run length (and its warm-up); the other parts apply
        lr_scale *= change.pop("lr_scale", 1.0)
        warmup_share = change.pop("warmup_share", warmup_share)
        values.update(change)
    values["lr"] = TODAY["lr"] * lr_scale
    values["warmup_lr"] = values["lr"] / 25
    if warmup_share is not None:
        values["warmup_epochs"] = round(warmup_share * values["epochs"], 6)
    return TrainConfig(**values)


def _first(hist, column: str, target: float):
    """The first evaluated epoch's row whose ``column`` reaches ``target`` (``None``: never)."""
    hit = hist[hist[column].notna() & (hist[column] >= target)]
    return None if hit.empty else hit.iloc[0]


def _flip_scores(run) -> dict:
    """The finished model's validation top-1 with flip test-time augmentation (a choice, so on validation only)."""
    import torch

    splits, augmenter = evaluation_splits(dataclasses.replace(run.config, eval_train=False))
    model = run.load_model()
    return {"flip_val_top1": evaluate(model, splits["val"], augmenter, torch.device("cpu"), flip=True)[1]}


def _row(name: str, cfg: TrainConfig, run, target: float, threads: int, flip: bool = True) -> dict:
    hist = run.history()
    steps_per_epoch = (60000 - VAL_SPLIT if cfg.train_subset is None else cfg.train_subset) // cfg.batch_size
    row = {"candidate": name, "seed": cfg.seed, "epochs": cfg.epochs, "batch": cfg.batch_size, "lr": cfg.lr,
           "amp": cfg.amp, "steps": cfg.epochs * steps_per_epoch,
           "images": cfg.epochs * steps_per_epoch * cfg.batch_size,
           "val_top1": float(hist["val_top1"].iloc[-1]), "test_top1": float(hist["test_top1"].iloc[-1]),
           "cpu_s": float(hist["wall_s"].iloc[-1]) * threads,
           "train_s": float(hist["train_s"].sum()) * threads,
           "img_per_cpu_s": float(hist["train_images_s"].iloc[-1]) / threads}
    if "train_eval_top1" in hist:
        row["train_eval_top1"] = float(hist["train_eval_top1"].iloc[-1])
    for split in ("val", "test"):
        hit = _first(hist, f"{split}_top1", target)
        row[f"{split}_epoch_to_target"] = None if hit is None else int(hit["epoch"])
        row[f"{split}_cpu_s_to_target"] = None if hit is None else float(hit["wall_s"]) * threads
    if flip:
        row.update(_flip_scores(run))
    return row


def summary(df, baseline: str = "today"):
    """Per candidate: seeds, mean (std) of the final val and test top-1, the worst seed's test top-1, mean
    CPU-seconds and the baseline's CPU-seconds over them (``speed-up``)."""
    g = df.groupby("candidate", sort=False)
    flips = {"flip_val_top1": ("flip_val_top1", "mean")} if "flip_val_top1" in df else {}
    out = g.agg(n=("seed", "size"), val_top1=("val_top1", "mean"), val_sd=("val_top1", "std"),
                test_top1=("test_top1", "mean"), test_sd=("test_top1", "std"), test_min=("test_top1", "min"),
                **flips, cpu_s=("cpu_s", "mean"), cpu_s_to_target=("test_cpu_s_to_target", "mean"),
                img_per_cpu_s=("img_per_cpu_s", "mean"), steps=("steps", "mean"), images=("images", "mean"))
    if baseline in out.index:
        out["speed_up"] = out.loc[baseline, "cpu_s"] / out["cpu_s"]
    return out.reset_index()


def difference(df, a: str, b: str, metric: str = "test_top1") -> str:
    """``a`` minus ``b`` in ``metric`` over their seeds: the difference, its two-sided 95 % CI (Welch, scipy)."""
    from bnext_lib.verdicts import compare

    r = compare(df.loc[df["candidate"] == a, metric], df.loc[df["candidate"] == b, metric], a, b)
    return (f"{a} - {b}, {metric}: {r['delta']:+.2f} points, 95 % CI [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] "
            f"(Welch, n = {r['n_a']} / {r['n_b']})")


def figure(df, target: float, path: Path) -> None:
    """Top-1 against CPU-seconds, one panel per split: every run's evaluations, each candidate's seed mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, split in zip(axes, ("val", "test")):
        for i, (name, runs) in enumerate(df.groupby("candidate", sort=False)):
            colour = f"C{i % 10}"
            curves = [pd.DataFrame(h) for h in runs["history"]]
            for h in curves:
                ax.plot(h["wall_s"] * runs["threads"].iloc[0], h[f"{split}_top1"], "o-", color=colour, alpha=0.25,
                        lw=0.8, ms=3)
            mean = pd.concat(curves).groupby("epoch")[["wall_s", f"{split}_top1"]].mean()
            ax.plot(mean["wall_s"] * runs["threads"].iloc[0], mean[f"{split}_top1"], "s-", color=colour, lw=1.8,
                    ms=5, label=f"{name} (n={len(runs)})")
        ax.axhline(target, ls="--", lw=0.8, color="grey")
        ax.set(xscale="log", xlabel="CPU-seconds from the run's start (wall x threads)",
               title=f"{'validation split (5,000 training images)' if split == 'val' else 'full test set'}")
    axes[0].set_ylabel("top-1 (%) after each epoch")
    axes[1].legend(fontsize=7, loc="lower right")
    low = min(df["val_top1"].min(), df["test_top1"].min())
    axes[0].set_ylim(max(low - 4, 50), None)
    fig.suptitle(f"CE student: top-1 against CPU-seconds ({cpu_name()})", fontsize=10)
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=["today", "fast"],
                    help="candidates: today, fast, or parts joined by '+' (bf16, cl, e1, e2, b64, b256, lr4e-3, "
                         "wu15, tau50, ls, nopad, ema98, nlr4), e.g. bf16+cl+e1+ls")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--regime", choices=("full", "overfitting"), default="full",
                    help="full: 55k training images; overfitting: the profile's over-fitting training subset")
    ap.add_argument("--target", type=float, default=TARGET, help="top-1 (%%) the time to accuracy is measured to")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--no-flip", dest="flip", action="store_false",
                    help="leave out the flip test-time-augmentation columns (each costs one more evaluation)")
    ap.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="also print the difference of A's and B's final test top-1 with its 95 %% CI (Welch), "
                         "e.g. --compare fast cl+e1+b64+nopad for what bf16 costs; may be repeated")
    ap.add_argument("--csv", default=None, help="default reports/tables/time_to_accuracy[_overfitting].csv")
    ap.add_argument("--figure", default=None, help="default reports/figures/00_time_to_accuracy[_overfitting].png")
    args = ap.parse_args()
    trained = train_named(ap, lambda n, s: candidate_config(n, s, args.regime, args.threads), args.only, args.seeds,
                          args.workers, args.threads)
    rows = [_row(name, cfg, run, args.target, args.threads, args.flip)
            | {"history": run.result["history"], "threads": args.threads} for name, cfg, run in trained]
    suffix = "" if args.regime == "full" else f"_{args.regime}"
    csv = Path(args.csv or ROOT / f"reports/tables/time_to_accuracy{suffix}.csv")
    fig = Path(args.figure or ROOT / f"reports/figures/00_time_to_accuracy{suffix}.png")
    import pandas as pd

    df = pd.DataFrame(rows)
    print(f"machine: {cpu_name()} [{_cpu_flags()}], {os.cpu_count()} cores; {args.workers} run(s) side by side of "
          f"{args.threads} thread(s); CPU-seconds = wall x threads; target {args.target} % top-1; regime "
          f"{args.regime}; validation split {VAL_SPLIT} training images")
    shown = ["candidate", "seed", "steps", "val_top1", "flip_val_top1", "test_top1", "test_cpu_s_to_target",
             "cpu_s", "img_per_cpu_s"]
    write_csv(df.drop(columns=["history", "threads"]).to_dict("records"), csv, [c for c in shown if c in df])
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.2f}".format):
        print(summary(df).to_string(index=False))
    for a, b in args.compare:
        print(difference(df, a, b))
    figure(df, args.target, fig)
    print(f"wrote {csv}")


# The recipe the cpu profile adopts (see bnext_lib.profiles and docs/method.md): filled in from the measurement.
FAST = "bf16+cl+e1+b32+nopad"

if __name__ == "__main__":
    main()
