"""Runs the notebooks share: the ledger first, then this machine's run cache, then training.

A run is known by its digest (:func:`~bnext_lib.config.config_hash` of everything that changes its numbers). Its
committed record lives in a profile's ledger (:mod:`bnext_lib.ledger`): a run the ledger has is never trained
again, on any machine. Training happens in this machine's run cache, ``data/runs/<digest>/`` (``$BNEXT_RUNS``):
the engine's ``metrics.csv``, ``trace.csv``, ``last.pt`` while it trains (an interrupted run resumes from it), and
once it is complete ``model.pt`` and ``record.json``, the record the ledger receives. What a notebook computes
from a run's weights (loss landscapes) is computed when the run finishes (``derive``) and kept in its record;
teachers' weights are committed to the ledger, since students depend on them.

:func:`run_many` trains the missing runs side by side in ``workers`` processes (:mod:`bnext_lib.pool`), seed-major
(seed 0 of every variant, then seed 1, ...), teachers first; or, with ``$BNEXT_EXECUTOR``, as submitit job arrays on
a cluster (:mod:`bnext_lib.cluster`). Under a deadline (``$BNEXT_DEADLINE``, set by the
report's time budget) a run whose expected cost (:meth:`~bnext_lib.ledger.Ledger.estimate`) would not fit is not
started: it waits for the next part (:class:`RunsWaiting`). A lock per digest makes two processes asking for one
run train it once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import torch
import torch.nn as nn

from .checkpoints import atomic_save, atomic_write_text, read_checkpoint
from .cluster import cluster_map, executor_spec
from .config import TrainConfig, config_hash, teacher_config
from .data import default_data_root
from .distill import Teacher
from .landscape import landscape_key, run_landscape
from .ledger import (Ledger, LedgerError, choice_ledger_beside, cpu_kind, digest_lock, dumps, git_commit, graph_key,
                     machine, now, record_config, same_machine, weights_sha256, SCHEMA)
from .models import build_model
from .pool import parallel_map
from .train import train

__all__ = ["Run", "RunsWaiting", "runs_root", "run_folder", "is_done", "run_one", "run_many", "retrain",
           "load_teachers", "ensure_teachers", "teacher_configs", "deadline", "DEADLINE_ENV"]

# the end of a report part's time budget (seconds since the epoch), set by the report runner (bnext_lib.report)
DEADLINE_ENV = "BNEXT_DEADLINE"


def deadline() -> float | None:
    value = os.environ.get(DEADLINE_ENV)
    return float(value) if value else None


class RunsWaiting(RuntimeError):
    """Runs a caller asked for that were not started because the part's time budget would not fit them; they
    train in the next part (``configs``: their configurations)."""

    def __init__(self, configs: Sequence[TrainConfig], done: int):
        self.configs, self.done = list(configs), done
        super().__init__(f"{len(self.configs)} run(s) wait for the next part (the time budget would not fit them); "
                         f"{done} of {done + len(self.configs)} are recorded")


def runs_root(data_root: str | os.PathLike | None = None) -> Path:
    """``$BNEXT_RUNS`` if set (a separate cache: the tests', runs under other CPU kernels), else
    ``<data root>/runs``."""
    env = os.environ.get("BNEXT_RUNS")
    if env:
        return Path(env)
    return (Path(data_root) if data_root else default_data_root()) / "runs"


def run_folder(cfg: TrainConfig, root: str | os.PathLike | None = None) -> Path:
    """The folder of this machine's run cache that a configuration's run trains in."""
    return Path(root or runs_root(cfg.data_root)) / config_hash(cfg)


def is_done(cfg: TrainConfig, root: str | os.PathLike | None = None, ledger: Ledger | None = None) -> bool:
    """Whether the ledger (if given) or this machine's run cache has the finished run."""
    return (ledger is not None and ledger.has(cfg)) or (run_folder(cfg, root) / "record.json").exists()


@dataclass
class Run:
    """A finished run: its configuration and record (:mod:`bnext_lib.ledger`).

    Attributes:
        config: the configuration it was trained with.
        record: the ledger record: ``final``, ``history``, ``trace``, ``teachers``, ``wall_s``, ``machine``,
            ``commit``, ``derived``...
        folder: this machine's run-cache folder, where its weights are (None: trained elsewhere).
        ledger: the ledger it was read from or written to, where teachers' weights are committed.
    """

    config: TrainConfig
    record: dict
    folder: Path | None = None
    ledger: Ledger | None = None

    @property
    def digest(self) -> str:
        return self.record["digest"]

    @property
    def result(self) -> dict:
        """The record (the name earlier versions gave the engine's summary)."""
        return self.record

    @property
    def final(self) -> dict:
        return self.record["final"]

    @property
    def teacher_top1(self) -> dict[str, float]:
        """``{teacher: its test top-1}``."""
        return {n: t["test_top1"] for n, t in self.record["teachers"].items()}

    def history(self):
        """Per-epoch metrics as a ``pandas.DataFrame``."""
        import pandas as pd
        return pd.DataFrame(self.record["history"])

    def trace(self):
        """16 points per epoch (loss, lr, temperature, saturated fraction) as a ``pandas.DataFrame``."""
        import pandas as pd
        return pd.DataFrame(self.record.get("trace", []))

    def weights(self) -> dict:
        """The weights it ended with: committed in the ledger (teachers), else this machine's run cache, checked
        against the record's SHA-256."""
        sha = self.record["weights_sha256"]
        if self.ledger is not None and self.ledger.weights_path(self.digest).exists():
            return self.ledger.load_weights(self.digest, sha)
        local = self.folder / "model.pt" if self.folder is not None else None
        if local is None or not local.exists():
            raise LedgerError(f"run {self.digest} ({self.config.model}, seed {self.config.seed}): its weights are "
                              "neither committed nor on this machine (only teachers' weights are committed)")
        state = read_checkpoint(local)["model"]
        if weights_sha256(state) != sha:
            raise LedgerError(f"{local}: these weights are not the recorded run's (SHA-256 differs: trained "
                              "again on another machine?); delete the folder")
        return state

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained model in eval mode."""
        model = build_model(self.config.model, self.record["num_classes"], self.record["in_chans"],
                            **self.config.model_options())
        model.load_state_dict(self.weights())
        return model.eval().to(device)

    @classmethod
    def load(cls, cfg: TrainConfig, root: str | os.PathLike | None = None, ledger: Ledger | None = None) -> "Run":
        """The finished run of ``cfg`` from the ledger, else from this machine's run cache."""
        folder = run_folder(cfg, root)
        record = ledger.get(cfg) if ledger is not None else None
        if record is None:
            path = folder / "record.json"
            if not path.exists():
                raise FileNotFoundError(f"run {folder.name} ({cfg.model}, seed {cfg.seed}) has not been trained")
            record = Ledger.read_file(path, folder.name)
        return cls(cfg, record, folder if folder.exists() else None, ledger)


# --------------------------------------------------------------------------------------------- one run
def _derived(cfg: TrainConfig, spec: tuple, model: nn.Module) -> tuple[str, dict]:
    """``(key, value)`` of one value computed from a finished run's weights; ``spec`` is ``("landscape", steps,
    span, images, seed)``."""
    kind, *args = spec
    if kind != "landscape":
        raise ValueError(f"unknown derived value {kind!r}; the one known is 'landscape'")
    return landscape_key(*args), run_landscape(cfg, model, *args).to_dict()


def _train(cfg: TrainConfig, folder: Path, root, ledger: Ledger | None) -> dict:
    """Train ``cfg`` into ``folder`` (resuming its checkpoint); its record, and ``model.pt`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=1))
    run_cfg = dataclasses.replace(cfg, out=str(folder), resume=(folder / "last.pt").exists())
    teachers = load_teachers(cfg, root, ledger) if cfg.teachers else {}
    started = now()
    result = train(run_cfg, single_process=True, teachers=teachers)
    state = result["model"].state_dict()
    record = {"schema": SCHEMA, "digest": config_hash(cfg), "config": record_config(cfg), "final": result["final"],
              "history": result["history"], "trace": result["trace"],
              "teachers": {n: {"digest": t.digest, "weights_sha256": t.weights_sha256, "test_top1": t.test_top1}
                           for n, t in teachers.items()},
              "weights_sha256": weights_sha256(state), "params": sum(p.numel() for p in result["model"].parameters()),
              "num_classes": result["num_classes"], "in_chans": result["in_chans"],
              "wall_s": round(result["wall_s"], 2), "started": started, "ended": now(), "machine": machine(),
              "commit": git_commit(), "derived": {}}
    atomic_save({"model": state, "num_classes": result["num_classes"], "in_chans": result["in_chans"],
                 "config": cfg.to_dict()}, folder / "model.pt")
    _write_local(folder, record)  # before the checkpoint goes: a process killed now loses no finished run
    (folder / "last.pt").unlink(missing_ok=True)  # the optimizer state is twice the model; done runs drop it
    return record


def _write_local(folder: Path, record: dict) -> None:
    atomic_write_text(folder / "record.json", dumps(record))  # as the ledger stores it


def run_one(cfg: TrainConfig, root: str | os.PathLike | None = None, ledger: Ledger | None = None,
            keep_weights: bool = False, derive: Sequence[tuple] = ()) -> Run:
    """The finished run of ``cfg``: from the ledger, else from this machine's run cache (then recorded in the
    ledger), else trained (resuming an interrupted run). ``keep_weights``: commit its weights to the ledger (a
    teacher). ``derive``: values computed from its weights when it finishes (:func:`_derived`), kept in its record.
    Holds the digest's lock meanwhile, so that a second process asking for it waits and finds it."""
    digest = config_hash(cfg)
    folder = run_folder(cfg, root)
    ledger_lock = ledger.lock(digest) if ledger is not None else contextlib.nullcontext()
    with ledger_lock, digest_lock(folder.parent, digest):
        run = Run.load(cfg, root, ledger) if is_done(cfg, root, ledger) else None
        if run is None:
            record = _train(cfg, folder, root, ledger)
            run = Run(cfg, record, folder, ledger)
        return _complete(run, ledger, keep_weights, derive)


