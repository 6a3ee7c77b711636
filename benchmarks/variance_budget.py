"""The variance budget of the CE student (Bouthillier et al. 2021, "Accounting for variance in machine learning
benchmarks"): how much of the seed-to-seed spread of test top-1 comes from the initialisation, the data order
(shuffling and augmentation) and the training subset, each varied alone on choice seeds, beside all of them varied
together as the report's seeds vary them.

    .venv/bin/python benchmarks/variance_budget.py --profile cpu --regime overfitting --runs 4
    .venv/bin/python benchmarks/variance_budget.py --profile cpu --regime full --runs 4
    .venv/bin/python benchmarks/variance_budget.py --profile cpu --regime overfitting --runs 5 --sources all \
        --pair elm_attention=false info_recoupling=false

Choice seeds start at ``--base`` (1000; the report's seeds are small integers and never reach it). The runs go into
the profile's choice ledger (``reports/choice-ledger/`` for cpu, :func:`bnext_lib.ledger.ledger_dir`), never the
report's; a run the ledger has is not trained again, so the same command continues after an interruption or a
``--budget-min`` part. The cross-kernel spread is read from ``reports/tables/kernel_variance.csv`` when it exists.

``--landscapes`` (full regime) also slices the loss landscape of the 'all' source's runs and of the ``--pair`` arm's
at the profile's grid and direction seeds, as notebook 01 slices its blocks', and keeps the slices in the runs'
records: the roughness's σ between seeds (each run's roughness the mean over its direction seeds, as the report
reads it), its spread between direction seeds within a run, and the pairing correlation of two models' roughness.

    .venv/bin/python benchmarks/variance_budget.py --profile cpu --regime full --runs 5 --sources all --landscapes \
        --pair elm_attention=false info_recoupling=false

Prints and writes (``--csv``, default ``variance_budget_<regime>.csv`` in the profile's report tables:
``reports/tables/`` at cpu, ``reports/<profile>/tables/`` elsewhere) one row per source: runs,
mean, standard deviation with its 90 % chi-square interval, and the range. Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnext_lib.config import config_hash  # noqa: E402
from bnext_lib.landscape import Landscape, landscape_key  # noqa: E402
from bnext_lib.ledger import Ledger, ledger_dir  # noqa: E402
from bnext_lib.runs import DEADLINE_ENV, Run, RunsWaiting, run_many  # noqa: E402
from bnext_lib.study import Study, report_dir  # noqa: E402

SOURCES = {"init": "initialisation", "order": "data order", "subset": "subset", "all": "all (as the report's seeds)"}


def seeds_of(source: str, base: int, i: int, subset: bool) -> dict:
    """The seed fields of run ``i`` of ``source``: that source's seed is ``base + i``, the others stay ``base``."""
    k = base + i
    if source == "init":
        fields = dict(seed=k, order_seed=base, subset_seed=base)
    elif source == "order":
        fields = dict(seed=base, order_seed=k, subset_seed=base)
    elif source == "subset":
        fields = dict(seed=base, order_seed=base, subset_seed=k)
    else:
        fields = dict(seed=k, order_seed=k, subset_seed=k)
    if fields["order_seed"] == fields["seed"]:
        fields["order_seed"] = None  # the same run as the report's way of seeding, under one digest
    if not subset:
        fields.pop("subset_seed")
    return fields


def plan(study: Study, runs: int, base: int, sources=tuple(SOURCES)) -> list[tuple[str, int, object]]:
    """``(source, i, config)`` for every run of ``sources`` (keys of :data:`SOURCES`), in that order; sources a
    regime cannot vary (the subset on the full data) left out. Run 0 of every source is one and the same run."""
    subset = study.settings.get("train_subset") is not None
    rows = []
    for source in sources:
        if source == "subset" and not subset:
            continue
        for i in range(runs):
            rows.append((source, i, study.config(evaluate="end", **seeds_of(source, base, i, subset))))
    return rows


