"""The run cache: a run trains once, resumes, runs in worker processes; missing teachers train first."""

import pytest

from bnext_lib.config import TrainConfig, teacher_config
from bnext_lib.runs import Run, is_done, run_folder, run_many, run_one
from tiny import tiny_config


@pytest.mark.slow
def test_missing_teachers_train_beside_the_runs_that_need_none(tmp_path, monkeypatch, capsys):
    """run_many trains a missing teacher in the same pass as the runs without teachers, then the runs that distil."""
    import bnext_lib.runs as runs_mod

    monkeypatch.setenv("BNEXT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BNEXT_RUNS", str(tmp_path / "runs"))
    ce = tiny_config(data_root=None)
    kd = tiny_config(data_root=None, teachers=("timm:resnet10t",), teacher_epochs=1)
    passes = []
    real = runs_mod.parallel_map
    monkeypatch.setattr(runs_mod, "parallel_map",
                        lambda fn, items, *a, **k: passes.append([c.model for c, *_ in items]) or real(fn, items, *a, **k))
    runs = run_many([kd, ce])
    assert passes == [["timm:resnet10t", "bnext_pico"], ["bnext_pico"]]
    assert "and 1 teacher(s) they need" in capsys.readouterr().err
    assert runs[0].teacher_top1["timm:resnet10t"] > 0 and is_done(teacher_config("timm:resnet10t", kd))


def test_bnext_runs_names_another_run_cache(tmp_path, monkeypatch):
    from bnext_lib.runs import runs_root

    monkeypatch.setenv("BNEXT_RUNS", str(tmp_path / "capped"))
    assert runs_root() == tmp_path / "capped" and run_folder(tiny_config()).parent == tmp_path / "capped"


@pytest.mark.slow
def test_run_cache_trains_once_and_resumes(tmp_path, monkeypatch):
    cfg = tiny_config()
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
    cfg2 = tiny_config(epochs=2, seed=5)
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
    fresh = run_one(tiny_config(epochs=2, seed=5, lr=1e-3), tmp_path / "other")
    assert resumed.final["test_top1"] == fresh.final["test_top1"]


@pytest.mark.slow
def test_run_many_in_two_processes(tmp_path):
    cfgs = [tiny_config(seed=s) for s in (0, 1, 0)]  # a duplicate is trained once
    runs = run_many(cfgs, tmp_path, workers=2, threads=1, verbose=False)
    assert [r.config.seed for r in runs] == [0, 1, 0] and runs[0].digest == runs[2].digest
    assert len([p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2  # .locks aside
    with pytest.raises(FileNotFoundError, match="has not been trained"):
        Run.load(tiny_config(seed=9), tmp_path)


def test_on_a_machine_with_several_gpus_each_worker_gets_its_own(monkeypatch):
    """The pool's workers take the GPUs round robin (CUDA_VISIBLE_DEVICES, set before CUDA starts in them), within
    the parent's own choice of GPUs where it made one; with one GPU nothing is set."""
    import multiprocessing as mp
    import os
    import sys

    from bnext_lib import pool

    queue = type("Queue", (), {"put": lambda self, x: None})()
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # the initializer redirects them: put back afterwards
    monkeypatch.setattr(sys, "stderr", sys.stderr)

    def workers(parent: str | None, gpus: int, n: int = 3) -> list:
        counter, seen = mp.get_context("spawn").Value("i", 0), []
        for _ in range(n):  # each worker starts from the parent's environment
            if parent is None:
                monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
            else:
                monkeypatch.setenv("CUDA_VISIBLE_DEVICES", parent)
            pool._init_worker(None, queue, gpus, counter)
            seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
        return seen

    assert workers(None, 2) == ["0", "1", "0"]
    assert workers("2,3", 2) == ["2", "3", "2"]
    assert workers(None, 1) == [None, None, None]
