"""Does a headline effect grow or shrink with training? The report's headline comparisons at several run lengths.

    .venv/bin/python benchmarks/training_length.py --profile cpu --full-epochs 1 2 --overfitting-epochs 6 12

For each headline claim (the ELM-Attention + Info-Recoupling ablation, BNext against ReActNet's block, two teachers
against the strong teacher alone, RandAugment on top of crop + flip) the two variants are trained exactly as the
notebooks train them (the same :class:`~bnext_lib.study.Study`, profile, regime and seeds; the run length changed,
its warm-up kept as the same share of the run) and compared with the report's test
(:func:`bnext_lib.verdicts.compare`: difference of means, its 95 % CI, one-sided Welch p). Runs go through the run
cache, so the report's own length costs nothing after ``make report``; the augmentation comparison uses the
distillation recipe notebook 04 picks, by validation top-1 at the profile's choice seeds (those runs trained if
missing).

Prints one row per claim and length, writes ``--csv`` and one figure (``--figure``: Δ with its CI against epochs,
one panel per claim). Not part of ``make report`` (its extra runs would not fit the report's budget); the report
includes the table and figure when they exist. Asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student_frontier import cpu_name, save_figure, write_csv  # noqa: E402

from bnext_lib.models import EARLIER_BLOCKS  # noqa: E402
from bnext_lib.plan import augmentation, distillation_recipes, recipe_choice  # noqa: E402
from bnext_lib.study import Study  # noqa: E402


def headline(profile: str, regime: str, epochs: int | None) -> list[tuple[str, Study, str, dict, str, dict]]:
    """``(claim, study, label A, overrides A, label B, overrides B)`` of the headline comparisons in ``regime``."""
    if regime == "full":
        s = Study("01_architecture_study", profile=profile, epochs=epochs, out_dir=ROOT / "reports" / ".scratch")
        model = s.settings["model"]
        return [("ELM + IR beat neither", s, "ELM + IR (BNext)", {}, "neither",
                 {"elm_attention": False, "info_recoupling": False}),
                ("BNext's block beats ReActNet's", s, "BNext", {}, "ReActNet",
                 {"model": EARLIER_BLOCKS[model]["ReActNet"]})]
    s = Study("03_distillation", profile=profile, epochs=epochs, regime="overfitting",
              out_dir=ROOT / "reports" / ".scratch")
    recipes = distillation_recipes(list(s.ladder().index))
    size = s.sizes[0]
    out = [("two teachers beat the strong one", s, "two, adaptive (batch)", recipes["two, adaptive (batch)"],
            "single strong", recipes["single strong"])]
    a, b = f"{size} / released", f"{size} / basic"
    if s.profile.cut_reason(a) or s.profile.cut_reason(b):
        return out + [("RandAugment on crop + flip helps", s, a, {}, b, {})]  # reported as cut by measure()
    full_length = Study("03_distillation", profile=profile, regime="overfitting", out_dir=ROOT / "reports" / ".scratch")
    choice = full_length.run(recipe_choice(recipes), seeds=full_length.choice_seeds)
    best = choice.summary(("val_top1",))["val_top1_mean"].idxmax()  # notebook 04's pick, at its length
    # the arms as notebook 04 declares them (its RandAugment for the dataset's images, evaluated at the end only)
    arms, _ = augmentation(recipes[best], s.settings["model"], s.sizes, s.settings["dataset"])
    return out + [("RandAugment on crop + flip helps", s, a, arms[a], b, arms[b])]


def measure(profile: str, regime: str, epochs: int) -> list[dict]:
    rows = []
    for claim, study, a, over_a, b, over_b in headline(profile, regime, epochs):
        runs = study.run({a: over_a, b: over_b})
        r = runs.compare(a, b)
        images = study.settings.get("train_subset") or 60000
        row = {"claim": claim, "comparison": r["comparison"], "regime": regime, "epochs": epochs,
               "images_seen": images * epochs}
        if r.get("cut"):  # a row without numbers: the table says which headline claims the profile leaves out
            print(f"{claim}: {r['text']}")
            rows.append({**row, "verdict": r["verdict"]})
            continue
        rows.append({**row, "mean_a": sum(runs.values(a)) / len(runs.values(a)),
                     "mean_b": sum(runs.values(b)) / len(runs.values(b)), "delta": r["delta"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "p_value": r["p_value"], "verdict": r["verdict"], "n_a": r["n_a"],
                     "n_b": r["n_b"], "minutes_per_run": round(float(runs.df["minutes"].mean()), 2)})
    return rows


def figure(df, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.dropna(subset=["delta"])  # cut comparisons have no numbers
    claims = list(dict.fromkeys(df["claim"]))
    fig, axes = plt.subplots(1, len(claims), figsize=(max(6.0, 3.8 * len(claims)), 3.8), squeeze=False)
    for ax, claim in zip(axes[0], claims):
        d = df[df["claim"] == claim].sort_values("epochs")
        ax.errorbar(d["epochs"], d["delta"], yerr=[d["delta"] - d["ci_low"], d["ci_high"] - d["delta"]],
                    fmt="o-", capsize=4)
        for _, r in d.iterrows():
            ax.annotate(f"p={r['p_value']:.3f}", (r["epochs"], r["delta"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set(title=claim, xlabel=f"epochs ({d['regime'].iloc[0]} regime)", xticks=list(d["epochs"]))
    axes[0][0].set_ylabel("Δ test top-1, A - B (points, 95 % CI)")
    fig.suptitle("Headline effects against run length (one-sided Welch p in the claimed direction)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--full-epochs", type=int, nargs="*", default=[1, 2],
                    help="run lengths of the architecture comparisons (full training set)")
    ap.add_argument("--overfitting-epochs", type=int, nargs="*", default=[6, 12],
                    help="run lengths of the distillation and augmentation comparisons (over-fitting regime)")
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/training_length.csv"))
    ap.add_argument("--figure", default=str(ROOT / "reports/figures/00_training_length.png"))
    args = ap.parse_args()
    try:
        lengths = [("full", e) for e in args.full_epochs] + [("overfitting", e) for e in args.overfitting_epochs]
        for regime, e in lengths:  # every configuration validates before anything trains
            Study("01_x" if regime == "full" else "03_x", profile=args.profile, epochs=e, regime=regime,
                  out_dir=ROOT / "reports" / ".scratch")
    except ValueError as err:
        ap.error(str(err))
    rows = [row for regime, e in lengths for row in measure(args.profile, regime, e)]
    print(f"machine: {cpu_name()}")
    df = write_csv(rows, Path(args.csv), ["claim", "epochs", "mean_a", "mean_b", "delta", "ci_low", "ci_high",
                                          "p_value", "verdict", "minutes_per_run"])
    figure(df, Path(args.figure))


if __name__ == "__main__":
    main()