def sd_interval(values: np.ndarray, level: float = 0.9) -> tuple[float, float, float]:
    """Sample standard deviation and its chi-square interval (normal data)."""
    n = len(values)
    sd = float(np.std(values, ddof=1))
    lo, hi = stats.chi2.ppf([(1 + level) / 2, (1 - level) / 2], n - 1)
    return sd, sd * float(np.sqrt((n - 1) / lo)), sd * float(np.sqrt((n - 1) / hi))


def _sd(values) -> float:
    values = pd.Series(values).dropna()
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def roughness(run, keys: Sequence[str]) -> tuple[float, float]:
    """A run's roughness as notebook 01 reads it (the mean over its direction seeds' slices, ``keys``) and their
    spread within the run; NaN where its record lacks a slice."""
    derived = run.record.get("derived", {}) if run is not None else {}
    if not keys or any(k not in derived for k in keys):
        return float("nan"), float("nan")
    values = np.array([Landscape.from_dict(derived[k]).roughness for k in keys])
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _run_row(source: str, i: int, run, landscape_keys: Sequence[str]) -> dict:
    rough, within = roughness(run, landscape_keys)
    return dict(source=SOURCES[source], i=i, test_top1=run.final["test_top1"], val_top1=run.final.get("val_top1"),
                gap=run.final.get("train_eval_top1", np.nan) - run.final["test_top1"], roughness=rough,
                within=within, wall_s=run.record["wall_s"])


def roughness_columns(part: pd.DataFrame) -> dict:
    """The roughness's seed-to-seed σ (with its 90 % interval) over a source's sliced runs, and the spread between
    direction seeds within a run, pooled over runs (equal numbers of directions: the RMS)."""
    rough = part["roughness"].dropna().to_numpy()
    sd, lo, hi = sd_interval(rough) if len(rough) > 1 else (float("nan"),) * 3
    within = part["within"].dropna().to_numpy()
    return dict(roughness_runs=len(rough), roughness_mean=rough.mean() if len(rough) else float("nan"),
                roughness_sd=sd, roughness_sd_lo90=lo, roughness_sd_hi90=hi,
                roughness_directions_sd=float(np.sqrt(np.mean(within ** 2))) if len(within) else float("nan"))


