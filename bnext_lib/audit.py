"""The audit: re-train a seeded random sample of a ledger's runs and hold what comes out against their records.

``make audit`` (``python -m bnext_lib.audit``, ``bnext-audit``) prints per run the recorded and re-trained
metrics, their largest difference, the tolerance and why, and exits non-zero when a run falls outside it:

* on a machine of the record's kind (the same CPU model and instruction sets, or GPU) and the same torch, the
  re-trained run must be identical: the same metrics and the same SHA-256 of its final weights;
* elsewhere, other kernels round differently and a binary network turns a last-bit difference into flipped signs,
  so runs drift apart as two seeds do: each top-1 must lie within the largest cross-kernel difference
  ``benchmarks/kernel_variance.py`` measured at the profile (``tables/kernel_variance.csv`` of its report folder:
  ``reports/tables/`` at cpu), read at audit time; a profile where none was measured cannot audit a run of
  another machine kind, and the audit says so (exit 2).

A student re-trains with its recorded teachers' committed weights (checked against their SHA-256), never with
teachers trained again. The default sample is what fits ``--budget-min`` (15) by the runs' recorded wall
times, topped up to ``--at-least`` (3) runs; ``--digest`` names runs instead. Nothing is written to the ledger or
this machine's run cache.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from .ledger import Ledger, LedgerError, config_of, cpu_kind, ledger_dir, machine, same_machine
from .pool import quiet_cuda_probe
from .runs import retrain

__all__ = ["METRICS", "KERNEL_VARIANCE", "choose", "tolerance", "kernel_variance", "audit_run", "main"]

# what the audit compares, where a run measured it
METRICS = ("test_top1", "val_top1", "train_eval_top1", "test_loss")
KERNEL_VARIANCE = Path(__file__).resolve().parents[1] / "reports" / "tables" / "kernel_variance.csv"


def choose(records: Sequence[dict], seed: int, budget_s: float, digests: Sequence[str] = (),
           at_least: int = 3) -> list[dict]:
    """The runs to re-train: those named by ``digests``, else a ``seed``-ed random order of all of them, taken while
    their recorded wall seconds fit ``budget_s`` (a run that alone exceeds it is passed over), then the next ones in
    that order that alone fit it, until ``at_least`` are taken: two runs of ~8 minutes fill 15 minutes and say little
    of a ledger, while a teacher of an hour would overrun the budget fourfold."""
    if digests:
        known = {r["digest"]: r for r in records}
        unknown = [d for d in digests if d not in known]
        if unknown:
            raise ValueError(f"not in the ledger: {', '.join(unknown)}")
        return [known[d] for d in digests]
    order = sorted(records, key=lambda r: r["digest"])
    random.Random(seed).shuffle(order)
    chosen, used = [], 0.0
    for r in order:
        if used + r["wall_s"] <= budget_s:
            chosen.append(r)
            used += r["wall_s"]
    taken = {r["digest"] for r in chosen}
    rest = [r for r in order if r["digest"] not in taken and r["wall_s"] <= budget_s]
    chosen += rest[:max(0, at_least - len(chosen))]
    return chosen


def tolerance(record: dict, here: dict, variance: Path = KERNEL_VARIANCE, threads: int | None = None
              ) -> tuple[float, str]:
    """(the largest |difference| of a top-1 allowed, why): 0 on a CPU of the record's kind, with its kernels,
    thread count and torch, else the largest cross-kernel difference measured by ``benchmarks/kernel_variance.py``
    (``threads``: the count the re-training was configured with, which :func:`audit_run` takes from the record;
    None compares the machines' recorded counts)."""
    theirs = record["machine"]
    if same_machine(theirs, here, threads):  # a GPU's kernels are not deterministic: there, the spread below
        return 0.0, "same machine kind, kernels, threads and torch: identical"
    import pandas as pd

    try:
        spread = pd.read_csv(variance)["difference"].abs().max()
    except (OSError, KeyError, ValueError) as e:
        raise FileNotFoundError(f"{variance}: the cross-kernel spread is needed to audit a run of another machine "
                                f"kind ({e}); run benchmarks/kernel_variance.py") from None
    return float(spread), (f"trained on {cpu_kind(theirs)}, torch {theirs.get('torch')}: within the cross-kernel "
                           f"spread ({variance.name}, max |Δ| {spread:.2f})")


def kernel_variance(profile: str) -> Path:
    """Where the profile's cross-kernel spread is (``tables/kernel_variance.csv`` of its report folder): a
    spread measured at one profile says nothing of another's runs (a smoke run of 512 images drifts further)."""
    from .study import report_dir

    return report_dir(profile) / "tables" / "kernel_variance.csv"


def audit_run(record: dict, ledger: Ledger, root: Path, variance: Path = KERNEL_VARIANCE) -> dict:
    """Re-train one recorded run into ``root`` and compare; a row of the audit table."""
    cfg = dataclasses.replace(config_of(record["config"]), progress=False)
    if cfg.threads is None:  # the record's run took torch's default: re-train with the count it used
        cfg = dataclasses.replace(cfg, threads=record["machine"].get("torch_threads"))
    fresh = retrain(cfg, ledger, root)
    limit, why = tolerance(record, fresh["machine"], variance, cfg.threads)
    row = {"digest": record["digest"], "model": cfg.model, "seed": cfg.seed}
    worst = 0.0
    for m in METRICS:
        a, b = record["final"].get(m), fresh["final"].get(m)
        if a is None or b is None:
            continue
        row[f"{m} recorded"], row[f"{m} now"] = a, b
        if m.endswith("top1"):
            worst = max(worst, abs(a - b))
        elif limit == 0.0:  # a loss is compared where the run must be identical
            worst = max(worst, 0.0 if a == b else math.inf)
    same_weights = fresh["weights_sha256"] == record["weights_sha256"]
    same_teachers = fresh["teachers"] == record["teachers"]  # digests, weights' SHA-256 and top-1 of each
    row.update({"max |Δ| top-1": worst, "weights identical": same_weights, "teachers identical": same_teachers,
                "tolerance": limit, "why": why})
    row["ok"] = worst <= limit and (same_weights or limit > 0) and same_teachers
    return row


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnext_lib.audit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", help="whose ledger (default cpu)")
    ap.add_argument("--ledger", help="a ledger folder instead of the profile's")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    ap.add_argument("--budget-min", type=float, default=15.0,
                    help="re-train a random sample whose recorded wall times add up to at most this (default 15)")
    ap.add_argument("--at-least", type=int, default=3, metavar="N",
                    help="re-train at least N runs, past the budget where fewer fit it (default 3)")
    ap.add_argument("--digest", nargs="+", default=(), help="re-train these runs instead of a sample")
    args = ap.parse_args(argv)
    if args.at_least < 0:
        ap.error(f"--at-least must be 0 or more, got {args.at_least}")
    quiet_cuda_probe()  # the re-training compiles: no "No CUDA runtime" line on a CPU machine
    ledger = Ledger(args.ledger or ledger_dir(args.profile))
    try:
        records = list(ledger.records())
    except LedgerError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    if not records:
        print(f"audit: {ledger.root} holds no runs", file=sys.stderr)
        return 2
    try:
        sample = choose(records, args.seed, 60 * args.budget_min, args.digest, args.at_least)
    except ValueError as e:
        ap.error(str(e))
    if not sample:
        ap.error(f"no run of {ledger.root} fits --budget-min {args.budget_min:g}; name one with --digest")
    here = machine()
    print(f"audit: {len(sample)} of {len(records)} runs of {ledger.root} (seed {args.seed}; "
          f"{sum(r['wall_s'] for r in sample) / 60:.1f} min as recorded), re-trained on "
          f"{cpu_kind(here)}, torch {here['torch']}", file=sys.stderr, flush=True)
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="bnext-audit-") as tmp:
        try:
            rows = [audit_run(r, ledger, Path(tmp), kernel_variance(args.profile)) for r in sample]
        except FileNotFoundError as e:
            print(f"audit: {e}", file=sys.stderr)
            return 2
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 80):
        print(table.to_string(index=False))
    bad = table[~table.ok]
    print(f"audit: {len(table) - len(bad)} of {len(table)} runs within tolerance"
          + (f"; outside: {', '.join(bad.digest)}" if len(bad) else ""))
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
