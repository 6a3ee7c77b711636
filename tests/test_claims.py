"""The pre-registered protocol (bnext_lib/claims.py): every claim a notebook records is registered and judged as
registered; the power table follows from the measured standard deviations; docs/protocol.md is its current print."""
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from bnext_lib import claims
from bnext_lib.report import RunSet, Study
from bnext_lib.verdicts import seeds_needed

ROOT = Path(__file__).resolve().parents[1]


def _runset(values: dict, metric: str = "test_top1") -> RunSet:
    rows = [dict(label=label, seed=seed, **{metric: v}) for label, vs in values.items() for seed, v in enumerate(vs)]
    return RunSet({}, pd.DataFrame(rows), {})


def test_every_claim_a_notebook_records_is_registered_for_that_notebook():
    keys = {}
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        src = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        found = re.findall(r'study\.(?:claim|verdict)\("(\w+)"', src)
        found += [k for group in re.findall(r'for key in \(([^)]*)\)', src) for k in re.findall(r'"(\w+)"', group)]
        keys.update({k: nb.stem for k in found})
    assert keys == {k: c.notebook for k, c in claims.CLAIMS.items()}


def test_every_claim_is_complete():
    for c in claims.CLAIMS.values():
        assert c.source in claims.SOURCE_KINDS and c.origin in ("paper", "project") and c.reference, c.key
        assert c.regime in ("full", "overfitting", "none") and (c.regime == "none") == (not c.parts), c.key
        assert c.effect > 0 and c.effect_source and c.where, c.key
        assert 0 <= c.primary < max(1, len(c.parts)), c.key


def test_a_claim_is_judged_as_registered_paired_by_seed():
    rs = _runset({"KD from big": [85.0, 85.6, 84.9, 85.4, 85.2], "CE only": [84.1, 84.8, 84.2, 84.5, 84.3]})
    out = claims.judge(claims.get("kd_vs_ce"), rs, (), strong="big")
    assert out["verdict"] == "reproduced" and out["parts"][0]["paired"]
    assert out["parts"][0]["comparison"] == "KD from big > CE only"


def test_does_not_help_is_tested_as_equivalence_within_the_registered_margin():
    near = {"micro / none": [84.0, 84.3, 84.1, 84.2, 84.0, 84.1],
            "micro / mixup": [84.05, 84.25, 84.1, 84.2, 84.05, 84.1], "micro / cutmix": [84.0, 84.3, 84.15, 84.2,
                                                                                         84.0, 84.05]}
    out = claims.judge(claims.get("label_mixing"), _runset(near), (), sizes=("micro",))
    assert out["verdict"] == "reproduced" and {p["test"] for p in out["parts"]} == {"TOST equivalence"}
    assert all(p["margin"] == claims.get("label_mixing").effect for p in out["parts"])
    worse = dict(near, **{"micro / mixup": [81.0, 81.2, 81.1, 81.3, 81.0, 81.2]})  # mixup hurts by 3 points
    assert claims.judge(claims.get("label_mixing"), _runset(worse), (), sizes=("micro",))["verdict"] == "contradicted"


def test_a_gain_specific_to_binary_networks_is_the_difference_of_gains_paired_by_seed():
    """randaugment_binary: per seed, (binary released − basic) − (float twin released − basic), one difference a
    seed; a gain both networks share says nothing binary-specific and is not reproduced."""
    import numpy as np

    seeds = range(6)
    shift = np.array([0.3, -0.2, 0.1, 0.4, -0.1, 0.0])  # what a seed does to every arm alike (subset, order)
    def arms(bin_gain, fp_gain):
        return {"m / basic": 84 + shift, "m / released": 84 + bin_gain + shift + 0.05 * np.sin(seeds),
                "m float twin / basic": 90 + shift, "m float twin / released": 90 + fp_gain + shift,
                "m / none": 83 + shift, "m / randaugment": 83 + bin_gain + shift,
                "m float twin / none": 89 + shift, "m float twin / randaugment": 89 + fp_gain + shift + 0.05}
    judge = lambda values: claims.judge(claims.get("randaugment_binary"), _runset(  # noqa: E731
        {k: list(v) for k, v in values.items()}), (), student="m")
    out = judge(arms(2.0, 0.5))
    assert out["verdict"] == "reproduced" and len(out["parts"]) == 2
    first = out["parts"][0]
    assert first["paired"] and first["delta"] == pytest.approx(1.5, abs=0.05)
    assert first["comparison"] == "m / released − m / basic > m float twin / released − m float twin / basic"
    assert judge(arms(1.0, 1.0))["verdict"] != "reproduced"  # the same gain in full precision
    shared = _runset({k: list(v) for k, v in arms(2.0, 0.5).items() if "twin / none" not in k})
    cut = claims.judge(claims.get("randaugment_binary"), shared, (), student="m")
    assert cut["verdict"] == "partly tested" and cut["parts"][1]["cut"]