def table(rows, results, landscape_keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per source: top-1's σ and range, the gap's, and (``landscape_keys``: the slices a run's roughness
    is the mean of) the roughness's, on the 'all' row, where the slices are computed (``--landscapes``)."""
    frame = pd.DataFrame([_run_row(s, i, r, landscape_keys) for (s, i, _), r in zip(rows, results) if r is not None])
    out = []
    for source, part in frame.groupby("source", sort=False):
        v = part["test_top1"].to_numpy()
        sd, lo, hi = sd_interval(v) if len(v) > 1 else (float("nan"),) * 3
        row = dict(source=source, runs=len(v), test_top1_mean=v.mean(), sd=sd, sd_lo90=lo, sd_hi90=hi,
                   min=v.min(), max=v.max(), val_sd=_sd(part["val_top1"]), gap_mean=part["gap"].mean(),
                   gap_sd=_sd(part["gap"]), wall_s_median=part["wall_s"].median())
        if source == SOURCES["all"] and part["roughness"].notna().any():
            row.update(roughness_columns(part))
        out.append(row)
    kernels = ROOT / "reports" / "tables" / "kernel_variance.csv"
    if kernels.exists():
        k = pd.read_csv(kernels)
        diff = [c for c in k.columns if "diff" in c.lower()]
        if diff:
            d = k[diff[0]].dropna().abs().to_numpy()
            # two runs of one seed under two kernel settings: Var(Δ) = 2 σ², so σ = rms(Δ) / √2
            out.append(dict(source="CPU kernels (kernel_variance.csv, |Δ| of one seed; earlier bf16 recipe)",
                            runs=len(d), sd=float(np.sqrt(np.mean(d ** 2) / 2)), min=d.min(), max=d.max()))
    return pd.DataFrame(out)


def _override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--pair``: the value as JSON where it parses (false, 3, 0.5), else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--pair takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def pairing_row(arm: str, pairs: list[tuple[float, float]], level: float = 0.9, metric: str = "test_top1") -> dict:
    """The pairing correlation of two arms' ``metric`` over the seeds they share (``scipy.stats.pearsonr``), with the
    lower end of its ``level`` interval (Fisher's z; four seeds at least), and the per-seed differences' standard
    deviation."""
    a, b = (np.array(v, float) for v in zip(*pairs)) if pairs else (np.array([]), np.array([]))
    n = len(a)
    r = stats.pearsonr(a, b) if n > 2 else None
    rho = float(r.statistic) if r is not None else float("nan")
    lo = float(r.confidence_interval(level).low) if n > 3 else float("nan")
    return dict(arm=arm, metric=metric, runs=n, rho=rho, rho_lo90=lo, sd_base=_sd(a), sd_arm=_sd(b),
                sd_diff=_sd(a - b) if n > 1 else float("nan"))


def pairing_rows(arm: str, both: Sequence[tuple], landscape_keys: Sequence[str]) -> pd.DataFrame:
    """The pairing rows of the two arms' runs ``both`` (``(base, arm)`` per seed): top-1's, and the roughness's
    where both runs of four seeds or more hold their slices."""
    rows = [pairing_row(arm, [(a.final["test_top1"], b.final["test_top1"]) for a, b in both])]
    rough = [(roughness(a, landscape_keys)[0], roughness(b, landscape_keys)[0]) for a, b in both]
    rough = [p for p in rough if not np.isnan(p).any()]
    if len(rough) > 3:
        rows.append(pairing_row(arm, rough, metric="roughness"))
    return pd.DataFrame(rows)


def merge_pairing(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``pairing_<regime>.csv`` with ``new``'s rows in place of those of the same arm and metric; rows written
    before the table had a metric column are top-1's."""
    if old.empty:
        return new.reset_index(drop=True)
    old = old.assign(metric=old["metric"].fillna("test_top1") if "metric" in old.columns else "test_top1")
    keep = ~old.set_index(["arm", "metric"]).index.isin(new.set_index(["arm", "metric"]).index)
    merged = pd.concat([old[keep], new], ignore_index=True)
    return merged[[*new.columns, *(c for c in merged.columns if c not in new.columns)]]  # new's column order


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--regime", default="overfitting", choices=["overfitting", "full"])
    ap.add_argument("--runs", type=int, default=4, help="runs per source (run 0 shared by every source)")
    ap.add_argument("--base", type=int, default=1000, help="the first choice seed")
    ap.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(SOURCES),
                    help="the sources to vary, trained in this order (default: all four; 'all' alone gives the σ "
                         "the power analysis reads)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--budget-min", type=float, help="start no run that would not end within MIN minutes")
    ap.add_argument("--pair", nargs="+", metavar="KEY=VALUE",
                    help="also train this variant of the CE student (e.g. elm_attention=false) at the 'all' "
                         "source's seeds: the pairing correlation ρ of two arms that share each seed's subset and "
                         "data order, written to pairing_<regime>.csv beside the budget (the power table reads it)")
    ap.add_argument("--landscapes", action="store_true",
                    help="also slice the loss landscapes of the 'all' source's runs and the --pair arm's (the "
                         "profile's grid and direction seeds, as notebook 01): the roughness's σ and ρ (full regime)")
    ap.add_argument("--csv")
    args = ap.parse_args()
    if args.landscapes and (args.regime != "full" or "all" not in args.sources):
        ap.error("--landscapes slices the full regime's 'all' source (notebook 01's landscapes): --regime full "
                 "with 'all' in --sources")
    try:
        pair = dict(_override(kv) for kv in args.pair or ())
    except ValueError as e:
        ap.error(str(e))
    if args.runs < 2:
        ap.error("--runs must be at least 2: a standard deviation needs two runs")
    if args.budget_min:
        os.environ[DEADLINE_ENV] = str(time.time() + 60 * args.budget_min)
    ledger = Ledger(ledger_dir(args.profile, choice=True))
    study = Study("01_architecture_study" if args.regime == "full" else "02_overfitting_analysis",
                  profile=args.profile, regime=args.regime, out_dir=ROOT / "reports" / ".scratch", ledger=ledger.root)
    rows = plan(study, args.runs, args.base, args.sources)
    if pair and "all" not in args.sources:
        ap.error("--pair pairs with the 'all' source's runs: keep 'all' in --sources")
    subset = study.settings.get("train_subset") is not None
    try:  # the paired arm at the 'all' source's seeds, checked before anything trains
        arm = [study.config(evaluate="end", **seeds_of("all", args.base, i, subset), **pair) for i in range(args.runs)]
        for c in arm:
            c.validate()
    except (TypeError, ValueError) as e:
        ap.error(f"--pair: {e}")
    configs = [c for _, _, c in rows]
    print(f"variance budget, {args.profile} profile, {args.regime} regime: {len(configs)} runs "
          f"({len(set(map(config_hash, configs)))} distinct), choice ledger {ledger.root}", flush=True)
    results = []
    for source in args.sources:  # source by source (run_many orders seed-major within one call)
        results += run_many([c for s, _, c in rows if s == source], workers=args.workers, threads=1, ledger=ledger,
                            partial=True)
    paired = []
    if pair:
        alls = [r for (s, _, _), r in zip(rows, results) if s == "all"]
        paired = list(zip(alls, run_many(arm, workers=args.workers, threads=1, ledger=ledger, partial=True)))
    # the roughness columns come from the slices the records hold, whether or not this invocation slices: a later
    # invocation without --landscapes keeps what an earlier one measured
    keys = [landscape_key(*spec[1:]) for spec in study.landscape_specs]
    unsliced = 0
    if args.landscapes:  # from the weights of runs this machine has, else trained again (identical on this kind)
        todo = [c for (s, _, c), r in zip(rows, results) if s == "all" and r is not None]
        todo += [b.config for _, b in paired if b is not None]
        print(f"loss landscapes: {len(todo)} runs x {len(keys)} direction seeds", flush=True)
        done = run_many(todo, workers=args.workers, threads=1, ledger=ledger, partial=True, verbose=False,
                        derive={config_hash(c): study.landscape_specs for c in todo})
        unsliced = sum(r is None for r in done)
    ledger.write_index()
    missing = sum(r is None for r in results) + sum(b is None for _, b in paired) + unsliced
    # the table: every source the ledger holds runs of, whichever this invocation asked to train
    everything = plan(study, args.runs, args.base)
    frame = table(everything, [Run(c, ledger.get(c), None, ledger) if ledger.has(c) else None
                               for _, _, c in everything], keys)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if missing:
        print(f"{missing} of {len(results)} runs wait for the next part: the same command continues")
    csv = Path(args.csv or report_dir(args.profile) / "tables" / f"variance_budget_{args.regime}.csv")
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False, float_format="%.4f")
    print(f"wrote {csv}")
    if pair:
        both = [(Run(a.config, ledger.get(a.config), None, ledger), Run(b.config, ledger.get(b.config), None, ledger))
                for a, b in paired if a is not None and b is not None]  # as recorded, slices included
        new_rows = pairing_rows(", ".join(args.pair), both, keys)
        print(new_rows.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        out = csv.parent / f"pairing_{args.regime}.csv"
        merge_pairing(pd.read_csv(out) if out.exists() else pd.DataFrame(), new_rows).to_csv(
            out, index=False, float_format="%.4f")
        print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main()
    except RunsWaiting as e:
        sys.exit(f"variance budget: {len(e.configs)} runs wait for the next part")
