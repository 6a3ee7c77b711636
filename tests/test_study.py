"""Study: parameter checks, settings layering, what a study trains and cuts, and what it writes."""

import math

import pytest

from bnext_lib.report import REPO_ROOT, Study, assemble, combine, compare, distillation_recipes, gate


def test_distillation_recipes():
    rec = distillation_recipes(["w", "m", "s"])
    assert rec["CE only"] == {}
    assert rec["single strong"]["teachers"] == ["s"]
    # the two-teacher runs draw no learning curve: evaluated at the end only; the others are notebook 02's runs too
    assert rec["two, fixed 0.5/0.5"] == {"teachers": ["w", "s"], "kd_weighting": "fixed", "evaluate": "end"}
    assert rec["consecutive (weak→mid, strong)"]["teachers"] == ["w", "m", "s"]
    assert {k for k, r in rec.items() if r.get("evaluate") != "end"} == {"CE only", "single weak", "single strong"}
    two = distillation_recipes(["w", "s"])  # no middle teacher: no consecutive rounds
    assert "consecutive (weak→mid, strong)" not in two
    assert two["two, adaptive (batch)"] == {"teachers": ["w", "s"], "evaluate": "end"}
    with pytest.raises(ValueError, match="at least two teachers"):
        distillation_recipes(["s"])


def test_a_run_evaluated_at_the_end_only_keeps_everything_else(tmp_path):
    s = Study("03_distillation", profile="cpu", device="cpu", out_dir=tmp_path, regime="overfitting")
    rhythm, end = s.config(seed=3), s.config(seed=3, evaluate="end")
    assert (rhythm.eval_every, rhythm.eval_every_last_quarter, rhythm.test_every) == (6, 2, 48)
    assert (end.eval_every, end.eval_every_last_quarter, end.test_every) == (end.epochs, None, None) == (48, None, None)
    others = lambda c: {k: v for k, v in c.to_dict().items() if not k.startswith(("eval_every", "test_every"))}
    assert others(end) == others(rhythm) and end.eval_train and end.val_split == 5000
    with pytest.raises(ValueError, match="evaluate must be 'rhythm' or 'end', got 'never'"):
        s.config(evaluate="never")


