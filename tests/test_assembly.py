"""REPORT.md, claims.csv and the README headline, assembled from the studies' results."""

import json

import pytest

from bnext_lib.report import assemble, combine, compare
from bnext_lib.verdicts import cut


def test_readme_headline_names_both_regimes(tmp_path, monkeypatch):

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
    from bnext_lib.ledger import Ledger
    held = {"runs": 0}
    monkeypatch.setattr(Ledger, "summary", lambda self: held)
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
    # a report assembled from a ledger names the training behind it, not only its own invocation's minutes
    held.update(runs=140, hours=20.5, cpu_hours=41.0, machines={"AMD EPYC [avx2]": 100, "Intel Xeon [avx512f]": 40},
                commits=["59aa3e1", "caed0ff"])
    assembly.update_readme(out)
    assert ("seeds [0, 1, 2]; 140 runs from the committed ledger, 41.0 CPU-hours (100 runs on AMD EPYC [avx2]; "
            "40 runs on Intel Xeon [avx512f]; commits 59aa3e1, caed0ff); this invocation, 120 min on 2 CPU cores) "
            "gives"
            ) in readme.read_text()


def test_a_report_from_the_ledger_drops_the_readme_s_reading_of_the_v2_run(tmp_path, monkeypatch):
    """The README's block that re-reads the v2 run under today's rules goes once the committed report is one built
    on the ledger (judged under today's rules itself), and the text around it stays as it was."""
    import bnext_lib.assembly as assembly
    from bnext_lib.ledger import Ledger

    out = tmp_path / "reports"
    (out / "results").mkdir(parents=True)
    claim = {"key": "k", "claim": "a claim", "verdict": "reproduced", "evidence": "", "where": "", "comparisons": []}
    result = {"study": "01_architecture_study", "profile": "cpu", "regime": "full", "seeds": [0, 1, 2],
              "settings": {"model": "m", "dataset": "d", "epochs": 2}, "claims": [claim], "tables": [],
              "figures": []}
    (out / "run.json").write_text(json.dumps({"wall_s": 600, "machine": {"cores": 2}}))
    readme = tmp_path / "README.md"
    monkeypatch.setattr(assembly, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(Ledger, "summary", lambda self: {"runs": 0})
    monkeypatch.setattr(assembly, "todays_rules_markdown",
                        lambda out: f"{assembly.TODAY_START}\nre-read\n{assembly.TODAY_END}")
    v2 = f"intro\n{assembly.README_START}\nold\n{assembly.README_END}\n\n{assembly.TODAY_START}\nstale\n" \
         f"{assembly.TODAY_END}\n\n## Status\n"
    for ledger, kept in ((None, True), ("ledger", False)):
        (out / "results" / "01_architecture_study.json").write_text(json.dumps(
            dict(result, **({"ledger": ledger} if ledger else {}))))
        readme.write_text(v2)
        assembly.update_readme(out)
        text = readme.read_text()
        assert ("re-read" in text) is kept and "stale" not in text and (assembly.TODAY_START in text) is kept
        assert text.startswith("intro\n") and text.endswith(f"{assembly.README_END}\n\n"
                                                           + (f"{assembly.TODAY_START}\nre-read\n"
                                                              f"{assembly.TODAY_END}\n\n" if kept else "")
                                                           + "## Status\n")


def test_assemble_without_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the notebooks"):
        assemble(tmp_path)


def test_a_claim_judged_on_part_of_its_comparisons_says_so():
    """A claim whose other comparisons a profile cut shows on how many comparisons its verdict rests."""
    from bnext_lib.assembly import verdict_cell

    a, b = [90.0, 90.2, 90.1], [89.0, 89.1, 88.9]
    partly = combine([compare(a, b, "BNext", "neither"), cut("BNext", "ELM only", "ELM only cut")])
    claim = {"verdict": partly["verdict"], "comparisons": [
        {"n_a": p.get("n_a"), "verdict": p["verdict"]} for p in partly["parts"]]}
    assert partly["verdict"] == "partly tested"  # what ran holds, but not every comparison ran
    assert verdict_cell(claim) == "**partly tested** (on 1 of 2 comparisons; the others not run)"
    claim = {"verdict": "reproduced", "comparisons": claim["comparisons"][:1]}
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


def test_a_file_the_last_run_did_not_write_is_stale(tmp_path):
    """What a report folder holds is what its last run's records name, the evidence benchmarks' outputs and logs."""
    from bnext_lib.assembly import report_files, stale_files

    out = tmp_path / "reports"
    for rel in ("results/04_x.json", "tables/04_t.csv", "tables/04_t.md", "figures/04_f.png", "figures/04_f.svg",
                "executed/04_x.ipynb", "REPORT.md", "claims.csv", "tables/time_to_accuracy.csv",
                "logs/anything.log", "tables/04_old_pivot.csv", "figures/04_old_heatmap.png"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    (out / "results/04_x.json").write_text(json.dumps({
        "study": "04_x", "tables": [{"csv": "tables/04_t.csv", "md": "tables/04_t.md"}],
        "figures": [{"png": "figures/04_f.png", "svg": "figures/04_f.svg"}]}))
    assert out / "tables/04_t.csv" in report_files(out)
    assert stale_files(out) == [out / "figures/04_old_heatmap.png", out / "tables/04_old_pivot.csv"]


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_the_committed_reports_hold_only_what_their_last_run_wrote(profile):
    from bnext_lib.assembly import stale_files
    from bnext_lib.study import report_dir

    assert stale_files(report_dir(profile)) == []


def test_the_readme_reads_the_committed_report_under_todays_rules():
    """The README's block on the committed report under today's rules is what the assembly computes from the
    committed results (not typed in), and today's rules never read more into a claim than its parts hold."""
    from bnext_lib.assembly import (REPO_ROOT, TODAY_END, TODAY_START, _from_ledger, _read_results,
                                    todays_rules_markdown, under_todays_rules)

    text = (REPO_ROOT / "README.md").read_text()
    studies, _ = _read_results(REPO_ROOT / "reports")
    if _from_ledger(studies):  # the committed report is judged under today's rules itself: nothing to re-read
        assert TODAY_START not in text and TODAY_END not in text
        return
    block = TODAY_START + text.split(TODAY_START, 1)[1].split(TODAY_END, 1)[0] + TODAY_END
    assert block == todays_rules_markdown(), "regenerate it: bnext_lib.assembly.todays_rules_markdown()"
    df = under_todays_rules()
    rank = {"reproduced": 0, "partly tested": 1, "inconclusive": 2, "contradicted": 2, "not tested": 3}
    assert all(rank[t] >= rank[p] or p == "contradicted" for p, t in zip(df.published, df.today))


def test_a_partial_report_names_what_waits_and_what_the_part_did_not_run(tmp_path):
    """A part run with ONLY=01_architecture_study: its REPORT.md says how many of that notebook's runs wait, and
    that the other three notebooks were not run at all (their claims are not merely waiting)."""
    out = tmp_path / "reports"
    (out / "results").mkdir(parents=True)
    (out / "results" / "01_architecture_study.json").write_text(json.dumps(
        {"study": "01_architecture_study", "profile": "cpu", "regime": "full", "seeds": [0, 1],
         "settings": {"model": "m", "dataset": "d", "epochs": 1}, "claims": [], "tables": [], "figures": [],
         "teachers": [], "workers": 1, "threads": None, "runs_trained": 12, "runs_cached": 2, "wall_s": 5590.0,
         "regime_checks": [], "notes": [],
         "waiting": {"runs": 6, "recorded": 14}}))
    text = assemble(out).read_text()
    assert ("01_architecture_study stopped where 6 of its runs wait for the next part (14 recorded)") in text
    assert ("Not run in this part: 02_overfitting_analysis, 03_distillation, 04_augmentation_ablation.") in text
    assert "runs of the whole report" not in text  # a part that did not count says nothing of the whole
    (out / "run.json").write_text(json.dumps({"profile": "cpu", "notebooks": {}, "runs": {
        "recorded": 14, "total": 148, "notebooks": {}, "assumed": ["the teacher ladder in the profile's order"]}}))
    text = assemble(out).read_text()
    assert ("not the report**: 14 of 148 runs of the whole report are recorded (assuming the teacher ladder in the "
            "profile's order); 01_architecture_study stopped where") in text


def test_the_gpu_column_says_when_its_report_ran_an_earlier_protocol(tmp_path, monkeypatch):
    """REPORT.md's gpu column is headed as the gpu report it shows: one that predates the ledger ran an earlier
    protocol than the cpu report beside it; one run on the ledger is headed plainly."""
    import bnext_lib.assembly as assembly

    result = {"study": "01_architecture_study", "profile": "gpu", "regime": "full", "seeds": [0], "claims": [],
              "settings": {"model": "m", "dataset": "d", "epochs": 1}, "tables": [], "figures": []}
    monkeypatch.setattr(assembly, "report_dir", lambda profile: tmp_path / profile)
    assert assembly.replication_heading() == "gpu report"  # no gpu report at all
    (tmp_path / "gpu" / "results").mkdir(parents=True)
    (tmp_path / "gpu" / "results" / "01_architecture_study.json").write_text(json.dumps(result))
    assert assembly.replication_heading() == "gpu report (an earlier protocol, [gpu/](gpu/REPORT.md))"
    (tmp_path / "gpu" / "results" / "01_architecture_study.json").write_text(json.dumps(dict(result, ledger="l")))
    assert assembly.replication_heading() == "gpu report"


def test_one_epoch_is_worded_as_one():
    from bnext_lib.assembly import _regime_words

    assert _regime_words({"epochs": 1}) == "all training images x 1 epoch"
    assert _regime_words({"epochs": 48, "train_subset": 1000}) == "1000 training images x 48 epochs"
