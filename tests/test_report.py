"""The report's library side: verdicts, parameter checks, the run cache, loss landscapes, REPORT.md assembly and
the notebooks' shape. (The notebooks themselves run under ``pytest --nbval-lax`` in ``make test``.)"""

import json
import shutil

import nbformat
import numpy as np
import pytest
import torch
import torch.nn as nn

from bnext_lib.binary import BinaryConv2d, saturated_fraction, set_temperature
from bnext_lib.landscape import filter_normalized_direction, loss_landscape, roughness
from bnext_lib.report import NOTEBOOKS, REPO_ROOT, Study, assemble, combine, distillation_recipes, gate, verdict
from bnext_lib.runs import Run, is_done, run_folder, run_many, run_one
from bnext_lib.verdicts import cut
from bnext_lib.config import TrainConfig, teacher_config

NB_DIR = REPO_ROOT / "notebooks"


# --------------------------------------------------------------------------------------------- verdicts
def test_the_notebooks_verdicts_are_the_statistical_ones():
    """(The rule itself is tested on constructed data in tests/test_verdicts.py.)"""
    from bnext_lib import verdicts
    assert verdict is verdicts.compare and combine is verdicts.combine
    r = verdict([80.1, 80.9, 80.5], [78.2, 79.0, 78.6], "A", "B")
    assert r["verdict"] == "reproduced" and "Δ +1.90" in r["text"] and "n=3/3" in r["text"]


def test_distillation_recipes():
    rec = distillation_recipes(["w", "m", "s"])
    assert rec["CE only"] == {}
    assert rec["single strong"]["teachers"] == ["s"]
    assert rec["two, fixed 0.5/0.5"] == {"teachers": ["w", "s"], "kd_weighting": "fixed"}
    assert rec["consecutive (weak→mid, strong)"]["teachers"] == ["w", "m", "s"]
    two = distillation_recipes(["w", "s"])  # no middle teacher: no consecutive rounds
    assert "consecutive (weak→mid, strong)" not in two and two["two, adaptive (batch)"] == {"teachers": ["w", "s"]}
    with pytest.raises(ValueError, match="at least two teachers"):
        distillation_recipes(["s"])


