"""What evaluating under bf16 autocast costs: the cached time-to-accuracy runs of the adopted recipe (trained under
bf16 autocast) evaluated on the validation split in float32 and under bf16, model by model. The cpu profile
evaluates under the training's autocast (``TrainConfig.eval_amp``) because a compiled bf16 evaluation is about 3x
a float32 eager one on the AMD EPYC this was chosen on; this table is what says it changes no accuracy.

    .venv/bin/python benchmarks/eval_precision.py --only fast fast+nlr4 fast+n40000 --seeds 0 1 2 10 11

Runs not in the cache are skipped (nothing is trained). Prints and writes ``--csv``. Asserts nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student_frontier import cpu_name, write_csv  # noqa: E402
from time_to_accuracy import candidate_config  # noqa: E402

from bnext_lib.runs import is_done, run_one  # noqa: E402
from bnext_lib.train import evaluate, evaluation_splits  # noqa: E402


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=["fast", "fast+nlr4", "fast+n40000"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 10, 11])
    ap.add_argument("--csv", default=str(ROOT / "reports/tables/eval_precision.csv"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cpu, rows = torch.device("cpu"), []
    for name in args.only:
        for seed in args.seeds:
            cfg = candidate_config(name, seed)
            if not is_done(cfg):
                continue
            run = run_one(cfg)  # cached: read, not trained
            splits, augmenter = evaluation_splits(dataclasses.replace(run.config, eval_train=False))
            model = run.load_model()
            fp32 = evaluate(model, splits["val"], augmenter, cpu)[1]
            bf16 = evaluate(model, splits["val"], augmenter, cpu, autocast={"device_type": "cpu",
                                                                            "dtype": torch.bfloat16})[1]
            rows.append({"candidate": name, "seed": seed, "val_top1_float32": fp32, "val_top1_bf16": bf16,
                         "difference": bf16 - fp32})
            print(f"{name} seed {seed}: validation top-1 float32 {fp32:.2f}, bf16 {bf16:.2f} ({bf16 - fp32:+.2f})")
    df = write_csv(rows, Path(args.csv))
    d = df["difference"]
    print(f"machine: {cpu_name()}; bf16 minus float32 over {len(d)} models: mean {d.mean():+.3f}, "
          f"min {d.min():+.2f}, max {d.max():+.2f} points")


if __name__ == "__main__":
    main()