def _weights_again(run: Run, ledger: Ledger, need: str) -> dict:
    """The weights a finished run ended with, recovered by training it again on a machine of its kind (same CPU
    kind, kernels, threads and torch: the run is deterministic there), checked against the recorded SHA-256."""
    import tempfile

    print(f"  re-training {run.config.model} seed {run.config.seed} ({run.digest}) to recover its weights for "
          f"{need} (a machine of its kind: it must come out identical)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bnext-recover-") as tmp:
        fresh = retrain(dataclasses.replace(run.config, progress=False), ledger, tmp)
        if fresh["weights_sha256"] != run.record["weights_sha256"]:
            raise LedgerError(f"run {run.digest} re-trained on a machine of its kind did not come out identical "
                              "(weights' SHA-256 differs): its record cannot be completed; run make audit")
        return read_checkpoint(Path(tmp) / run.digest / "model.pt")["model"]


def _complete(run: Run, ledger: Ledger | None, keep_weights: bool, derive: Sequence[tuple]) -> Run:
    """Add to ``run``'s record what this caller needs and it lacks (derived values, committed weights) and write it
    where it is missing (this machine's run cache, the ledger)."""
    record = dict(run.record, derived=dict(run.record["derived"]), derived_s=dict(run.record.get("derived_s", {})))
    todo = [s for s in derive if _key(s) not in record["derived"]]
    commit = keep_weights and ledger is not None and not ledger.weights_path(run.digest).exists()
    if todo or commit:
        try:
            state = run.weights()
        except LedgerError as e:  # recorded without what this caller needs of its weights
            need = ", ".join([_key(s) for s in todo] + (["its weights committed (a teacher)"] if commit else []))
            theirs = run.record["machine"]
            if ledger is None or not same_machine(theirs, machine(), run.config.threads):
                raise LedgerError(f"{e}; this caller needs {need}: on a machine of its kind ({cpu_kind(theirs)}, "
                                  f"torch {theirs.get('torch')}) it is re-trained identically to recover them"
                                  ) from None
            state = _weights_again(run, ledger, need)
        model = build_model(run.config.model, record["num_classes"], record["in_chans"], **run.config.model_options())
        model.load_state_dict(state)
        for spec in todo:
            t = time.perf_counter()
            key, value = _derived(run.config, spec, model.eval())
            record["derived"][key] = value
            # what it cost beside the training (wall_s): a part's estimate of a run that computes it adds this
            record["derived_s"][key] = round(time.perf_counter() - t, 2)
        if commit:
            ledger.put_weights(run.digest, state)
    if run.folder is not None and (todo or not (run.folder / "record.json").exists()):
        _write_local(run.folder, record)
    if ledger is not None and (todo or not ledger.has(run.config)):
        ledger.put(record)
    return Run(run.config, record, run.folder, ledger)