# --------------------------------------------------------------------------------------------- parameters
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
])
def test_study_rejects_bad_parameters(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Study("01_architecture_study", out_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written before the check


@pytest.mark.parametrize("text", ["[0, 1, 2]", "0,1,2", " [0,1, 2,] "])
def test_study_reads_seeds_as_papermill_passes_them(text, tmp_path):
    """``papermill -p seeds '[0, 1, 2]'`` hands the notebook the string, not a list."""
    assert Study("03_distillation", seeds=text, out_dir=tmp_path).seeds == (0, 1, 2)


def test_study_config_layers(tmp_path):
    s = Study("03_distillation", profile="smoke", epochs=2, seeds=[3], out_dir=tmp_path)
    cfg = s.config(augment="none")
    assert (cfg.model, cfg.epochs, cfg.augment, cfg.train_subset) == ("bnext_pico", 2, "none", 512)
    assert s.seeds == (3,) and s.key == "03"
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
    s.claim("k", "a claim", {"verdict": "inconclusive", "text": "1 vs 2"}, "table 02_t")
    tested = combine([verdict([3.0, 3.1, 2.9], [1.0, 1.1, 0.9], "A", "B"), verdict([1, 2, 3], [2, 1, 3], "C", "D")])
    s.claim("t", "a tested claim", tested, "table 02_t")
    gap = s.regime_check("CE student train-minus-test gap", 1.5, 3.0)
    teacher = s.regime_check("strongest teacher top-1", 94.0, 93.0)
    assert not gap["passed"] and teacher["passed"]
    s.claim("g", "a gated claim", gate(verdict([3.0, 3.1, 2.9], [1.0, 1.1, 0.9]), [gap, teacher]), "x")
    with pytest.raises(ValueError, match="verdict must be"):
        s.claim("k", "a claim", {"verdict": "maybe", "text": ""}, "x")
    s.finish()
    for f in ("tables/02_t.csv", "tables/02_t.md", "figures/02_f.png", "figures/02_f.svg",
              "results/02_overfitting_analysis.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    report = assemble(tmp_path).read_text()
    assert "| a claim | **inconclusive** | 1 vs 2 | 02_overfitting_analysis: table 02_t |" in report
    assert "![a figure](figures/02_f.png)" in report and "**a table**" in report
    claims = pd.read_csv(tmp_path / "claims.csv")
    assert list(claims.columns[:9]) == ["claim", "comparison", "verdict", "delta", "ci_low", "ci_high", "p_value",
                                        "n_a", "n_b"]
    rows = claims[claims.claim == "a tested claim"]
    assert rows.comparison.tolist() == ["A > B", "C > D"] and rows.verdict.tolist() == ["reproduced", "inconclusive"]
    assert (rows.claim_verdict == "inconclusive").all() and (rows.n_a == 3).all()
    assert rows.delta.iloc[0] == pytest.approx(2.0) and rows.ci_low.iloc[0] > 0
    gated = claims[claims.claim == "a gated claim"]
    assert gated.verdict.tolist() == ["not tested"] and gated.delta.iloc[0] == pytest.approx(2.0)
    checks = pd.read_csv(tmp_path / "tables" / "regime_checks.csv")
    assert list(checks.columns) == ["study", "check", "value", "threshold", "passed"]
    assert checks.passed.tolist() == [False, True]


def test_cut_variants_are_not_trained_and_their_comparisons_not_tested(tmp_path):
    """A profile's cut patterns drop variants before training; a claim keeps the comparisons that ran, and the
    regime checks are measured from the runs."""
    import dataclasses

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
    assert s.trained == 2 and len(list((tmp_path / "data" / "runs").iterdir())) == 4
    part = runs.compare("both", "ELM only")
    assert part["verdict"] == "not tested" and part["cut"] and "cut at the smoke profile" in part["text"]
    assert combine([part])["verdict"] == "not tested"
    assert combine([part, runs.compare("both", "neither")])["verdict"] == "inconclusive"  # 1 seed: inconclusive
    assert any("'ELM only'" in n for n in s.notes)
    nothing = s.run({"ELM alone": {"info_recoupling": False}})  # a study whose variants are all cut
    assert nothing.labels == [] and nothing.table().empty and nothing.compare("ELM alone", "both")["cut"]
    (student,) = s.check_student(runs, "both")
    assert student["value"] == pytest.approx(runs.values("both")[0]) and student["passed"] is False  # 89 % bar
    (gap,) = s.check_overfitting(runs, "both")
    row = runs.df.iloc[0]
    assert gap["value"] == pytest.approx(row["train_eval_top1"] - row["test_top1"])


def test_a_recipe_the_profile_cannot_form_is_cut_not_missing():
    """With two teachers there is no consecutive recipe: at a profile that cuts it, its comparison is cut (not a
    KeyError in notebook 03); a label nobody cut still raises."""
    import pandas as pd

    from bnext_lib.profiles import get_profile
    from bnext_lib.report import RunSet

    df = pd.DataFrame({"label": ["two, adaptive (batch)"] * 3, "test_top1": [81.0, 81.5, 82.0]})
    rs = RunSet({}, df, {}, get_profile("cpu"))  # its cut names consecutive KD
    assert set(distillation_recipes(["weak", "strong"])) == set(distillation_recipes(["weak", "mid", "strong"])) - {
        "consecutive (weak→mid, strong)"}
    res = rs.compare("consecutive (weak→mid, strong)", "two, adaptive (batch)")
    assert res["verdict"] == "not tested" and res["cut"] and "cut at the cpu profile" in res["text"]
    with pytest.raises(KeyError, match="no runs labelled 'two, typo'"):
        rs.compare("two, typo", "two, adaptive (batch)")


def test_readme_headline_names_both_regimes(tmp_path, monkeypatch):
    import json

    import bnext_lib.assembly as assembly

    out = tmp_path / "reports"
    (out / "results").mkdir(parents=True)
    claim = {"key": "k", "claim": "a claim", "verdict": "reproduced", "evidence": "", "where": "", "comparisons": []}
    for name, regime, settings in (("01_architecture_study", "full", {"model": "m", "dataset": "d", "epochs": 2}),
                                   ("02_overfitting_analysis", "overfitting",
                                    {"model": "m", "dataset": "d", "epochs": 12, "train_subset": 2000})):
        (out / "results" / f"{name}.json").write_text(json.dumps(
            {"study": name, "profile": "cpu", "regime": regime, "seeds": [0, 1, 2], "settings": settings,
             "claims": [claim], "tables": [], "figures": []}))
    (out / "run.json").write_text(json.dumps({"wall_s": 6000, "machine": {"cores": 2}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{assembly.README_START}\nold\n{assembly.README_END}\nrest\n")
    monkeypatch.setattr(assembly, "REPO_ROOT", tmp_path)
    assembly.update_readme(out)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert ("all training images x 2 epochs for the architecture study, 2000 training images x 12 epochs for "
            "over-fitting, distillation and augmentation, seeds [0, 1, 2], 100 min on 2 CPU cores) gives "
            "2 reproduced") in text
    # a make report timed outside the runner (set-up, an invocation stopped by hand) gives its total instead
    (out / "run.json").write_text(json.dumps({"wall_s": 6000, "total_wall_s": 7200, "machine": {"cores": 2}}))
    assembly.update_readme(out)
    assert "seeds [0, 1, 2], 120 min on 2 CPU cores" in readme.read_text()


def test_runner_estimates_the_time_left_from_the_last_recorded_run(tmp_path, capsys, monkeypatch):
    import json

    import bnext_lib.report as runner

    (tmp_path / "run.json").write_text(json.dumps({"profile": "cpu", "notebooks": {
        "01_architecture_study": {"wall_s": 600, "first_wall_s": 1200}, "02_overfitting_analysis": {"wall_s": 300}}}))
    assert runner._recorded_minutes(tmp_path, "cpu") == {"01_architecture_study": 20, "02_overfitting_analysis": 5}
    assert runner._recorded_minutes(tmp_path, "gpu") == {}
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: None)
    runner.execute(["01_architecture_study", "02_overfitting_analysis"], "cpu", tmp_path, html=False)
    err = capsys.readouterr().err
    assert "[notebook 1 of 2; time left at most ~25 min" in err and "[notebook 2 of 2; time left at most ~5 min" in err


def test_assemble_without_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the notebooks"):
        assemble(tmp_path)


# --------------------------------------------------------------------------------------------- run cache
def _tiny_cfg(**kw):
    base = dict(model="bnext_pico", dataset="synthetic", epochs=1, batch_size=32, train_subset=64, test_subset=32,
                augment="none", progress=False, threads=1)
    return TrainConfig(**{**base, **kw})


def test_missing_teachers_train_beside_the_runs_that_need_none(tmp_path, monkeypatch, capsys):
    """run_many trains a missing teacher in the same pass as the runs without teachers, then the runs that distil."""
    import bnext_lib.runs as runs_mod

    monkeypatch.setenv("BNEXT_DATA", str(tmp_path / "data"))
    ce = _tiny_cfg(data_root=None)
    kd = _tiny_cfg(data_root=None, teachers=("timm:resnet10t",), teacher_epochs=1)
    passes = []
    real = runs_mod.parallel_map
    monkeypatch.setattr(runs_mod, "parallel_map",
                        lambda fn, items, *a, **k: passes.append([c.model for c, _ in items]) or real(fn, items, *a, **k))
    runs = run_many([kd, ce])
    assert passes == [["timm:resnet10t", "bnext_pico"], ["bnext_pico"]]
    assert "and 1 teacher(s) they need" in capsys.readouterr().err
    assert runs[0].result["teachers"]["timm:resnet10t"] > 0 and is_done(teacher_config("timm:resnet10t", kd))


def test_bnext_runs_names_another_run_cache(tmp_path, monkeypatch):
    from bnext_lib.runs import runs_root

    monkeypatch.setenv("BNEXT_RUNS", str(tmp_path / "capped"))
    assert runs_root() == tmp_path / "capped" and run_folder(_tiny_cfg()).parent == tmp_path / "capped"


def test_run_cache_trains_once_and_resumes(tmp_path, monkeypatch):
    cfg = _tiny_cfg()
    run = run_one(cfg, tmp_path)
    assert is_done(cfg, tmp_path) and run.folder == run_folder(cfg, tmp_path)
    assert not (run.folder / "last.pt").exists() and (run.folder / "trace.csv").exists()
    assert {"temperature", "saturated"} <= set(run.trace().columns)
    model = run.load_model()
    assert not model.training

    import bnext_lib.runs as runs_mod
    monkeypatch.setattr(runs_mod, "train", lambda *a, **k: pytest.fail("a cached run was retrained"))
    again = run_one(cfg, tmp_path)
    assert again.final == run.final

    # an interrupted run (checkpoint, no model.pt) resumes instead of starting over
    monkeypatch.undo()
    cfg2 = _tiny_cfg(epochs=2, seed=5)
    from bnext_lib.train import train
    folder = run_folder(cfg2, tmp_path)

    class Stop(Exception):
        pass

    def stop(epoch, row):
        raise Stop

    with pytest.raises(Stop):
        train(TrainConfig(**{**cfg2.to_dict(), "teachers": (), "out": str(folder)}), callbacks=[stop])
    assert (folder / "last.pt").exists() and not is_done(cfg2, tmp_path)
    resumed = run_one(cfg2, tmp_path)
    assert [r["epoch"] for r in resumed.result["history"]] == [1, 2]
    fresh = run_one(_tiny_cfg(epochs=2, seed=5, lr=1e-3), tmp_path / "other")
    assert resumed.final["test_top1"] == fresh.final["test_top1"]


def test_run_many_in_two_processes(tmp_path):
    cfgs = [_tiny_cfg(seed=s) for s in (0, 1, 0)]  # a duplicate is trained once
    runs = run_many(cfgs, tmp_path, workers=2, threads=1, verbose=False)
    assert [r.config.seed for r in runs] == [0, 1, 0] and runs[0].digest == runs[2].digest
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    with pytest.raises(FileNotFoundError, match="has not been trained"):
        Run.load(_tiny_cfg(seed=9), tmp_path)


def test_an_interrupted_report_resumes_with_its_time(tmp_path, monkeypatch):
    """run.json of an interrupted invocation is continued by the next: finished notebooks keep their first times
    and run counts, the stopped notebook's seconds add up, the total is the sum; a complete run is not continued."""
    import bnext_lib.report as runner

    monkeypatch.setenv("BNEXT_COMMIT", "abc1234")
    (tmp_path / "results").mkdir()
    for name, trained in (("01", 4), ("02", 2)):
        (tmp_path / "results" / f"{name}.json").write_text(json.dumps({"runs_trained": trained, "runs_cached": 0}))
    first = runner.record_run(tmp_path, "gpu", {"01": {"wall_s": 240.0}, "02": {"wall_s": 100.0, "interrupted": True}},
                              "t1", interrupted=True)
    assert first["interrupted"] and first["wall_s"] == 340.0 and "runs_trained" not in first["notebooks"]["02"]
    (tmp_path / "results" / "01.json").write_text(json.dumps({"runs_trained": 0, "runs_cached": 4}))
    (tmp_path / "results" / "02.json").write_text(json.dumps({"runs_trained": 0, "runs_cached": 9}))
    second = runner.record_run(tmp_path, "gpu", {"01": {"wall_s": 40.0}, "02": {"wall_s": 16.0}}, "t2")
    nb = second["notebooks"]
    assert "interrupted" not in second and second["started"] == "t1"
    assert nb["01"]["first_wall_s"] == 240.0 and nb["01"]["first_runs_trained"] == 4
    assert nb["02"]["first_wall_s"] == 116.0 and nb["02"]["resumed"] and nb["02"]["runs_cached"] == 9
    assert second["wall_s"] == 356.0 and "resumed after an interruption" in second["note"]
    timed = dict(second, total_wall_s=999.0)  # a make report timed outside the runner
    (tmp_path / "run.json").write_text(json.dumps(timed))
    kept = runner.record_run(tmp_path, "gpu", {"02": {"wall_s": 3.0}}, "t2b", resume_ok=True)  # an --only re-run
    assert kept["wall_s"] == 356.0 and kept["total_wall_s"] == 999.0 and kept["note"] == second["note"] + ". Then: 02 re-executed from the cached runs of the first invocation on t2b (commit abc1234)"
    # an --only re-run that trains runs the first invocation did not (a variant no longer cut) adds their time
    (tmp_path / "results" / "02.json").write_text(json.dumps({"runs_trained": 3, "runs_cached": 9}))
    grown = runner.record_run(tmp_path, "gpu", {"02": {"wall_s": 60.0}}, "t2c", resume_ok=True)
    assert grown["notebooks"]["02"]["first_wall_s"] == 176.0 and grown["notebooks"]["02"]["first_runs_trained"] == 3
    assert grown["wall_s"] == 416.0 and grown["total_wall_s"] == 1059.0
    assert grown["note"].endswith("Then: 02 trained 3 new run(s) beside the cached ones on t2c (commit abc1234)")
    (tmp_path / "results" / "01.json").write_text(json.dumps({"runs_trained": 4, "runs_cached": 0}))
    third = runner.record_run(tmp_path, "gpu", {"01": {"wall_s": 41.0}}, "t3")
    assert third["wall_s"] == 41.0 and "note" not in third and third["started"] == "t3"
    assert runner.record_run(tmp_path, "cpu", {"01": {"wall_s": 7.0}}, "t4")["wall_s"] == 7.0  # another profile


def test_each_profile_reports_into_its_own_folder():
    from bnext_lib.study import report_dir

    reports = REPO_ROOT / "reports"
    assert [report_dir(p) for p in ("cpu", "smoke", "gpu", "paper")] == [
        reports, reports / ".scratch", reports / "gpu", reports / "paper"]


@pytest.mark.parametrize("profile", ["gpu", "paper"])
def test_a_notebook_at_another_profile_writes_beside_the_cpu_report(profile):
    """A notebook run by hand (Jupyter, papermill) at profile gpu or paper with its default ``out_dir = None`` gets
    the runner's folder for that profile, never the committed cpu report's figures, tables or results."""
    from bnext_lib.study import Study, report_dir

    existed = report_dir(profile).exists()
    try:
        study = Study("01_architecture_study", profile=profile)
        assert study.out == report_dir(profile) != report_dir("cpu")
        assert all(not (study.out / sub).resolve().samefile(report_dir("cpu") / sub)
                   for sub in ("figures", "tables", "results"))
    finally:  # the empty folders the study made for a report that was never run
        if not existed:
            shutil.rmtree(report_dir(profile), ignore_errors=True)


def test_the_runner_records_an_interrupted_invocation(tmp_path, monkeypatch):
    """A stop (Ctrl-C, or SIGTERM from `timeout`) during a notebook still writes run.json, marked interrupted."""
    import signal

    import bnext_lib.report as runner

    def stopped(notebooks, profile, out, html=True, log=True, times=None):
        times[notebooks[0]] = {"wall_s": 5.0, "interrupted": True}
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", stopped)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        runner.main(["--profile", "smoke", "--out", str(tmp_path)])
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["interrupted"] and run["notebooks"][NOTEBOOKS[0]]["wall_s"] == 5.0
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(KeyboardInterrupt, match="signal"):
        runner._interrupt(signal.SIGTERM, None)


def test_a_claim_judged_on_part_of_its_comparisons_says_so():
    """A claim whose other comparisons a profile cut shows on how many comparisons its verdict rests."""
    from bnext_lib.assembly import verdict_cell

    a, b = [90.0, 90.2, 90.1], [89.0, 89.1, 88.9]
    partly = combine([verdict(a, b, "BNext", "neither"), cut("BNext", "ELM only", "ELM only cut")])
    claim = {"verdict": partly["verdict"], "comparisons": [
        {"n_a": p.get("n_a"), "verdict": p["verdict"]} for p in partly["parts"]]}
    assert verdict_cell(claim) == "**reproduced** (on 1 of 2 comparisons; the others cut)"
    claim["comparisons"] = claim["comparisons"][:1]
    assert verdict_cell(claim) == "**reproduced**"
    assert verdict_cell({"verdict": "reproduced"}) == "**reproduced**"  # a claim that is no comparison of runs


def test_report_tables_show_whole_numbers_small_p_and_empty_cells():
    """REPORT.md's benchmark tables: a seed column with gaps is not "0.00", a p of 5e-4 is not "0.00", no "nan"."""
    import pandas as pd
    from bnext_lib.assembly import markdown_table

    df = pd.DataFrame({"variant": ["a", "a", "a > b"], "seed": [0, 1, None], "top1": [82.823, 83.2, None],
                       "p_value": [None, None, 4.7e-4], "verdict": [None, None, "reproduced"]})
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown_table(df).splitlines()[2:]]
    assert rows == [["a", "0", "82.82", "", ""], ["a", "1", "83.20", "", ""],
                    ["a > b", "", "", "0.00047", "reproduced"]]
    assert "nan" not in markdown_table(pd.DataFrame({"p": [0.5, float("nan")]}))


# --------------------------------------------------------------------------------------------- landscape
def test_roughness():
    x = np.linspace(-1, 1, 7)
    plane = 2 * x[:, None] + 3 * x[None, :]
    assert roughness(plane) == pytest.approx(0.0, abs=1e-12)
    bowl = x[:, None] ** 2 + x[None, :] ** 2
    step = x[1] - x[0]
    assert roughness(bowl) == pytest.approx(4 * step ** 2)
    with pytest.raises(ValueError):
        roughness(np.zeros((2, 5)))


def test_filter_normalized_direction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 5, 5))
    dirs = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    for p, d in zip(model.parameters(), dirs):
        if p.ndim < 2:
            assert torch.count_nonzero(d) == 0
        else:
            dims = tuple(range(1, p.ndim))
            torch.testing.assert_close(torch.linalg.vector_norm(d, dim=dims), torch.linalg.vector_norm(p, dim=dims))


def test_loss_landscape_centre_and_restore():
    from bnext_lib.models import create_model

    torch.manual_seed(0)
    model = create_model("bnext_pico", num_classes=10, in_chans=1).eval()
    set_temperature(model, 0.0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        centre = nn.functional.cross_entropy(model(x), y).item()
    ls = loss_landscape(model, x, y, steps=3, span=0.5)
    assert ls.loss.shape == (3, 3) and ls.centre_loss == pytest.approx(centre, rel=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="odd"):
        loss_landscape(model, x, y, steps=4)


def test_landscape_sees_the_images_the_run_trained_on(tmp_path, monkeypatch):
    """A run trained on zero-padded images is sliced on zero-padded images (28x28 ones gave the trained point a
    top-1 well below the run's own)."""
    import bnext_lib.landscape as landscape_mod

    monkeypatch.setenv("BNEXT_RUNS", str(tmp_path))
    cfg = _tiny_cfg(pad_to=32, seed=3)
    run_one(cfg)
    seen, real = {}, landscape_mod.loss_landscape

    def spy(model, x, y, **kw):
        seen["side"] = tuple(x.shape[-2:])
        return real(model, x, y, **kw)

    monkeypatch.setattr(landscape_mod, "loss_landscape", spy)
    ls = landscape_mod.run_landscape((cfg, 3, 0.5, 16, 0))
    assert seen["side"] == (32, 32) and ls.loss.shape == (3, 3)
    seen.clear()
    assert landscape_mod.run_landscape((cfg, 3, 0.5, 16, 0)).centre_loss == ls.centre_loss and not seen  # cached


def test_saturated_fraction():
    conv = BinaryConv2d(4, 4, 3, input_quantizer="sign_ste", weight_quantizer="progressive_sign")
    model = nn.Sequential(conv)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1, 1, conv.weight.numel()).view_as(conv.weight))
    set_temperature(model, 0.5)
    expected = (conv.weight.abs() >= 0.5).float().mean().item()
    assert saturated_fraction(model) == pytest.approx(expected)
    set_temperature(model, 0.0)
    assert saturated_fraction(model) == pytest.approx(1.0)
    assert saturated_fraction(nn.Linear(2, 2)) is None


# --------------------------------------------------------------------------------------------- notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_shape(name):
    nb = nbformat.read(str(NB_DIR / f"{name}.ipynb"), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'profile = "smoke"' in tagged[0].source
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any(f"Study({name!r}" in src for src in code)
    assert code[-1].strip() == "study.finish()"
    for src in code:  # narrative, parameters and calls only
        for forbidden in ("def ", "class ", "nn.Module", ".backward(", "optimizer", "import torch"):
            assert forbidden not in src, (name, forbidden)
    assert nb.cells[0].cell_type == "markdown"


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


@pytest.mark.parametrize("params, message", [({"profile": "laptop"}, "unknown profile"),
                                              ({"epochs": -2}, "epochs must be a positive integer"),
                                              ({"model": "bnext_xl"}, "is unknown")])
def test_notebook_rejects_bad_parameters_before_work(params, message, tmp_path):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match=message) as err:
        pm.execute_notebook(str(NB_DIR / "03_distillation.ipynb"), str(tmp_path / "run.ipynb"),
                            parameters={**params, "out_dir": str(out)}, kernel_name="python3",
                            progress_bar=False, cwd=str(NB_DIR))
    assert err.value.exec_count <= 3  # the cell right after the parameters (papermill's injected cell counts)
    assert not out.exists()
