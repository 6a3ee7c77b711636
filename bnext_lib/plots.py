"""The report's figures (matplotlib/seaborn); each function returns a ``Figure`` for :meth:`Study.figure`."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["ops_vs_top1", "curves", "bars", "landscapes", "temperature", "teacher_strength", "alphas", "heatmap"]


def _style() -> None:
    import seaborn as sns
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["svg.hashsalt"] = "bnext"  # SVG element ids from a fixed salt, not random: a rebuild is identical


def ops_vs_top1(costs, label_col: str = "model"):
    """Published ImageNet top-1 against our OPs count (log scale), one labelled point per model."""
    _style()
    df = costs.reset_index().dropna(subset=["published_top1"])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    bnext = df["model"].str.startswith("bnext")
    ax.scatter(df.loc[bnext, "OPs_G"], df.loc[bnext, "published_top1"], s=60, label="BNext", color="C3")
    ax.scatter(df.loc[~bnext, "OPs_G"], df.loc[~bnext, "published_top1"], s=60, label="earlier BNNs", color="C0")
    for _, r in df.iterrows():
        ax.annotate(r[label_col], (r["OPs_G"], r["published_top1"]), textcoords="offset points", xytext=(5, -10),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("OPs = BOPs/64 + FLOPs (G, ours, 224x224)")
    ax.set_ylabel("published ImageNet top-1 (%)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def curves(histories, metrics: Sequence[str] = ("train_loss", "test_top1"), hue: str = "label"):
    """Per-epoch curves, mean over seeds with the min-max band (seaborn ``lineplot``)."""
    import seaborn as sns
    _style()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(data=histories, x="epoch", y=m, hue=hue, errorbar=("pi", 100), marker="o", ax=ax)
        ax.set_title(m.replace("_", " "))
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def bars(df, metric: str = "test_top1", x: str = "label", hue: str | None = None, ylabel: str = "test top-1 (%)"):
    """Mean ± std bars with every seed as a dot."""
    import seaborn as sns
    _style()
    n = df[x].nunique()
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * n + 2), 4.0))
    sns.barplot(data=df, x=x, y=metric, hue=hue, errorbar="sd", ax=ax, alpha=0.8, capsize=0.1)
    black = {"color": "black"} if hue is None else {"palette": "dark:black"}  # seaborn 0.13: no color= with hue
    state = np.random.get_state()  # seaborn jitters the dots with NumPy's global generator: seeded, a rebuild
    np.random.seed(0)               # draws the same picture, and the caller's random state is left as it was
    try:
        sns.stripplot(data=df, x=x, y=metric, hue=hue, dodge=hue is not None, size=4, ax=ax, legend=False, **black)
    finally:
        np.random.set_state(state)
    lo, hi = df[metric].min(), df[metric].max()
    pad = max(1.0, (hi - lo) * 0.6)
    ax.set_ylim(max(0, lo - pad), min(100, hi + pad))
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=25)
    fig.tight_layout()
    return fig


def landscapes(slices: Mapping[str, object]):
    """One contour plot per model of a :class:`~bnext_lib.landscape.Landscape` (shared colour scale)."""
    _style()
    n = len(slices)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    vmax = max(float(np.max(s.loss)) for s in slices.values())
    vmin = min(float(np.min(s.loss)) for s in slices.values())
    levels = np.linspace(vmin, vmax, 16)
    for ax, (label, s) in zip(axes[0], slices.items()):
        cs = ax.contourf(s.alphas, s.betas, s.loss.T, levels=levels, cmap="viridis")
        ax.contour(s.alphas, s.betas, s.loss.T, levels=levels, colors="white", linewidths=0.4)
        ax.plot(0, 0, "r+", ms=10)
        ax.set_title(f"{label}\nroughness {s.roughness:.3f}", fontsize=10)
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
    fig.colorbar(cs, ax=axes[0].tolist(), label="train loss", shrink=0.9)
    return fig


def temperature(trace):
    """Temperature (log scale) and the fraction of latent weights already at +-1 over the run."""
    _style()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    t = trace.dropna(subset=["temperature"])
    pos = t["temperature"] > 0
    ax.semilogy(t.loc[pos, "progress"], t.loc[pos, "temperature"], color="C0", marker=".", label="temperature τ")
    ax.set_xlabel("epoch")
    ax.set_ylabel("τ (log scale; exact sign once below the floor)")
    ax2 = ax.twinx()
    ax2.plot(t["progress"], 100 * t["saturated"], color="C3", marker=".", label="latent weights at ±1")
    ax2.set_ylabel("latent weights already ±1 (%)")
    ax2.set_ylim(0, 101)
    ax2.grid(False)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    fig.tight_layout()
    return fig


def teacher_strength(df):
    """Student train/test top-1 and their gap against the teacher's test top-1 (``teacher_top1``); runs without
    a teacher (CE only) are drawn as dashed horizontal lines. Bars span the seeds (min to max). Train top-1 is the
    eval-mode one (``train_eval_top1``) where every run measured it."""
    _style()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
    train = "train_eval_top1" if "train_eval_top1" in df and df["train_eval_top1"].notna().all() else "train_top1"
    kd, ce = df[df.teacher_top1.notna()], df[df.teacher_top1.isna()]
    g = kd.groupby("teacher_top1")
    m, lo, hi = g[[train, "test_top1", "gap"]].mean(), g.min(numeric_only=True), g.max(numeric_only=True)
    x = m.index.to_numpy()
    panels = ((axes[0], train, "C0"), (axes[0], "test_top1", "C3"), (axes[1], "gap", "C2"))
    for ax, col, color in panels:
        ax.errorbar(x, m[col], yerr=[m[col] - lo[col], hi[col] - m[col]], marker="o", color=color, capsize=3,
                    label=f"{col.replace('_', ' ')}, distilled")
        if not ce.empty:
            ax.axhline(ce[col].mean(), color=color, ls="--", lw=1, label=f"{col.replace('_', ' ')}, CE only")
    for ax in axes:
        ax.set_xlabel("teacher test top-1 (%)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("student top-1 (%)")
    axes[1].set_ylabel("train - test top-1 (points)")
    fig.tight_layout()
    return fig


def alphas(histories):
    """Mean adaptive weight of each active teacher per epoch (``alpha_k`` columns), one panel per label."""
    _style()
    labels = list(dict.fromkeys(histories["label"]))
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.5), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels):
        h = histories[histories.label == label]
        for k in sorted(c for c in h.columns if c.startswith("alpha_")):
            mean = h.groupby("epoch")[k].mean()
            ax.plot(mean.index, mean.values, marker="o", label="assistant / weak" if k == "alpha_0" else "main")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("mean α")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap(pivot, title: str = "", fmt: str = ".1f", center: float | None = None, cmap: str = "vlag_r"):
    """A labelled heat map of a pivot table."""
    import seaborn as sns
    _style()
    fig, ax = plt.subplots(figsize=(1.3 * pivot.shape[1] + 2.5, 0.7 * pivot.shape[0] + 1.6))
    sns.heatmap(pivot, annot=True, fmt=fmt, cmap=cmap, center=center, ax=ax, cbar_kws={"shrink": 0.8})
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=25)
    fig.tight_layout()
    return fig