def _key(spec: tuple) -> str:
    return landscape_key(*spec[1:])


def retrain(cfg: TrainConfig, ledger: Ledger, root: str | os.PathLike) -> dict:
    """Train ``cfg`` again from nothing into ``root`` (a scratch run cache), its teachers from the ledger's
    committed weights (never trained again); the fresh record, written nowhere else (:mod:`bnext_lib.audit`)."""
    for name in cfg.teachers:
        t_cfg = teacher_config(name, cfg)
        if not ledger.has(t_cfg) or not ledger.weights_path(config_hash(t_cfg)).exists():
            raise LedgerError(f"teacher {name} ({config_hash(t_cfg)}) of run {config_hash(cfg)} has no committed "
                              f"weights in {ledger.root}: the run cannot be re-trained as it was")
    folder = Path(root) / config_hash(cfg)
    shutil.rmtree(folder, ignore_errors=True)
    return _train(cfg, folder, root, ledger)


# --------------------------------------------------------------------------------------------- teachers
def load_teachers(cfg: TrainConfig, root: str | os.PathLike | None = None,
                  ledger: Ledger | None = None) -> dict[str, Teacher]:
    """``{name: Teacher}`` for every teacher of ``cfg``: committed in the ledger, else from the run cache; missing
    ones are trained first. Under ``torchrun`` only rank 0 trains; the other ranks wait for its runs."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    teachers = {}
    for name in cfg.teachers:
        t_cfg = teacher_config(name, cfg)
        if rank == 0 or world == 1:
            run = run_one(t_cfg, root, ledger, keep_weights=True)
        else:
            while not is_done(t_cfg, root, ledger):
                time.sleep(2)
            run = Run.load(t_cfg, root, ledger)
        teachers[name] = Teacher(run.load_model(), float(run.final["test_top1"]), run.digest,
                                 run.record["weights_sha256"])
    return teachers


def teacher_configs(configs: Sequence[TrainConfig], threads: int | None = None) -> dict[str, TrainConfig]:
    """``{digest: config}`` of every teacher run the configurations need."""
    out = {}
    for c in configs:
        for name in c.teachers:
            t = teacher_config(name, c)
            out.setdefault(config_hash(t), dataclasses.replace(t, threads=threads or t.threads))
    return out


def ensure_teachers(configs: Sequence[TrainConfig], workers: int = 1, threads: int | None = None,
                    ledger: Ledger | None = None) -> dict:
    """Train (or find) every teacher the configurations need, side by side; ``{teacher config digest: Run}``."""
    t_cfgs = teacher_configs(configs, threads)
    runs = run_many(list(t_cfgs.values()), workers=workers, threads=threads, ledger=ledger, teachers=True)
    return dict(zip(t_cfgs, runs))


# --------------------------------------------------------------------------------------------- many runs
def _run_job(args: tuple) -> dict:
    cfg, root, ledger_root, keep, derive, expected = args
    end = deadline()
    if end is not None and time.time() + (expected or 0.0) > end:  # would not fit: the next part trains it
        return {"digest": config_hash(cfg), "waiting": True}
    t = time.perf_counter()
    run = run_one(cfg, root, Ledger(ledger_root) if ledger_root else None, keep, derive)
    return {"digest": run.digest, "seconds": time.perf_counter() - t}


def run_many(configs: Sequence[TrainConfig], root: str | os.PathLike | None = None, workers: int = 1,
             threads: int | None = None, verbose: bool = True, ledger: Ledger | None = None,
             derive: dict[str, Sequence[tuple]] | None = None, teachers: bool | Collection[str] = False,
             partial: bool = False) -> list[Run | None]:
    """Every configuration's :class:`Run`, training the missing ones ``workers`` at a time.

    Configurations are validated before anything is trained; duplicates are trained once; missing teachers train
    first (their weights committed to the ledger). ``derive``: ``{digest: specs}`` of values computed from a run's
    weights when it finishes (:func:`run_one`). ``teachers``: these runs are teachers (``True``: all; else the
    digests of those that are), whose weights are committed to the ledger.

    Raises:
        RunsWaiting: under a deadline (:func:`deadline`), when runs did not fit; with ``partial``, their places in
            the returned list are None instead.
    """
    for cfg in configs:
        cfg.validate()
    derive = derive or {}
    keep = (lambda d: True) if teachers is True else (lambda d: d in (teachers or ()))
    todo: dict[str, TrainConfig] = {}
    for cfg in configs:
        digest = config_hash(cfg)
        if not _ready(cfg, root, ledger, keep(digest), derive.get(digest, ())):
            todo.setdefault(digest, dataclasses.replace(cfg, progress=False, threads=threads or cfg.threads))
    waiting: set[str] = set()
    if todo:
        waiting = _train_missing(list(todo.values()), len(configs), root, workers, threads, verbose, ledger, derive,
                                 keep)
    runs = [None if config_hash(c) in waiting else Run.load(c, root, ledger) for c in configs]
    if waiting and not partial:
        raise RunsWaiting([c for c, r in zip(configs, runs) if r is None], sum(r is not None for r in runs))
    return runs


def _ready(cfg, root, ledger, keep: bool, derive: Sequence[tuple]) -> bool:
    """Whether the run is recorded (in the ledger, when there is one) with everything this caller needs of it."""
    if not is_done(cfg, root, ledger) or (ledger is not None and not ledger.has(cfg)):
        return False
    if not derive and not (keep and ledger is not None):
        return True
    run = Run.load(cfg, root, ledger)
    return (all(_key(s) in run.record["derived"] for s in derive)
            and not (keep and ledger is not None and not ledger.weights_path(run.digest).exists()))


def _expected_time(costs: Sequence[float | None], workers: int) -> str:
    """"; ~N min expected ..." from the ledger's recorded costs of these runs on this kind of machine."""
    known = [c for c in costs if c is not None]
    if not known:
        return "; no run of these kinds recorded yet, so no time estimate"
    unknown = len(costs) - len(known)
    return (f"; ~{sum(known) / 60 / max(1, workers):.0f} min expected from the ledger's recorded costs"
            + (f", plus {unknown} run(s) of a kind never recorded" if unknown else ""))


