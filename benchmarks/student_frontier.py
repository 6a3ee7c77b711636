"""The student/recipe frontier: which binary student and short-run recipe reach a given Fashion-MNIST accuracy for
the least CPU time. The report's profile picks its CE student from this table.

    .venv/bin/python benchmarks/student_frontier.py --workers 1 --threads 1            # every candidate
    .venv/bin/python benchmarks/student_frontier.py --only nano-s1-onecycle micro-s1-onecycle-pad32 --seeds 0 1

Every candidate trains on the full 60k training set and is tested on the full 10k test set with the engine
(:func:`bnext_lib.runs.run_many`: runs are cached in ``data/runs/`` and resume when interrupted, so the table can be
rebuilt or extended without retraining). Prints per candidate: test top-1 after each epoch, images seen, wall
time and CPU-minutes (wall time x threads per run); writes ``--csv`` and a "test top-1 vs training cost" figure
(``--figure``). Asserts nothing: CPU-minutes depend on the machine (stated in the output).

The recipes (``RECIPES``): ``official`` is the engine's default (AdamW 1e-3, cosine with a 5/512 warm-up, τ at
its floor from 30 % of the run) with the crop-and-flip augmentation; ``onecycle`` raises the peak learning rate
to 2e-3 reached by a linear warm-up over 30 % of the run from lr/25, then anneals by a cosine to 1e-6 at the end
of the run (one-cycle); ``warmcos`` is the same warm-up followed by the engine's default cosine, which lasts
``epochs`` after the warm-up and so ends a 2-epoch run at ~0.2x the peak (the frontier's first round, kept to
show what the annealing is worth);
``-flip`` keeps the flip and drops the 4-px crop; ``-pad32`` zero-pads the 28x28 images to 32x32 (even maps at
every stride-2 stage); ``-b256`` doubles the batch with the learning rate scaled by sqrt(2).
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnext_lib.profiles import one_cycle  # noqa: E402
from bnext_lib.runs import run_many  # noqa: E402
from bnext_lib.train import TrainConfig  # noqa: E402

def _recipe(epochs: int, name: str) -> dict:
    """TrainConfig fields of a recipe name such as ``onecycle-flip-pad32-b256``."""
    parts = name.split("-")
    values: dict = {"augment": "basic", "batch_size": 128}
    if parts[0] in ("onecycle", "warmcos"):
        values.update(one_cycle(epochs), anneal_to_end=parts[0] == "onecycle")
    elif parts[0] != "official":
        raise ValueError(f"unknown recipe {name!r}")
    for p in parts[1:]:
        if p == "flip":
            values["augment"] = "flip"
        elif p == "pad32":
            values["pad_to"] = 32
        elif p == "b256":
            values["batch_size"] = 256
            values["lr"] = values.get("lr", 1e-3) * math.sqrt(2)
            values["warmup_lr"] = values["lr"] / 25 if parts[0] == "onecycle" else 1e-5
        elif p.startswith("tau"):
            values["temperature_reach"] = int(p[3:]) / 100
        else:
            raise ValueError(f"unknown recipe part {p!r} in {name!r}")
    return values


# name: (model, stem stride, epochs, recipe)
CANDIDATES = {
    "nano-s2-official": ("bnext_nano", 2, 3, "official"),
    "nano-s2-warmcos": ("bnext_nano", 2, 3, "warmcos"),
    "nano-s1-warmcos": ("bnext_nano", 1, 2, "warmcos"),
    "pico-s1-warmcos": ("bnext_pico", 1, 2, "warmcos"),
    "micro-s1-warmcos": ("bnext_micro", 1, 2, "warmcos"),
    "micro-s1-warmcos-flip-pad32": ("bnext_micro", 1, 2, "warmcos-flip-pad32"),
    "micro-s1-warmcos-pad32": ("bnext_micro", 1, 2, "warmcos-pad32"),
    "micro-s1-warmcos-pad32-b256": ("bnext_micro", 1, 2, "warmcos-pad32-b256"),
    "micro-s1-warmcos-pad32-tau60": ("bnext_micro", 1, 2, "warmcos-pad32-tau60"),
    "micro-s1-official-pad32": ("bnext_micro", 1, 2, "official-pad32"),
    "micro-s1-warmcos-pad32-e1": ("bnext_micro", 1, 1, "warmcos-pad32"),
    "micro-s1-warmcos-pad32-e3": ("bnext_micro", 1, 3, "warmcos-pad32"),
    "micro-s1-warmcos-flip-pad32-e3": ("bnext_micro", 1, 3, "warmcos-flip-pad32"),
    "micro-s1-onecycle-flip-pad32": ("bnext_micro", 1, 2, "onecycle-flip-pad32"),
    "micro-s1-onecycle-pad32": ("bnext_micro", 1, 2, "onecycle-pad32"),
    "nano-s1-onecycle": ("bnext_nano", 1, 2, "onecycle"),
}


def candidate_config(name: str, seed: int = 0, threads: int | None = 1) -> TrainConfig:
    """The training configuration of one candidate (full training and test sets, CE only)."""
    if name not in CANDIDATES:
        raise ValueError(f"unknown candidate {name!r}; choose from {sorted(CANDIDATES)}")
    model, stride, epochs, recipe = CANDIDATES[name]
    return TrainConfig(model=model, stem_stride=stride, dataset="fashion_mnist", epochs=epochs, seed=seed,
                       compile=True, threads=threads, progress=False, **_recipe(epochs, recipe))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=None,
                    help=f"candidates (default all), NAME or NAME@SEED,SEED: {', '.join(CANDIDATES)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of candidates named without @")
    ap.add_argument("--workers", type=int, default=1, help="runs side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/student_frontier.csv"))
    ap.add_argument("--figure", default=str(ROOT / "reports/figures/00_student_frontier.png"))
    args = ap.parse_args()
    try:
        keys = [(n.split("@")[0], int(s)) for n in (args.only or list(CANDIDATES))
                for s in (n.split("@")[1].split(",") if "@" in n else args.seeds)]
        configs = [candidate_config(n, s, args.threads) for n, s in keys]
        for c in configs:
            c.validate()
    except ValueError as e:
        ap.error(str(e))
    runs = run_many(configs, workers=args.workers, threads=args.threads)
    rows = []
    for (name, seed), run, cfg in zip(keys, runs, configs):
        hist = run.history()
        wall = float(hist["wall_s"].iloc[-1])
        rows.append({"candidate": name, "seed": seed, "model": cfg.model, "stem_stride": cfg.stem_stride,
                     "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "augment": cfg.augment,
                     "pad_to": cfg.pad_to, "temperature_reach": cfg.temperature_reach,
                     "test_top1": float(hist["test_top1"].iloc[-1]), "train_top1": float(hist["train_top1"].iloc[-1]),
                     "test_top1_per_epoch": " ".join(f"{v:.2f}" for v in hist["test_top1"]),
                     "images_seen": int(cfg.epochs * (60000 // cfg.batch_size) * cfg.batch_size),
                     "wall_s": round(wall, 1), "cpu_min": round(wall * args.threads / 60, 2)})
    _write(rows, Path(args.csv), Path(args.figure))


def train_named(ap: argparse.ArgumentParser, make, names, seeds, workers: int, threads: int) -> list[tuple]:
    """``(name, config, run)`` for every name and seed, ``make(name, seed)`` giving the config: every config is
    validated before any run trains (a bad one ends the command through ``ap.error``), then all train through the
    run cache, ``workers`` side by side."""
    try:
        configs = [(n, make(n, s)) for n in names for s in seeds]
        for _, c in configs:
            c.validate()
    except ValueError as e:
        ap.error(str(e))
    runs = run_many([c for _, c in configs], workers=workers, threads=threads)
    return [(n, c, r) for (n, c), r in zip(configs, runs)]


def write_csv(rows: list[dict], path: Path, columns: list[str] | None = None):
    """Print ``rows`` as a table (``columns`` only) and write them all to ``path`` atomically; the DataFrame."""
    import pandas as pd

    from bnext_lib.checkpoints import atomic_write_text

    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print((df[columns] if columns else df).to_string(index=False))
    atomic_write_text(path, df.to_csv(index=False))
    return df


def _write(rows: list[dict], csv_path: Path, figure: Path) -> None:
    print(f"machine: {cpu_name()}, CPU-minutes = wall time x threads per run")
    df = write_csv(rows, csv_path, ["candidate", "seed", "test_top1", "test_top1_per_epoch", "train_top1",
                                    "images_seen", "wall_s", "cpu_min"])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mean = df.groupby("candidate", sort=False)[["cpu_min", "test_top1"]].mean()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.scatter(df["cpu_min"], df["test_top1"], s=14, alpha=0.5)
    for name, r in mean.iterrows():
        ax.annotate(name, (r["cpu_min"], r["test_top1"]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.axhline(89.0, ls="--", lw=0.8, color="grey")
    ax.set(xscale="log", xlabel="CPU-minutes per run (wall time x threads)",
           ylabel="test top-1 (%), full Fashion-MNIST test set",
           title="Binary students: test top-1 vs training cost (CE only)")
    save_figure(fig, figure)
    print(f"wrote {csv_path}")


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
