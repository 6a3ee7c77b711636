"""The report runner: the notebooks executed into a part's staging folder, a notebook that waits for runs, an
interrupted part, a complete part published."""

import json
import shutil

import pytest


def test_the_runner_opens_with_the_ledger_and_continues_past_a_notebook_that_waits(tmp_path, capsys, monkeypatch):
    """The runner says what the ledger holds (not an estimate from an earlier protocol's run); a notebook stopped by
    runs that wait for the next part is recorded as waiting and the next notebook still runs."""
    from papermill.exceptions import PapermillExecutionError

    import bnext_lib.report as runner

    ran = []

    def execute(src, dst, **kw):
        ran.append(src)
        assert kw["extra_arguments"] == runner.QUIET_KERNEL  # the kernel's TCP warning is not shown
        if "01_" in src:
            raise PapermillExecutionError(3, 1, "study.run(...)", "RunsWaiting", "2 run(s) wait for the next part", [])

    monkeypatch.setattr("papermill.execute_notebook", execute)
    times = runner.execute(["01_architecture_study", "02_overfitting_analysis"], "cpu", tmp_path, html=False)
    assert len(ran) == 2 and times["01_architecture_study"]["waiting"] and "waiting" not in times["02_overfitting_analysis"]
    err = capsys.readouterr().err
    assert "stopped after" in err and "2 run(s) wait for the next part" in err and "time left" not in err
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: (_ for _ in ()).throw(
        PapermillExecutionError(3, 1, "x", "ValueError", "a bug", [])))
    with pytest.raises(PapermillExecutionError):  # any other error stops the report
        runner.execute(["01_architecture_study"], "cpu", tmp_path, html=False)


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


@pytest.mark.parametrize("profile", ["gpu", "paper"])
def test_a_notebook_at_another_profile_writes_beside_the_cpu_report(profile):
    """A notebook run by hand (Jupyter, papermill) at profile gpu or paper with its default ``out_dir = None`` gets
    the runner's folder for that profile, never the committed cpu report's figures, tables or results."""
    from bnext_lib.study import Study, report_dir

    existed = report_dir(profile).exists()
    try:
        study = Study("01_architecture_study", profile=profile)
        assert study.out == report_dir(profile) != report_dir("cpu")
        assert all((study.out / sub).resolve() != (report_dir("cpu") / sub).resolve()
                   for sub in ("figures", "tables", "results"))
        assert report_dir(profile).exists() == existed  # opening a study writes nothing
    finally:
        if not existed:
            shutil.rmtree(report_dir(profile), ignore_errors=True)


def test_an_interrupted_part_leaves_the_report_as_it_was(tmp_path, monkeypatch, capsys):
    """A stop (Ctrl-C, or SIGTERM from `timeout`) during a notebook: one line saying where things are, exit 130,
    the report folder untouched (the notebooks write into .part/), SIGTERM's handler restored."""
    import signal

    import bnext_lib.report as runner

    monkeypatch.setenv("BNEXT_LEDGER", str(tmp_path / "ledger"))
    (tmp_path / "REPORT.md").write_text("the committed report\n")

    def stopped(notebooks, profile, out, html=True, log=True, times=None, workers=None):
        assert out == tmp_path / ".part"
        (out / "tables").mkdir(parents=True)
        (out / "tables" / "01_ablation.csv").write_text("half written")
        times[notebooks[0]] = {"wall_s": 5.0, "interrupted": True}
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", stopped)
    before = signal.getsignal(signal.SIGTERM)
    assert runner.main(["--profile", "smoke", "--out", str(tmp_path)]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part", "REPORT.md"]
    assert (tmp_path / "REPORT.md").read_text() == "the committed report\n"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("report: interrupted after") and "is as it was" in err[-1]
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(KeyboardInterrupt, match="signal"):
        runner._interrupt(signal.SIGTERM, None)


def test_a_budget_must_be_positive(capsys):
    import bnext_lib.report as runner

    with pytest.raises(SystemExit):
        runner.main(["--profile", "smoke", "--budget-min", "0"])
    assert "--budget-min must be a positive number of minutes" in capsys.readouterr().err


def test_a_complete_part_is_published_and_only_the_report_s_own_stale_files_go(tmp_path, monkeypatch):
    """publish moves a part's files into the report folder and removes what the new report no longer accounts for
    from the folders a report writes, never anything else under the folder (a user's file, the ledger)."""
    import bnext_lib.report as runner

    monkeypatch.setenv("BNEXT_COMMIT", "abc1234")
    out, stage = tmp_path, tmp_path / ".part"
    for folder in ("tables", "results", "figures", "ledger"):
        (out / folder).mkdir(parents=True)
    (out / "tables" / "01_old.csv").write_text("a table of an earlier protocol")
    (out / "figures" / "01_old.png").write_bytes(b"png")
    (out / "ledger" / "abc.json").write_text("{}")
    (out / "notes.txt").write_text("a user's file")
    (stage / "tables").mkdir(parents=True)
    (stage / "results").mkdir()
    (stage / "tables" / "01_new.csv").write_text("x")
    (stage / "results" / "01_architecture_study.json").write_text(json.dumps({
        "study": "01_architecture_study", "runs_trained": 1, "runs_cached": 0,
        "tables": [{"csv": "tables/01_new.csv", "md": "tables/01_new.md"}], "figures": []}))
    (stage / "run.json").write_text(json.dumps({"profile": "smoke", "started": "t", "notebooks": {
        "01_architecture_study": {"wall_s": 5.0}}}))
    runner.publish(stage, out)
    assert (out / "tables" / "01_new.csv").exists() and not stage.exists()
    assert not (out / "tables" / "01_old.csv").exists() and not (out / "figures" / "01_old.png").exists()
    assert (out / "notes.txt").exists() and (out / "ledger" / "abc.json").exists()
    assert json.loads((out / "run.json").read_text())["notebooks"]["01_architecture_study"]["wall_s"] == 5.0


def test_the_notebooks_get_their_output_folder_relative_to_their_own(tmp_path, monkeypatch):
    """An executed notebook that is committed names no machine's path: its out_dir is relative to notebooks/ (the
    kernel's cwd) and leads to the folder asked for."""
    import os

    import papermill

    from bnext_lib.report import REPO_ROOT, execute

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, parameters, cwd, **kw: seen.update(
        parameters=parameters, cwd=cwd))
    out = tmp_path / "reports" / ".part"
    execute(["01_architecture_study"], "smoke", out, html=False)
    assert seen["cwd"] == str(REPO_ROOT / "notebooks")
    assert not os.path.isabs(seen["parameters"]["out_dir"])
    assert (REPO_ROOT / "notebooks" / seen["parameters"]["out_dir"]).resolve() == out.resolve()
