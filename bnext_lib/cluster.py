"""A report's missing runs fanned out to a cluster by submitit (the ``cluster`` extra): one job array per batch of
runs, every job writing into one shared ledger.

The local process pool (:mod:`bnext_lib.pool`) stays the default: no server, no extra dependency. With
``python -m bnext_lib.report --executor slurm`` (or ``$BNEXT_EXECUTOR`` holding a :class:`ClusterSpec` as JSON,
which the runner sets for its notebooks' kernels), :func:`bnext_lib.runs.run_many` submits the runs it misses as
one Slurm job array instead. Each job is :func:`bnext_lib.runs.run_one` of one configuration: it takes the
digest's file lock (two jobs never train one run), trains in the shared run cache (``$BNEXT_RUNS``) with a
checkpoint per epoch, and records the run in the shared ledger (``$BNEXT_LEDGER`` or the profile's). A job that is
preempted or runs out of time is requeued by submitit (:class:`Resumable`) and resumes from its last checkpoint.
``--executor submitit-local`` runs the same path with submitit's local executor: the tests, or a try on one
machine.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = ["EXECUTOR_ENV", "ClusterSpec", "Resumable", "cluster_map", "executor_spec"]

EXECUTOR_ENV = "BNEXT_EXECUTOR"
CLUSTERS = ("slurm", "local")


@dataclass(frozen=True)
class ClusterSpec:
    """Where and how the jobs run.

    Attributes:
        cluster: ``slurm``, or ``local`` (submitit's local executor).
        folder: submitit's folder for the jobs' pickles and logs (on the shared file system).
        partition: the Slurm partition (None: the cluster's default).
        time_min: each job's time limit; a job that reaches it is requeued and resumes.
        cpus_per_task, gpus_per_task: what each job gets (one run per job).
        array_parallelism: how many jobs of the array run at once.
    """

    cluster: str = "slurm"
    folder: str = "data/submitit"
    partition: str | None = None
    time_min: int = 60
    cpus_per_task: int = 2
    gpus_per_task: int = 0
    array_parallelism: int = 64

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise ValueError(f"cluster {self.cluster!r} is unknown; choose one of {list(CLUSTERS)}")
        for name in ("time_min", "cpus_per_task", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_task < 0:
            raise ValueError(f"gpus_per_task must be >= 0, got {self.gpus_per_task}")

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def parameters(self) -> dict:
        """submitit's AutoExecutor parameters (the ``slurm_`` ones are ignored by the local executor)."""
        params = dict(timeout_min=self.time_min, cpus_per_task=self.cpus_per_task, tasks_per_node=1, nodes=1,
                      slurm_array_parallelism=self.array_parallelism)
        if self.gpus_per_task:
            params["gpus_per_node"] = self.gpus_per_task
        if self.partition:
            params["slurm_partition"] = self.partition
        return params


def executor_spec() -> ClusterSpec | None:
    """The cluster the runs go to (``$BNEXT_EXECUTOR``), or None for the local process pool."""
    text = os.environ.get(EXECUTOR_ENV)
    if not text:
        return None
    try:
        return ClusterSpec(**json.loads(text))
    except (ValueError, TypeError) as e:
        raise ValueError(f"${EXECUTOR_ENV} is not a cluster specification ({e}): {text!r}") from None


class Resumable:
    """A job that submitit requeues when it is preempted or times out (submitit calls :meth:`checkpoint` then): the
    same call again, which finds the run's last checkpoint in the shared run cache and resumes from it."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __call__(self, item: Any) -> Any:
        return self.fn(item)

    def checkpoint(self, item: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, item)


def cluster_map(fn: Callable[[Any], Any], items: Sequence[Any], spec: ClusterSpec,
                on_done: Callable[[int, Any], None] | None = None) -> list:
    """``[fn(item) for item in items]`` as one submitit job array; ``on_done(index, value)`` as results arrive
    (in submission order). The first failed job's error is raised, naming its item and its log."""
    try:
        import submitit
    except ImportError:
        raise ImportError("the cluster executor needs submitit: pip install -e '.[cluster]'") from None
    executor = submitit.AutoExecutor(folder=spec.folder, cluster=spec.cluster)
    executor.update_parameters(name="bnext-run", **spec.parameters())
    jobs = executor.map_array(Resumable(fn), list(items))
    results = []
    for i, job in enumerate(jobs):
        try:
            results.append(job.result())
        except Exception as e:  # submitit wraps the job's own error with its log's path
            raise RuntimeError(f"job {job.job_id} ({items[i]!r:.300}) failed: {e}") from e
        if on_done:
            on_done(i, results[-1])
    return results