@pytest.mark.parametrize("kwargs, message", [
    (dict(profile="laptop"), "unknown profile"),
    (dict(epochs=-1), "epochs must be a positive integer"),
    (dict(epochs=0), "epochs must be a positive integer"),
    (dict(model="bnext_huge"), "model 'bnext_huge' is unknown"),
    (dict(dataset="imagenet22k"), "dataset 'imagenet22k' is unknown"),
    (dict(seeds=[]), "seeds must be"),
    (dict(seeds=[0, -1]), "seeds must be"),
    (dict(seeds="[0, -1]"), "seeds must be"),
    (dict(seeds="zero"), "seeds must be.*got 'zero'"),
    (dict(seeds="[]"), "seeds must be"),
    (dict(seeds=[True]), "seeds must be"),
    (dict(workers=0), "workers must be"),
    (dict(device="tpu"), "device must be"),
    (dict(seeds=[0, 1000]), r"seeds must not be the smoke profile's choice seeds \[1000\].*got \[0, 1000\]"),
])
def test_study_rejects_bad_parameters(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Study("01_architecture_study", out_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written before the check


def test_a_profile_whose_choice_seeds_are_report_seeds_is_refused():
    """A choice is never made on the report's own seeds: a profile that would is an error where it is declared."""
    from bnext_lib.profiles import Profile

    with pytest.raises(ValueError, match=r"choice seeds must never be report seeds, \[3\] are both"):
        Profile("x", seeds=(0, 1), headline_seeds=(0, 1, 3), choice_seeds=(3, 1000))
    with pytest.raises(ValueError, match="no choice seeds"):
        Profile("x", choice_seeds=())
    assert Profile("x", seeds=(0, 1)).choice_seeds == (1000,)


@pytest.mark.parametrize("text", ["[0, 1, 2]", "0,1,2", " [0,1, 2,] "])
def test_study_reads_seeds_as_papermill_passes_them(text, tmp_path):
    """``papermill -p seeds '[0, 1, 2]'`` hands the notebook the string, not a list."""
    assert Study("03_distillation", seeds=text, out_dir=tmp_path).seeds == (0, 1, 2)


def test_study_config_layers(tmp_path):
    s = Study("03_distillation", profile="smoke", epochs=2, seeds=[3], out_dir=tmp_path)
    cfg = s.config(augment="none")
    assert (cfg.model, cfg.epochs, cfg.augment, cfg.train_subset) == ("bnext_pico", 2, "none", 512)
    assert s.seeds == (3,) and s.record.key == "03"
    assert Study("01_architecture_study", profile="cpu", out_dir=tmp_path).config().compile


def test_another_run_length_keeps_the_warmup_share(tmp_path):
    """A study (or benchmark) that changes the epochs keeps the profile's warm-up as the same share of the run."""
    from bnext_lib.profiles import get_profile, rescaled_warmup

    cpu = get_profile("cpu")
    share = cpu.train["warmup_epochs"] / cpu.train["epochs"]
    for regime in ("full", "overfitting"):
        s = Study("02_overfitting_analysis", profile="cpu", epochs=6, out_dir=tmp_path)
        cfg = s.config(regime)
        assert cfg.epochs == 6 and cfg.warmup_epochs == pytest.approx(share * 6, abs=1e-6)
    assert rescaled_warmup(None, 2, 6) is None  # the official 5/512 of the run needs no rescaling


def test_study_outputs(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    s = Study("02_overfitting_analysis", out_dir=tmp_path)
    s.table(pd.DataFrame({"a": [1.0]}), "t", "a table")
    fig, ax = plt.subplots()
    s.figure(fig, "f", "a figure")
    s.record.claim("k", "a claim", {"verdict": "inconclusive", "text": "1 vs 2"}, "table 02_t")
    tested = combine([compare([3.0, 3.1, 2.9], [1.0, 1.1, 0.9], "A", "B"), compare([1, 2, 3], [2, 1, 3], "C", "D")])
    s.record.claim("t", "a tested claim", tested, "table 02_t")
    gap = s.record.regime_check("CE student train-minus-test gap", 1.5, 3.0)
    teacher = s.record.regime_check("strongest teacher top-1", 94.0, 93.0)
    assert not gap["passed"] and teacher["passed"]
    s.record.claim("g", "a gated claim", gate(compare([3.0, 3.1, 2.9], [1.0, 1.1, 0.9]), [gap, teacher]), "x")
    with pytest.raises(ValueError, match="verdict must be"):
        s.record.claim("k", "a claim", {"verdict": "maybe", "text": ""}, "x")
    s.finish()
    for f in ("tables/02_t.csv", "tables/02_t.md", "figures/02_f.png", "figures/02_f.svg",
              "results/02_overfitting_analysis.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    report = assemble(tmp_path).read_text()
    assert "| a claim | **inconclusive** | 1 vs 2 | 02_overfitting_analysis: table 02_t |" in report
    assert "![a figure](figures/02_f.png)" in report and "**a table**" in report
    claims = pd.read_csv(tmp_path / "claims.csv")
    assert list(claims.columns[:16]) == ["claim", "source", "primary", "comparison", "verdict", "test", "paired",
                                         "delta", "ci_low", "ci_high", "boot_low", "boot_high", "p_value",
                                         "p_opposite", "p_improve", "detectable"]
    rows = claims[claims.claim == "a tested claim"]
    assert rows.comparison.tolist() == ["A > B", "C > D"] and rows.verdict.tolist() == ["reproduced", "inconclusive"]
    assert (rows.claim_verdict == "inconclusive").all() and (rows.n_a == 3).all()
    assert rows.delta.iloc[0] == pytest.approx(2.0) and rows.ci_low.iloc[0] > 0
    gated = claims[claims.claim == "a gated claim"]
    assert gated.verdict.tolist() == ["not tested"] and gated.delta.iloc[0] == pytest.approx(2.0)
    checks = pd.read_csv(tmp_path / "tables" / "regime_checks.csv")
    assert list(checks.columns) == ["study", "check", "value", "threshold", "passed", "of"]
    assert checks.passed.tolist() == [False, True]


@pytest.mark.slow
def test_cut_variants_are_not_trained_and_their_comparisons_not_tested(tmp_path, monkeypatch):
    """A profile's cut patterns drop variants before training; a claim keeps the comparisons that ran, and the
    regime checks are measured from the runs."""
    import dataclasses

    monkeypatch.delenv("BNEXT_RUNS")  # the runs under the test's data root, and a ledger of its own
    monkeypatch.setenv("BNEXT_LEDGER", str(tmp_path / "ledger"))

    s = Study("01_architecture_study", out_dir=tmp_path)
    tiny = dict(model="bnext_pico", dataset="synthetic", epochs=1, batch_size=32, train_subset=64, test_subset=32,
                augment="none", data_root=str(tmp_path / "data"), eval_train=True)
    s.profile = dataclasses.replace(s.profile, train=dict(tiny, teacher_epochs=1), cut=("ELM *",), workers=1,
                                    threads=1, teachers=("timm:resnet10t",), overfitting=dict(train_subset=48))
    assert [c.model for c in s.prerequisites()] == ["timm:resnet10t", "bnext_pico"]
    assert s.prerequisites()[1].train_subset == 48 and s.prerequisites()[1] == s.config("overfitting", seed=0)
    runs = s.run({"both": {}, "ELM only": {"info_recoupling": False}, "neither": {"elm_attention": False,
                                                                                  "info_recoupling": False}},
                 prefetch=True)
    assert runs.labels == ["both", "neither"] and list(runs.cut) == ["ELM only"]
    # the two runs, the teacher and the over-fitting regime's CE student (what the later studies start from)
    assert s.trained == 2 and len(list((tmp_path / "data" / "runs").glob("[!.]*"))) == 4  # the locks aside
    part = runs.compare("both", "ELM only")
    assert part["verdict"] == "not tested" and part["cut"] and "cut at the smoke profile" in part["text"]
    assert combine([part])["verdict"] == "not tested"
    assert combine([part, runs.compare("both", "neither")])["verdict"] == "inconclusive"  # 1 seed: inconclusive
    assert any("'ELM only'" in n for n in s.notes)
    nothing = s.run({"ELM alone": {"info_recoupling": False}})  # a study whose variants are all cut
    assert nothing.labels == [] and nothing.table().empty and nothing.compare("ELM alone", "both")["cut"]
    (student,) = s.check_student(runs, "both")  # no validation split in this profile: the test set
    assert student["value"] == pytest.approx(runs.values("both")[0]) and student["passed"] is False  # 89 % bar
    assert "test top-1" in student["check"]
    gap, fit, steps, rise = s.check_overfitting(runs, "both")
    row, cfg = runs.df.iloc[0], runs.runs[("both", 0)].config
    assert gap["value"] == pytest.approx(row["train_eval_top1"] - row["test_top1"])
    assert fit["value"] == pytest.approx(row["train_eval_top1"])
    assert steps["value"] == cfg.epochs * (cfg.train_subset // cfg.batch_size)
    assert math.isnan(rise["value"]) and not rise["passed"]  # one evaluation: no slope, so the check fails


def test_a_recipe_the_profile_cannot_form_is_cut_not_missing():
    """With two teachers there is no consecutive recipe: at a profile that cuts it, its comparison is cut (not a
    KeyError in notebook 03); a label nobody cut still raises."""
    import pandas as pd

    from bnext_lib.profiles import Profile
    from bnext_lib.report import RunSet

    df = pd.DataFrame({"label": ["two, adaptive (batch)"] * 3, "test_top1": [81.0, 81.5, 82.0]})
    rs = RunSet({}, df, {}, Profile("cpu", cut=("consecutive*",)))  # a profile whose cut names consecutive KD
    assert set(distillation_recipes(["weak", "strong"])) == set(distillation_recipes(["weak", "mid", "strong"])) - {
        "consecutive (weak→mid, strong)"}
    res = rs.compare("consecutive (weak→mid, strong)", "two, adaptive (batch)")
    assert res["verdict"] == "not tested" and res["cut"] and "cut at the cpu profile" in res["text"]
    with pytest.raises(KeyError, match="no runs labelled 'two, typo'"):
        rs.compare("two, typo", "two, adaptive (batch)")


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_every_profile_defines_valid_studies(profile, tmp_path):
    """Every configuration a profile's notebooks would train validates (the paper profile is never run here)."""
    from bnext_lib.models import EARLIER_BLOCKS

    s = Study("04_augmentation_ablation", profile=profile, device="cpu", out_dir=tmp_path, regime="overfitting")
    assert len(s.teachers) >= 2 and len(s.sizes) >= 1 and len(s.seeds) >= 1
    for recipe in distillation_recipes(list(s.teachers)).values():
        for size in s.sizes:
            for preset in ("none", "basic", "randaugment", "mixup", "cutmix", "random_erasing", "released"):
                s.config(**{**recipe, "model": size, "augment": preset}).validate()
    full = Study("01_architecture_study", profile=profile, device="cpu", out_dir=tmp_path)
    baselines = EARLIER_BLOCKS[full.settings["model"]]
    for variant in ({"elm_attention": False}, {"info_recoupling": False}, {"temperature_reach": 1e-3},
                    *({"model": name} for name in baselines.values())):
        full.config(**variant).validate()
    if profile in ("cpu", "gpu"):  # the over-fitting regime is a subset of the full regime's training set
        assert s.settings["train_subset"] < (full.settings["train_subset"] or 60000) and s.settings["eval_train"]


def test_each_profile_reports_into_its_own_folder():
    from bnext_lib.study import report_dir

    reports = REPO_ROOT / "reports"
    assert [report_dir(p) for p in ("cpu", "smoke", "gpu", "paper")] == [
        reports, reports / ".scratch", reports / "gpu", reports / "paper"]


def test_the_cpu_profile_draws_each_seed_its_subset_and_runs_every_comparison_at_five_seeds(tmp_path, monkeypatch):
    import bnext_lib.study as study_mod
    from bnext_lib.runs import RunsWaiting

    s = Study("03_distillation", profile="cpu", device="cpu", out_dir=tmp_path, regime="overfitting")
    assert s.seeds == (0, 1, 2, 3, 4) and s.headline_seeds == (0, 1, 2, 3, 4)  # the pre-registration's floor
    assert s.config(seed=3).subset_seed == 3 and s.config(seed=3, subset_seed=0).subset_seed == 0
    full = Study("01_architecture_study", profile="cpu", device="cpu", out_dir=tmp_path)
    assert full.config(seed=3).subset_seed == 0  # no subset: nothing to draw, the digest stays the seed's alone
    assert Study("01_architecture_study", profile="cpu", seeds=[7], out_dir=tmp_path).headline_seeds == (7,)
    trained = []
    monkeypatch.setattr(study_mod, "run_many", lambda cfgs, **kw: trained.extend(cfgs) or [None] * len(cfgs))
    with pytest.raises(RunsWaiting):  # the fake runs never come: they wait; the configurations are what is checked
        s.run({"CE only": {}, "single strong": {"teachers": [s.teachers[-1]]}}, headline=["single strong"])
    assert [(c.teachers != (), c.seed) for c in trained] == [(False, seed) for seed in range(5)] + [
        (True, seed) for seed in range(5)]


@pytest.mark.parametrize("notebooks, prefetched", [(None, True), ("01_architecture_study", False),
                                                   ("01_architecture_study,03_distillation", True)])
def test_a_study_prefetches_only_for_the_notebooks_the_report_runs(tmp_path, monkeypatch, notebooks, prefetched):
    import bnext_lib.study as study_mod
    from bnext_lib.runs import RunsWaiting

    if notebooks is None:
        monkeypatch.delenv(study_mod.NOTEBOOKS_ENV, raising=False)
    else:
        monkeypatch.setenv(study_mod.NOTEBOOKS_ENV, notebooks)
    s = Study("01_architecture_study", profile="cpu", device="cpu", out_dir=tmp_path)
    trained = []
    monkeypatch.setattr(study_mod, "run_many", lambda cfgs, **kw: trained.extend(cfgs) or [None] * len(cfgs))
    with pytest.raises(RunsWaiting):
        s.run({"BNext": {}}, prefetch=True)
    assert any(c.model.startswith("timm:") or c.model.startswith("resnet") for c in trained) == prefetched
