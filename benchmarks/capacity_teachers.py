"""Can the over-fitting regime have teachers whose lead over the binary student comes from capacity, not from images
the student never sees? Candidate teachers trained on the student's own training subset (the one each choice seed
draws), in the over-fitting regime's recipe, beside the binary CE student of the same subset and seed; their lead
is measured on the validation split (choices are made there), and held against the profile's role thresholds: a
main teacher ``teacher_lead`` points above the student it teaches, an assistant ``assistant_lead`` above it.

    .venv/bin/python benchmarks/capacity_teachers.py --profile cpu --seeds 1000 1001
    .venv/bin/python benchmarks/capacity_teachers.py --profile cpu --seeds 1000 1001 \\
        --candidate "bnext_nano float twin" model=bnext_nano binary=false precise_bn=32

The default candidate is the student's float twin (:data:`bnext_lib.study.FLOAT_TWIN`: the same network without
its quantizers, BatchNorm statistics recomputed for evaluation): the largest lead precision alone buys at the
student's own size. Every run is a CE run of the over-fitting regime (its subset, length and recipe), evaluated at
the end; runs go to the profile's choice ledger (never the report's), so the same command continues after an
interruption or a ``--budget-min`` part, and choice seeds (1000 on) are never report seeds.

Prints per seed and arm the validation and test top-1, the train-minus-test gap and the validation lead over the
binary student; per candidate the mean lead, its range, and the roles it can play; writes ``--csv`` (default
``capacity_teachers.csv`` in the profile's report tables). Asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnext_lib.ledger import Ledger, ledger_dir  # noqa: E402
from bnext_lib.plan import FLOAT_TWIN  # noqa: E402
from bnext_lib.runs import DEADLINE_ENV, RunsWaiting, run_many  # noqa: E402
from bnext_lib.study import Study, report_dir  # noqa: E402
from variance_budget import _override  # noqa: E402

STUDENT = "binary student (CE)"


def parse_candidate(tokens: list[str]) -> tuple[str, dict]:
    """``["label", "KEY=VALUE", ...]`` -> ``(label, overrides)``; a value is read as JSON where it parses."""
    if not tokens or "=" in tokens[0]:
        raise ValueError(f"--candidate takes a label, then KEY=VALUE overrides, got {tokens!r}")
    try:
        return tokens[0], dict(_override(text) for text in tokens[1:])  # read as --pair reads them
    except ValueError:
        raise ValueError(f"--candidate {tokens[0]!r}: expected KEY=VALUE overrides, got {tokens[1:]!r}") from None


def roles(lead: float, thresholds: dict) -> str:
    """The teacher roles a mean validation lead over the student allows (the report's gates)."""
    out = [name for name, key in (("main", "teacher_lead"), ("assistant", "assistant_lead"))
           if lead >= thresholds[key]]
    return " and ".join(out) or "none"


def rows_of(arms: dict, seeds, runs) -> pd.DataFrame:
    rows = []
    for (label, seed), run in zip(((a, s) for a in arms for s in seeds), runs):
        if run is None:
            continue
        f = run.final
        rows.append(dict(arm=label, seed=seed, model=run.config.model, binary=run.config.model_options().get(
            "binary", True), val_top1=f.get("val_top1"), test_top1=f["test_top1"],
            train_eval_top1=f.get("train_eval_top1"), gap=f.get("train_eval_top1", np.nan) - f["test_top1"],
            wall_s=run.record["wall_s"], digest=run.digest))
    frame = pd.DataFrame(rows)
    if len(frame):
        base = frame[frame.arm == STUDENT].set_index("seed")["val_top1"]
        frame["val_lead"] = frame["val_top1"] - frame["seed"].map(base)
    return frame


def summary(frame: pd.DataFrame, thresholds: dict) -> pd.DataFrame:
    out = []
    for arm, part in frame.groupby("arm", sort=False):
        lead = part["val_lead"].dropna()
        out.append(dict(arm=arm, runs=len(part), val_top1_mean=part["val_top1"].mean(),
                        test_top1_mean=part["test_top1"].mean(), gap_mean=part["gap"].mean(),
                        val_lead_mean=lead.mean() if len(lead) else np.nan,
                        val_lead_min=lead.min() if len(lead) else np.nan,
                        val_lead_max=lead.max() if len(lead) else np.nan,
                        roles="—" if arm == STUDENT or not len(lead) else roles(lead.mean(), thresholds),
                        wall_s_median=part["wall_s"].median()))
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001],
                    help="choice seeds (each draws its own training subset; never the report's)")
    ap.add_argument("--candidate", nargs="+", action="append", metavar="LABEL [KEY=VALUE ...]",
                    help="a candidate teacher: a label, then TrainConfig overrides of the CE student (repeat for "
                         "several; default: the student's float twin)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--budget-min", type=float, help="start no run that would not end within MIN minutes")
    ap.add_argument("--csv")
    args = ap.parse_args()
    if any(s < 1000 for s in args.seeds):
        ap.error(f"--seeds: choice seeds start at 1000 (the report's seeds are small integers), got {args.seeds}")
    try:
        candidates = dict(parse_candidate(t) for t in args.candidate or ())
    except ValueError as e:
        ap.error(str(e))
    ledger = Ledger(ledger_dir(args.profile, choice=True))
    study = Study("02_overfitting_analysis", profile=args.profile, regime="overfitting",
                  out_dir=ROOT / "reports" / ".scratch", ledger=ledger.root)
    if not candidates:
        candidates = {f"{study.settings['model']} float twin": dict(FLOAT_TWIN)}
    arms = {STUDENT: {}, **candidates}
    try:  # every configuration checked before anything trains
        configs = [study.config(evaluate="end", seed=s, **overrides) for overrides in arms.values()
                   for s in args.seeds]
    except (TypeError, ValueError) as e:
        ap.error(f"--candidate: {e}")
    if args.budget_min:
        os.environ[DEADLINE_ENV] = str(time.time() + 60 * args.budget_min)
    print(f"capacity teachers, {args.profile} profile, over-fitting regime ({study.settings.get('train_subset')} "
          f"images, {study.settings.get('epochs')} epochs): {len(arms)} arms x seeds {args.seeds}, choice ledger "
          f"{ledger.root}", flush=True)
    runs = run_many(configs, workers=args.workers, threads=1, ledger=ledger, partial=True)
    ledger.write_index()
    frame = rows_of(arms, args.seeds, runs)
    thresholds = study.profile.thresholds
    fmt = lambda v: f"{v:.2f}"  # noqa: E731
    print(frame.drop(columns="digest").to_string(index=False, float_format=fmt))
    table = summary(frame, thresholds) if len(frame) else pd.DataFrame()
    print(table.to_string(index=False, float_format=fmt))
    print(f"roles: a main teacher leads the student by >= {thresholds['teacher_lead']} points of validation top-1, "
          f"an assistant by >= {thresholds['assistant_lead']} (the report's gates)")
    missing = sum(r is None for r in runs)
    if missing:
        print(f"{missing} of {len(runs)} runs wait for the next part: the same command continues")
    csv = Path(args.csv or report_dir(args.profile) / "tables" / "capacity_teachers.csv")
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False, float_format="%.4f")
    print(f"wrote {csv}")


if __name__ == "__main__":
    try:
        main()
    except RunsWaiting as e:
        sys.exit(f"capacity teachers: {len(e.configs)} runs wait for the next part")
