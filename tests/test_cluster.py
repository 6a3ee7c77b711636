"""The cluster path: a report's missing runs as a submitit job array (tested with submitit's local executor), the
specification the runner hands its notebooks, and a requeued job that resumes."""
import json

import pytest

from bnext_lib.cluster import EXECUTOR_ENV, ClusterSpec, Resumable, executor_spec
from bnext_lib.ledger import Ledger
from bnext_lib.runs import run_many
from tiny import tiny_config


def test_a_cluster_specification_is_checked_and_travels_through_the_environment(monkeypatch):
    spec = ClusterSpec("slurm", folder="/shared/submitit", partition="gpu", time_min=30, gpus_per_task=1)
    assert spec.parameters() == {"timeout_min": 30, "cpus_per_task": 2, "tasks_per_node": 1, "nodes": 1,
                                 "slurm_array_parallelism": 64, "gpus_per_node": 1, "slurm_partition": "gpu"}
    monkeypatch.setenv(EXECUTOR_ENV, spec.to_env())
    assert executor_spec() == spec
    monkeypatch.setenv(EXECUTOR_ENV, json.dumps({"cluster": "kubernetes"}))
    with pytest.raises(ValueError, match="cluster 'kubernetes' is unknown"):
        executor_spec()
    monkeypatch.delenv(EXECUTOR_ENV)
    assert executor_spec() is None  # the local process pool


def test_a_requeued_job_is_the_same_call_again():
    """submitit calls checkpoint() on preemption or time-out and submits what it returns: the same run, which then
    resumes from its last checkpoint in the shared run cache (tests/test_runs.py shows the resume)."""
    job = Resumable(len)
    again = job.checkpoint([1, 2, 3])
    assert again.function is job and again.args == ([1, 2, 3],) and again.result() == 3


def test_the_runner_rejects_a_bad_cluster_option(capsys):
    import bnext_lib.report as runner

    with pytest.raises(SystemExit):
        runner.main(["--profile", "smoke", "--executor", "slurm", "--slurm-time-min", "0"])
    assert "time_min must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_runs_go_out_as_one_job_array_into_a_shared_ledger(tmp_path, monkeypatch, capsys):
    """With submitit's local executor: two missing runs are two jobs of one array, each recorded in the shared
    ledger; asking again submits nothing."""
    import submitit

    ledger = Ledger(tmp_path / "ledger")
    spec = ClusterSpec("local", folder=str(tmp_path / "submitit"), time_min=5, cpus_per_task=1)
    monkeypatch.setenv(EXECUTOR_ENV, spec.to_env())
    arrays = []
    real = submitit.AutoExecutor.map_array
    monkeypatch.setattr(submitit.AutoExecutor, "map_array",
                        lambda self, fn, items: arrays.append(len(items)) or real(self, fn, items))
    cfgs = [tiny_config(seed=s) for s in (21, 22)]
    runs = run_many(cfgs, tmp_path / "runs", ledger=ledger)
    assert arrays == [2] and "as local job arrays" in capsys.readouterr().err
    assert sorted(r["digest"] for r in ledger.records()) == sorted(r.digest for r in runs)
    assert all(r.final["epoch"] == 1 for r in runs)
    run_many(cfgs, tmp_path / "runs", ledger=ledger)
    assert arrays == [2]
