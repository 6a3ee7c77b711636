"""How much do CPU kernels move a verdict? The CE student and one headline comparison, same seeds, trained under
this machine's default kernels and under oneDNN/ATen capped at AVX2 (what an older or another vendor's x86 CPU
runs), side by side with the spread between seeds.

    .venv/bin/python benchmarks/kernel_variance.py --profile cpu

A binary network turns a last-bit difference into a flipped sign, so a run under other kernels takes another path:
this is one more source of variance, like the seed. The capped runs are trained in a child process with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, their own run cache (``$BNEXT_RUNS``: ``data/runs-avx2``) and
ledger (``$BNEXT_LEDGER``: ``data/runs-avx2/ledger``: the same digests as the default runs), and
their own torch.compile cache (one filled under other kernels must not be reused); the default-kernel runs are the
report's own (from the run cache after ``make report``). ``--regime overfitting`` (the default): the CE student of
the over-fitting regime and the headline distillation comparison (two teachers, adaptive α, against the strong
teacher alone), with the teachers copied from the default cache, so that only the students' kernels differ;
``--regime full``: the ELM-Attention + Info-Recoupling ablation's two ends (BNext, which is the architecture study's
CE student, against neither module) on the full training set.

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

from bnext_lib.config import teacher_config  # noqa: E402
from bnext_lib.ledger import Ledger  # noqa: E402
from bnext_lib.plan import distillation_recipes  # noqa: E402
from bnext_lib.runs import runs_root  # noqa: E402
from bnext_lib.study import Study  # noqa: E402
from bnext_lib.verdicts import compare  # noqa: E402

CAPPED = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _study(profile: str, regime: str) -> Study:
    name = "01_architecture_study" if regime == "full" else "03_distillation"
    return Study(name, profile=profile, regime=regime, out_dir=ROOT / "reports" / ".scratch")


def variants(study: Study) -> tuple[dict, str, str, str]:
    """``({label: overrides}, CE student label, A, B)`` for the claim "A beats B"."""
    if study.regime == "full":
        return ({"ELM + IR (BNext)": {}, "neither": {"elm_attention": False, "info_recoupling": False}},
                "ELM + IR (BNext)", "ELM + IR (BNext)", "neither")
    r = distillation_recipes(list(study.teachers))
    return ({k: r[k] for k in ("CE only", "single strong", "two, adaptive (batch)")}, "CE only",
            "two, adaptive (batch)", "single strong")


def _copy_teachers(study: Study, into: Ledger) -> None:
    """The teachers' ledger records and committed weights into the capped runs' ledger (the students' kernels are
    what is measured, not the teachers')."""
    import shutil

    for name in study.teachers:
        t_cfg = teacher_config(name, study.config())
        record = study.ledger.get(t_cfg)
        if record is None or into.has(t_cfg):
            continue
        into.put(record)
        src = study.ledger.weights_path(record["digest"])
        if src.exists():
            into.weights_path(record["digest"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into.weights_path(record["digest"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--regime", default="overfitting", choices=["overfitting", "full"])
    ap.add_argument("--capped-runs", default=str(ROOT / "data" / "runs-avx2"), help="run cache of the capped runs")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/kernel_variance.csv"))
    args = ap.parse_args()
    try:
        study = _study(args.profile, args.regime)
    except ValueError as err:
        ap.error(str(err))
    chosen, ce, a, b = variants(study)
    if args.child:  # under the capped kernels, set by the parent
        study.run(chosen)
        return
    default = study.run(chosen)
    # the capped runs have the default runs' digests: they get a run cache and a ledger of their own, which the
    # teachers are copied into
    capped_root = Path(args.capped_runs)
    capped_root.mkdir(parents=True, exist_ok=True)
    capped_ledgers = capped_root / "ledger"
    _copy_teachers(study, Ledger(capped_ledgers / args.profile))
    env = dict(os.environ, **CAPPED, BNEXT_RUNS=str(capped_root), BNEXT_LEDGER=str(capped_ledgers),
               TORCHINDUCTOR_CACHE_DIR=str(ROOT / "build" / "inductor-avx2"))
    subprocess.run([sys.executable, __file__, "--profile", args.profile, "--regime", args.regime, "--child"],
                   env=env, check=True)
    os.environ.update(BNEXT_RUNS=str(capped_root), BNEXT_LEDGER=str(capped_ledgers))
    assert runs_root() == capped_root
    capped = _study(args.profile, args.regime).run(chosen)  # all recorded now, in the capped ledger
    rows = []
    for label in chosen:
        for (lab, seed), run in default.runs.items():
            if lab != label:
                continue
            x, y = run.final["test_top1"], capped.runs[(lab, seed)].final["test_top1"]
            rows.append({"variant": label + (" (the CE student)" if label == ce else ""), "seed": seed,
                         "default_kernels": x, "avx2_kernels": y, "difference": y - x})
    for name, rs in (("default kernels", default), ("AVX2 kernels", capped)):
        r = compare(rs.values(a), rs.values(b), a, b)
        rows.append({"variant": f"{a} > {b} under {name}", "delta": r["delta"], "ci_low": r["ci_low"],
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
