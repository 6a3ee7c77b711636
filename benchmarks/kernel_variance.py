"""How much do CPU kernels move a verdict? The CE student and one headline comparison, same seeds, trained under
this machine's default kernels and under oneDNN/ATen capped at AVX2 (what an older or another vendor's x86 CPU
runs), side by side with the spread between seeds.

    .venv/bin/python benchmarks/kernel_variance.py --profile cpu

A binary network turns a last-bit difference into a flipped sign, so a run under other kernels takes another path:
this is one more source of variance, like the seed. The capped runs are trained in a child process with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, their own run cache (``$BNEXT_RUNS``: ``data/runs-avx2``) and
their own torch.compile cache (one filled under other kernels must not be reused); the default-kernel runs are the
report's own (from the run cache after ``make report``). The comparison is the ELM-Attention + Info-Recoupling
ablation's two ends (BNext, which is also the CE student, against neither module) in the architecture study's
regime.

Prints per seed the test top-1 under both settings and their difference, the seed standard deviation, and the
comparison's verdict under each setting; writes ``--csv``. Asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student_frontier import cpu_name, write_csv  # noqa: E402

from bnext_lib.study import Study  # noqa: E402
from bnext_lib.verdicts import compare  # noqa: E402

VARIANTS = {"ELM + IR (BNext)": {}, "neither": {"elm_attention": False, "info_recoupling": False}}
CAPPED = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _runs(profile: str):
    study = Study("01_architecture_study", profile=profile, out_dir=ROOT / "reports" / ".scratch")
    return study.run(VARIANTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--capped-runs", default=str(ROOT / "data" / "runs-avx2"), help="run cache of the capped runs")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/kernel_variance.csv"))
    args = ap.parse_args()
    try:
        Study("01_architecture_study", profile=args.profile, out_dir=ROOT / "reports" / ".scratch")
    except ValueError as err:
        ap.error(str(err))
    if args.child:  # under the capped kernels, set by the parent
        _runs(args.profile)
        return
    default = _runs(args.profile)
    env = dict(os.environ, **CAPPED, BNEXT_RUNS=args.capped_runs,
               TORCHINDUCTOR_CACHE_DIR=str(ROOT / "build" / "inductor-avx2"))
    subprocess.run([sys.executable, __file__, "--profile", args.profile, "--child"], env=env, check=True)
    os.environ["BNEXT_RUNS"] = args.capped_runs
    capped = _runs(args.profile)  # all cached now
    rows = []
    for label in VARIANTS:
        for (lab, seed), run in default.runs.items():
            if lab != label:
                continue
            a, b = run.final["test_top1"], capped.runs[(lab, seed)].final["test_top1"]
            rows.append({"variant": label, "seed": seed, "default_kernels": a, "avx2_kernels": b, "difference": b - a})
    for name, rs in (("default kernels", default), ("AVX2 kernels", capped)):
        r = compare(rs.values("ELM + IR (BNext)"), rs.values("neither"), "ELM + IR (BNext)", "neither")
        rows.append({"variant": f"BNext vs neither under {name}", "delta": r["delta"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "p_value": r["p_value"], "verdict": r["verdict"]})
    print(f"machine: {cpu_name()}")
    df = write_csv(rows, Path(args.csv))
    per_run = df.dropna(subset=["default_kernels"])
    for label, d in per_run.groupby("variant", sort=False):
        print(f"{label}: |kernel difference| mean {d['difference'].abs().mean():.2f}, max "
              f"{d['difference'].abs().max():.2f} points; seed std {d['default_kernels'].std(ddof=1):.2f} (default),"
              f" {d['avx2_kernels'].std(ddof=1):.2f} (AVX2)")


if __name__ == "__main__":
    main()