def _train_missing(pending, asked, root, workers, threads, verbose, ledger, derive, keep) -> set[str]:
    """Train ``pending`` (teachers they miss first); the digests of the runs that did not fit the deadline."""
    # one seed of every variant before the next seed: a part cut short by its budget is balanced over the arms it
    # compares, and workers starting together compile different graphs (later seeds find theirs in Inductor's cache)
    pending = sorted(pending, key=lambda c: c.seed)
    missing = {d: t for d, t in teacher_configs(pending, threads).items()
               if not _ready(t, root, ledger, True, ())}
    where = str(ledger.root) if ledger is not None else None
    # the choice ledger's runs price the variants the report has not recorded yet (notebook 04's presets)
    expect = (ledger.estimator(cpu_kind(machine()), also=[Ledger(choice_ledger_beside(ledger.root))])
              if ledger is not None else (lambda c, cold=False, derived=(): None))

    graphs: set = set()

    def job(c, commit_weights):
        # a part pays each graph's compilation once, on its first run (later ones find it in Inductor's cache)
        cold = graph_key(c) not in graphs
        graphs.add(graph_key(c))
        specs = tuple(derive.get(config_hash(c), ()))
        return (c, root, where, commit_weights, specs, expect(c, cold, [_key(s) for s in specs]))

    # the missing teachers (strong ones, listed last, first) train side by side with the runs that need none of
    # them, so that no worker waits for a teacher; the runs that distil from them follow
    pending = [c for c in pending if config_hash(c) not in missing]  # a teacher asked for as a run: trained once
    needs = [any(config_hash(teacher_config(n, c)) in missing for n in c.teachers) for c in pending]
    first = [job(t, True) for t in reversed(missing.values())]
    first += [job(c, keep(config_hash(c))) for c, n in zip(pending, needs) if not n]
    later = [job(c, keep(config_hash(c))) for c, n in zip(pending, needs) if n]
    if verbose:
        print(f"training {len(pending)} of {asked} runs ({asked - len(pending)} recorded)"
              + (f" and {len(missing)} teacher(s) they need" if missing else "")
              + (f", {workers} worker(s)" if executor_spec() is None else "")
              + _expected_time([j[-1] for j in first + later], workers), file=sys.stderr, flush=True)
    t0, waiting, spec = time.perf_counter(), set(), executor_spec()
    if verbose and spec is not None:
        print(f"  as {spec.cluster} job arrays (submitit, logs in {spec.folder})", file=sys.stderr, flush=True)
    for batch in (first, later):
        if batch is later:  # a student whose teacher waits for the next part waits with it
            stuck = [j for j in batch if any(config_hash(teacher_config(n, j[0])) in waiting for n in j[0].teachers)]
            waiting |= {config_hash(j[0]) for j in stuck}
            batch = [j for j in batch if j not in stuck]

        def report(i: int, value: dict, batch=batch) -> None:
            c = batch[i][0]
            if value.get("waiting"):
                waiting.add(value["digest"])
                if verbose:
                    print(f"  waits for the next part: {c.model} seed {c.seed} ({value['digest']})", file=sys.stderr,
                          flush=True)
            elif verbose:
                r = Run.load(c, root, ledger).final
                print(f"  trained {c.model} seed {c.seed} ({value['digest']}): test top-1 {r['test_top1']:.2f} %, "
                      f"{value['seconds']:.0f} s [{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)

        if batch and spec is not None:  # a cluster: one job array per batch
            cluster_map(_run_job, batch, spec, on_done=report)
        elif batch:
            parallel_map(_run_job, batch, workers, threads, on_done=report, desc="runs" if verbose else None)
    return waiting