def test_a_part_whose_arm_the_profile_lacks_is_cut_and_the_claim_partly_tested():
    rs = RunSet({}, pd.DataFrame([dict(label=l, seed=s, test_top1=t, gap=g) for l, ts, gs in (
        ("KD from weak", [84.0, 84.2, 84.1], [3.0, 3.2, 3.1]), ("KD from strong", [84.1, 84.3, 84.2], [5.0, 5.3, 5.1]))
        for s, (t, g) in enumerate(zip(ts, gs))]), {})
    out = claims.judge(claims.get("overfitting"), rs, (), weak="weak", strong="strong", middle="a middle teacher")
    assert out["verdict"] == "partly tested" and out["parts"][1]["cut"]
    assert "KD from a middle teacher not run" in out["parts"][1]["text"]


def test_a_failed_regime_check_gates_the_claim():
    rs = _runset({"KD from big": [85.0, 85.6, 84.9], "CE only": [84.1, 84.8, 84.2]})
    check = dict(check="CE student train-minus-test gap", value=2.0, threshold=">= 8", passed=False)
    assert claims.judge(claims.get("kd_vs_ce"), rs, [check], strong="big")["verdict"] == "not tested"


def test_a_study_records_only_registered_claims_of_its_own_notebook(tmp_path):
    s = Study("02_overfitting_analysis", out_dir=tmp_path)
    with pytest.raises(KeyError, match="not pre-registered"):
        s.claim("made_up", {"verdict": "reproduced", "text": ""})
    with pytest.raises(ValueError, match="registered for 03_distillation"):
        s.claim("adaptive", {"verdict": "inconclusive", "text": ""})
    entry = s.verdict("kd_vs_ce", _runset({"KD from big": [85.0, 85.6, 84.9], "CE only": [84.1, 84.8, 84.2]}),
                      strong="big")
    assert entry["claim"] == claims.get("kd_vs_ce").statement and entry["where"].endswith("table 02_overfitting")


def test_the_size_claim_compares_each_step_up_to_the_profile_student():
    parts = claims.parts_of(claims.get("size_order"), **claims.size_roles("bnext_micro"))
    assert [(p.better, p.worse) for p in parts] == [("bnext_nano", "bnext_pico"), ("bnext_micro", "bnext_nano")]
    assert len(claims.parts_of(claims.get("size_order"), **claims.size_roles("bnext_pico"))) == 1  # smoke


def test_the_power_table_follows_from_sigma_and_the_holm_level():
    sig = {"full": {"test_top1": 0.3}, "overfitting": {"test_top1": 0.6, "gap": 0.7}}
    t = claims.power_table("cpu", sigmas=sig)
    family = sum(1 for c in claims.CLAIMS.values() if c.parts)
    c = claims.get("kd_vs_ce")  # one comparison: the plain paired power analysis at alpha / family
    assert t.loc["kd_vs_ce", "seeds_needed"] == seeds_needed(c.effect, 0.6, 0.0, family)
    # five comparisons must all hold: each at 0.8^(1/5) power, so more seeds than one comparison would need
    assert t.loc["elm_ir_order", "seeds_needed"] > seeds_needed(claims.get("elm_ir_order").effect, 0.3, 0.0, family)
    assert (t.seeds_needed.dropna() >= claims.MIN_SEEDS).all()
    # every claim the cpu profile runs at 5 seeds at least; those whose every comparison it cuts, at none
    assert claims.cut_claims("cpu") == {"adaptive": ["two, fixed 0.5/0.5"], "instance": ["two, adaptive (instance)"],
                                        "consecutive": ["consecutive (weak→mid, strong)"]}  # flip-only: no claim's
    assert claims.cut_claims("gpu") == {}
    every_part_cut = {"adaptive", "instance", "consecutive"}
    ran = t[(t.test != "measurement") & ~t.index.isin(every_part_cut)]
    assert (ran.seeds_run >= 5).all() and (t.loc[sorted(every_part_cut), ["seeds_run", "cpu_s"]] == 0).all().all()
    assert t.loc[sorted(every_part_cut), "detectable"].isna().all()
    assert math.isnan(t.loc["landscape", "seeds_needed"])  # roughness: no σ measured on choice seeds
    assert math.isnan(claims.power_table("cpu", sigmas={}).loc["kd_vs_ce", "seeds_needed"])  # nothing measured


