"""The report's robustness benchmarks run end to end at the smoke profile (seconds) and write what the report reads."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--profile", "smoke", *args],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_training_length_writes_one_row_per_claim_and_length(tmp_path):
    out = _run("training_length.py", "--full-epochs", "1", "2", "--overfitting-epochs", "1",
               "--csv", str(tmp_path / "t.csv"), "--figure", str(tmp_path / "t.png"))
    df = pd.read_csv(tmp_path / "t.csv")
    assert (tmp_path / "t.png").stat().st_size > 0 and "machine:" in out
    assert df.groupby("claim")["epochs"].apply(list).to_dict() == {
        "ELM + IR beat neither": [1, 2], "BNext's block beats ReActNet's": [1, 2],
        "two teachers beat the strong one": [1], "RandAugment on crop + flip helps": [1]}
    assert (df["delta"] == df["mean_a"] - df["mean_b"]).all()  # the difference of the two sides' seed means
    assert df[["mean_a", "mean_b"]].stack().between(0, 100).all() and (df["minutes_per_run"] > 0).all()
    assert (df["images_seen"] == df["epochs"] * df["images_seen"].iloc[0] // df["epochs"].iloc[0]).all()
    assert set(df["verdict"]) <= {"inconclusive"}  # one seed a side at the smoke profile


def test_training_length_lists_the_headline_claims_a_profile_cuts(tmp_path, monkeypatch):
    """A cut comparison is a row without numbers (the table says what was left out) and no panel."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import training_length
    from bnext_lib.verdicts import cut

    figures = []
    monkeypatch.setattr(training_length, "save_figure", lambda fig, path: figures.append(fig))

    rows = [{"claim": "kept", "comparison": "a > b", "regime": "full", "epochs": e, "delta": d, "ci_low": d - 1,
             "ci_high": d + 1, "p_value": 0.01, "verdict": "reproduced"} for e, d in ((1, 1.0), (2, 1.5))]
    rows.append({"claim": "cut one", "comparison": cut("x", "y", "x cut")["comparison"], "regime": "full",
                 "epochs": 1, "verdict": "not tested"})
    training_length.figure(pd.DataFrame(rows), tmp_path / "f.png")
    assert [ax.get_title() for ax in figures[0].axes] == ["kept"]


@pytest.mark.slow
def test_kernel_variance_compares_the_same_seeds_under_two_kernel_settings(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from kernel_variance import CAPPED

    out = _run("kernel_variance.py", "--capped-runs", str(tmp_path / "capped"), "--csv", str(tmp_path / "k.csv"))
    df = pd.read_csv(tmp_path / "k.csv")
    per_run = df.dropna(subset=["default_kernels"])
    assert list(per_run["variant"]) == ["CE only (the CE student)", "single strong", "two, adaptive (batch)"]
    assert (per_run["difference"] == per_run["avx2_kernels"] - per_run["default_kernels"]).all()
    assert df["verdict"].dropna().tolist() == ["inconclusive", "inconclusive"] and "seed std" in out
    # each setting's comparison is the difference of that setting's per-run values (one seed a side at smoke)
    top1 = {(v.removesuffix(" (the CE student)"), k): x for v, d, c in
            zip(per_run["variant"], per_run["default_kernels"], per_run["avx2_kernels"])
            for k, x in (("default kernels", d), ("AVX2 kernels", c))}
    for comparison, delta in df.dropna(subset=["delta"])[["variant", "delta"]].itertuples(index=False):
        pair, kernels = comparison.split(" under ")
        a, b = pair.split(" > ")
        assert delta == pytest.approx(top1[a, kernels] - top1[b, kernels])
    capped = tmp_path / "capped"
    assert len(list(capped.glob("*/record.json"))) == 3  # the three student runs, trained under the capped kernels
    records = [json.loads(p.read_text()) for p in (capped / "ledger" / "smoke").glob("*.json")]
    # recorded in a ledger of their own under the capped kernels, beside the teachers copied in from the default one
    capped_records = [r for r in records if r["machine"].get("kernel_caps") == CAPPED]
    assert len(capped_records) == 3 and all(not r["config"]["model"].startswith("timm:") for r in capped_records)
    assert all(r["config"]["model"].startswith("timm:") for r in records if r not in capped_records)


@pytest.mark.slow
def test_capacity_teachers_measures_each_candidate_s_lead_over_the_binary_student_of_its_seed(tmp_path):
    """Each candidate's validation lead is its top-1 minus the binary CE student's at the same choice seed (the same
    training subset); the summary names the roles the mean lead allows under the profile's thresholds."""
    csv = tmp_path / "c.csv"
    out = _run("capacity_teachers.py", "--seeds", "1000", "1001", "--candidate", "pico twin", "binary=false",
               "precise_bn=4", "--csv", str(csv))
    df = pd.read_csv(csv)
    assert sorted(df["arm"].unique()) == ["binary student (CE)", "pico twin"] and len(df) == 4
    assert set(df.loc[df.arm == "pico twin", "binary"]) == {False}
    for seed, part in df.groupby("seed"):
        base = part.loc[part.arm == "binary student (CE)", "val_top1"].item()
        assert part["val_lead"].round(4).tolist() == (part["val_top1"] - base).round(4).tolist()
    assert "roles: a main teacher leads the student by >= 4.0 points" in out


@pytest.mark.parametrize("args, message", [
    (["--seeds", "3"], "choice seeds start at 1000"),
    (["--candidate", "x", "binary=maybe"], "binary must be true or false"),
    (["--candidate", "model=bnext_nano"], "takes a label, then KEY=VALUE"),
])
def test_capacity_teachers_refuses_bad_input_before_anything_trains(args, message, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import capacity_teachers

    monkeypatch.setattr(sys, "argv", ["capacity_teachers.py", "--profile", "smoke", *args])
    monkeypatch.setattr(capacity_teachers, "run_many", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit):
        capacity_teachers.main()
    assert message in capsys.readouterr().err