def test_docs_protocol_is_the_registry_as_printed(monkeypatch):
    monkeypatch.delenv("BNEXT_LEDGER", raising=False)  # the committed choice ledger's costs (read, never written)
    assert (ROOT / "docs" / "protocol.md").read_text() == claims.protocol_markdown("cpu"), (
        "docs/protocol.md is stale: python -m bnext_lib.claims --profile cpu --markdown docs/protocol.md")


def test_a_profile_of_one_seed_gets_a_power_table_that_detects_nothing():
    """The smoke profile runs one seed: its REPORT.md still prints the protocol, with no detectable effect."""
    t = claims.power_table("smoke", sigmas={"full": {"test_top1": 0.3}, "overfitting": {"test_top1": 0.6, "gap": 0.7}})
    assert (t.loc[t.test != "measurement", "seeds_run"] == 1).all() and t.detectable.isna().all()
    assert "## The pre-registered protocol (smoke profile)" in claims.protocol_markdown("smoke")


def test_the_variance_budget_is_read_from_the_profiles_own_tables(tmp_path, monkeypatch):
    """σ to plan with: the larger of the "all" row's upper 90 % bound and the sources added up; run 0 (every seed
    at the base) is one run shared by every source, counted once; a profile reads its own tables, never the cpu's."""
    import bnext_lib.ledger as ledger_mod

    monkeypatch.setattr(ledger_mod, "report_dir", lambda profile: tmp_path / profile)
    (tmp_path / "gpu" / "tables").mkdir(parents=True)
    pd.DataFrame([dict(source="all (as the report's seeds)", runs=4, sd=0.1, sd_hi90=0.3, gap_sd=0.2),
                  dict(source="initialisation", runs=4, sd=0.6, sd_hi90=1.5, gap_sd=0.4),
                  dict(source="data order", runs=3, sd=0.2, sd_hi90=0.8, gap_sd=0.1)]
                 ).to_csv(tmp_path / "gpu" / "tables" / "variance_budget_overfitting.csv", index=False)
    got = claims.variance_budget("overfitting", "gpu")
    assert got["test_top1"] == pytest.approx(math.sqrt(0.6 ** 2 + 0.2 ** 2))
    assert got["from"] == "the sources added up" and got["runs"] == 4 + 3 + 2
    assert got["gap"] == pytest.approx(max(0.2 * 3, math.sqrt(0.4 ** 2 + 0.1 ** 2)))
    assert claims.variance_budget("overfitting", "cpu") == {}  # the cpu tables (here: none) are not the gpu's
    table = claims.power_table("cpu", costs={})
    assert table.seeds_needed.isna().all()  # nothing measured at cpu here: no seeds asked for


def test_the_pairing_correlation_is_planned_with_its_lower_bound(tmp_path, monkeypatch):
    """ρ from two arms at the same choice seeds (variance_budget.py --pair): Pearson over the shared seeds, the
    lower end of its 90 % Fisher-z interval, floored at 0; the power table asks for fewer seeds with it."""
    import numpy as np

    import bnext_lib.ledger as ledger_mod

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from variance_budget import _override, pairing_row

    assert _override("elm_attention=false") == ("elm_attention", False)
    assert _override("augment=basic") == ("augment", "basic") and _override("epochs=4") == ("epochs", 4)
    shared = np.array([0.0, 0.8, -0.5, 0.3, -0.9, 0.6, 0.1, -0.2])
    pairs = list(zip(84 + shared + 0.1 * np.cos(np.arange(8)), 83 + shared + 0.1 * np.sin(np.arange(8))))
    row = pairing_row("elm_attention=false", pairs)
    assert row["rho"] == pytest.approx(float(np.corrcoef(*zip(*pairs))[0, 1])) and 0 < row["rho_lo90"] < row["rho"]
    assert math.isnan(pairing_row("x", pairs[:3])["rho_lo90"])  # Fisher's z needs four seeds

    monkeypatch.setattr(ledger_mod, "report_dir", lambda profile: tmp_path)
    (tmp_path / "tables").mkdir()
    pd.DataFrame([row, pairing_row("x", pairs[:3])]).to_csv(tmp_path / "tables" / "pairing_overfitting.csv",
                                                          index=False)
    assert claims.pairing("overfitting") == {"rho": pytest.approx(row["rho_lo90"]), "pairs": 1, "runs": 8}
    assert claims.pairing("full") == {}
    sigmas = {"overfitting": {"test_top1": 0.6, "gap": 0.6}, "full": {"test_top1": 0.3}}
    measured = claims.power_table("cpu", sigmas=sigmas, costs={})
    unpaired = claims.power_table("cpu", rho=0.0, sigmas=sigmas, costs={})
    assert measured.loc["kd_vs_ce", "rho"] == pytest.approx(row["rho_lo90"])
    assert measured.loc["kd_vs_ce", "seeds_needed"] < unpaired.loc["kd_vs_ce", "seeds_needed"]
    assert measured.loc["elm_ir_order", "rho"] == 0.0  # the full regime's pairing was not measured


def test_the_roughness_is_planned_with_its_own_sigma_and_pairing(tmp_path, monkeypatch):
    """variance_budget.py --landscapes: each run's roughness is the mean over its direction seeds; its σ between
    seeds (upper 90 % bound) and its own ρ plan the landscape claim, while top-1's claims keep top-1's ρ."""
    import numpy as np

    import bnext_lib.ledger as ledger_mod
    from bnext_lib.landscape import Landscape

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from variance_budget import SOURCES, pairing_row, roughness, table

    grid = np.linspace(-1, 1, 3)

    def fake_run(top1, bumps):  # one slice per direction seed: a flat loss with its centre raised by ``bump``
        derived = {}
        for k, b in enumerate(bumps):
            loss = np.zeros((3, 3))
            loss[1, 1] = -b  # the Laplacian at the one interior point: 4 b, so roughness 4 b
            derived[f"d{k}"] = Landscape(grid, grid, loss, np.zeros((3, 3))).to_dict()
        return type("R", (), dict(final={"test_top1": top1}, record={"derived": derived, "wall_s": 1.0}))()

    runs = [fake_run(89.0 + i / 10, [0.10 + i / 100, 0.12 + i / 100]) for i in range(5)]
    assert roughness(runs[0], ["d0", "d1"]) == (pytest.approx(0.44), pytest.approx(np.std([0.40, 0.48], ddof=1)))
    assert np.isnan(roughness(runs[0], ["d0", "missing"])[0])  # a slice not computed yet
    frame = table([("all", i, None) for i in range(5)], runs, ["d0", "d1"])
    row = frame.iloc[0]
    assert row.source == SOURCES["all"] and row.roughness_runs == 5
    assert row.roughness_sd == pytest.approx(np.std([0.44 + 0.04 * i for i in range(5)], ddof=1))
    assert row.roughness_sd_lo90 < row.roughness_sd < row.roughness_sd_hi90
    assert row.roughness_directions_sd == pytest.approx(np.std([0.40, 0.48], ddof=1))
    assert "roughness_sd" not in table([("all", i, None) for i in range(5)], runs).columns  # no --landscapes

    monkeypatch.setattr(ledger_mod, "report_dir", lambda profile: tmp_path)
    (tmp_path / "tables").mkdir()
    frame.to_csv(tmp_path / "tables" / "variance_budget_full.csv", index=False)
    shared = np.array([0.0, 0.8, -0.5, 0.3, -0.9, 0.6])
    top1 = pairing_row("neither", list(zip(89 + shared, 88 + shared + 0.3 * np.sin(np.arange(6)))))
    rough = pairing_row("neither", list(zip(3 + shared, 3.5 - shared)), metric="roughness")  # anti-correlated
    pd.DataFrame([top1, rough]).to_csv(tmp_path / "tables" / "pairing_full.csv", index=False)
    assert claims.variance_budget("full")["roughness"] == pytest.approx(row.roughness_sd_hi90)
    assert claims.pairing("full") == {"rho": pytest.approx(top1["rho_lo90"]), "pairs": 1, "runs": 6}
    assert claims.pairing("full", metric="roughness")["rho"] == 0.0  # floored at 0
    t = claims.power_table("cpu", costs={}, sigmas={"full": claims.variance_budget("full")})
    assert t.loc["landscape", "sigma"] == pytest.approx(row.roughness_sd_hi90) and t.loc["landscape", "rho"] == 0.0
    family = sum(1 for c in claims.CLAIMS.values() if c.parts)  # three parts, each at 0.8^(1/3), unpaired
    assert t.loc["landscape", "seeds_needed"] == seeds_needed(0.5, row.roughness_sd_hi90, 0.0, family,
                                                              power=0.8 ** (1 / 3))
    assert t.loc["elm_ir_order", "rho"] == pytest.approx(top1["rho_lo90"])


def test_a_pairing_table_keeps_what_other_invocations_measured(monkeypatch):
    """pairing_<regime>.csv: an invocation replaces its arm's rows of the metrics it measured and keeps the rest;
    rows written before the table had a metric column are top-1's, and are read as such."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from variance_budget import merge_pairing

    old = pd.DataFrame([dict(arm="neither", runs=5, rho=0.8, rho_lo90=0.1), dict(arm="basic", runs=4, rho=-0.5,
                                                                               rho_lo90=-0.9)])  # no metric column
    new = pd.DataFrame([dict(arm="neither", metric="test_top1", runs=5, rho=0.7, rho_lo90=0.05),
                        dict(arm="neither", metric="roughness", runs=5, rho=0.3, rho_lo90=-0.4)])
    merged = merge_pairing(old, new)
    assert list(merged.columns) == list(new.columns)
    assert sorted(zip(merged.arm, merged.metric, merged.rho)) == [
        ("basic", "test_top1", -0.5), ("neither", "roughness", 0.3), ("neither", "test_top1", 0.7)]
    again = merge_pairing(merged, new.iloc[:1].assign(rho=0.6))  # top-1 again, without --landscapes' row
    assert sorted(zip(again.arm, again.metric, again.rho)) == [
        ("basic", "test_top1", -0.5), ("neither", "roughness", 0.3), ("neither", "test_top1", 0.6)]


def test_a_pairing_table_without_a_metric_column_is_top1s(tmp_path, monkeypatch):
    import bnext_lib.ledger as ledger_mod

    monkeypatch.setattr(ledger_mod, "report_dir", lambda profile: tmp_path)
    (tmp_path / "tables").mkdir()
    pd.DataFrame([dict(arm="neither", runs=5, rho=0.8, rho_lo90=0.3)]).to_csv(tmp_path / "tables" / "pairing_full.csv",
                                                                             index=False)
    assert claims.pairing("full") == {"rho": 0.3, "pairs": 1, "runs": 5}
    assert claims.pairing("full", metric="roughness") == {}


def test_the_protocol_says_which_claims_a_profile_s_design_cannot_test():
    """The cpu and gpu profiles' teachers learn from the full training set, 55 images per image of the over-fitting
    regime's student: the distilled claims are not testable there, by design; the smoke and paper profiles' teachers
    learn from their students' own images."""
    from bnext_lib.claims import CLAIMS, protocol_markdown, teacher_images_ratio

    assert [teacher_images_ratio(p) for p in ("smoke", "cpu", "gpu", "paper")] == [1.0, 55.0, 55.0, 1.0]
    distilled = [c.key for c in CLAIMS.values() if c.distilled]
    assert distilled == ["overfitting", "kd_vs_ce", "multi_teacher", "adaptive", "instance", "consecutive"]
    assert all(CLAIMS[k].notebook[:2] in ("02", "03") for k in distilled)
    cpu = protocol_markdown("cpu")
    assert f"**Not testable at the cpu profile, by its design: {', '.join(distilled)}.**" in cpu
    assert "learn from 55 training images per image their students learn from" in cpu
    assert "Not testable" not in protocol_markdown("smoke")
