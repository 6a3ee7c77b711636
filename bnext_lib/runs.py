"""Cached training runs shared by the notebooks: the run cache, and the teachers it holds.

A run is stored in ``data/runs/<digest>/`` where ``digest`` is :func:`~bnext_lib.train.config_hash` of its full
configuration (everything that changes its numbers: not the thread count, device, ``compile`` or progress bars).
A notebook asking for a run that another notebook already trained gets it back without training; changing one
option trains only the runs it touches. The folder holds the engine's ``metrics.csv``, ``trace.csv``,
``result.json`` and, once the run is complete, ``model.pt`` (the completion marker). An interrupted run keeps
its ``last.pt`` and resumes from it the next time it is asked for.

:func:`run_many` trains the missing runs side by side in ``workers`` processes (:mod:`bnext_lib.pool`). Teachers a
batch of runs needs are trained first, once, so that no two workers race for the same teacher.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from .checkpoints import atomic_save, atomic_write_text, read_checkpoint
from .config import TrainConfig, config_hash, teacher_config
from .data import default_data_root
from .distill import Teacher
from .models import build_model
from .pool import parallel_map
from .train import train

__all__ = ["Run", "runs_root", "run_folder", "is_done", "run_one", "run_many",
           "load_teachers", "ensure_teachers"]


def runs_root(data_root: str | os.PathLike | None = None) -> Path:
    """``$BNEXT_RUNS`` if set (a separate cache: runs under other CPU kernels, see
    ``benchmarks/kernel_variance.py``), else ``<data root>/runs``."""
    env = os.environ.get("BNEXT_RUNS")
    if env:
        return Path(env)
    return (Path(data_root) if data_root else default_data_root()) / "runs"


def run_folder(cfg: TrainConfig, root: str | os.PathLike | None = None) -> Path:
    """The folder a configuration's run lives in. A finished run cached by an earlier version, whose digest then
    covered options that do not change the run (the teacher options of a run without teachers), is found under
    its old name."""
    base = Path(root or runs_root(cfg.data_root))
    digest = config_hash(cfg)
    folder = base / digest
    if not folder.exists():
        return _older_names(base).get(digest, folder)
    return folder


_OLDER: dict[Path, tuple[int, dict[str, Path]]] = {}


def _older_names(base: Path) -> dict[str, Path]:
    """``{today's digest: folder}`` of the finished runs under ``base`` stored under another name (read from their
    ``config.json``; cached until the folder changes)."""
    try:
        stamp = base.stat().st_mtime_ns
    except OSError:
        return {}
    if base in _OLDER and _OLDER[base][0] == stamp:
        return _OLDER[base][1]
    index = {}
    for folder in base.iterdir():
        try:
            if not (folder / "model.pt").exists():
                continue
            values = json.loads((folder / "config.json").read_text())
            values["teachers"] = tuple(values.get("teachers", ()))
            digest = config_hash(TrainConfig(**values))
        except (OSError, ValueError, TypeError):  # an unreadable or foreign folder is not a run of ours
            continue
        if digest != folder.name:
            index.setdefault(digest, folder)
    _OLDER[base] = (stamp, index)
    return index


def is_done(cfg: TrainConfig, root: str | os.PathLike | None = None) -> bool:
    return (run_folder(cfg, root) / "model.pt").exists()


@dataclass
class Run:
    """A finished run read back from its folder.

    Attributes:
        config: the configuration it was trained with.
        folder: ``data/runs/<digest>``.
        result: the engine's summary (``final``, ``history``, ``trace``, ``teachers``, ``wall_s``...).
    """

    config: TrainConfig
    folder: Path
    result: dict

    @property
    def digest(self) -> str:
        return self.folder.name

    @property
    def final(self) -> dict:
        return self.result["final"]

    def history(self):
        """Per-epoch metrics as a ``pandas.DataFrame``."""
        import pandas as pd
        return pd.DataFrame(self.result["history"])

    def trace(self):
        """16 points per epoch (loss, lr, temperature, saturated fraction) as a ``pandas.DataFrame``."""
        import pandas as pd
        return pd.DataFrame(self.result.get("trace", []))

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained model in eval mode."""
        state = read_checkpoint(self.folder / "model.pt")
        cfg = self.config
        model = build_model(cfg.model, state["num_classes"], state["in_chans"], **cfg.model_options())
        model.load_state_dict(state["model"])
        return model.eval().to(device)

    @classmethod
    def load(cls, cfg: TrainConfig, root: str | os.PathLike | None = None) -> "Run":
        folder = run_folder(cfg, root)
        if not (folder / "model.pt").exists():
            raise FileNotFoundError(f"run {folder.name} ({cfg.model}, seed {cfg.seed}) has not been trained")
        try:
            result = json.loads((folder / "result.json").read_text())
        except (OSError, ValueError) as e:
            raise RuntimeError(f"{folder / 'result.json'} is unreadable ({e}); delete {folder} to retrain") from e
        return cls(cfg, folder, result)


def run_one(cfg: TrainConfig, root: str | os.PathLike | None = None) -> Run:
    """Train ``cfg`` into its cache folder unless it is there already (resuming an interrupted run)."""
    folder = run_folder(cfg, root)
    if not (folder / "model.pt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=1))
        run_cfg = dataclasses.replace(cfg, out=str(folder), resume=(folder / "last.pt").exists())
        teachers = load_teachers(cfg, root) if cfg.teachers else None
        result = train(run_cfg, single_process=True, teachers=teachers)
        model = result["model"]
        atomic_save({"model": model.state_dict(), "num_classes": result["num_classes"],
                     "in_chans": result["in_chans"], "config": cfg.to_dict()}, folder / "model.pt")
        (folder / "last.pt").unlink(missing_ok=True)  # the optimizer state is twice the model; done runs drop it
    return Run.load(cfg, root)


# --------------------------------------------------------------------------------------------- teachers
def _legacy_teacher(cfg: TrainConfig, root: str | os.PathLike | None) -> None:
    """Move a teacher cached by earlier versions (``data/teachers/<digest>/teacher.pt``) into the run cache."""
    old = (Path(cfg.data_root) if cfg.data_root else default_data_root()) / "teachers" / config_hash(cfg, legacy=True)
    if not (old / "teacher.pt").exists() or is_done(cfg, root):
        return
    state = read_checkpoint(old / "teacher.pt")
    folder = run_folder(cfg, root)
    folder.mkdir(parents=True, exist_ok=True)
    final = {"epoch": cfg.epochs, "test_top1": float(state["test_top1"])}
    atomic_write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=1))
    atomic_write_text(folder / "result.json", json.dumps({
        "final": final, "history": [final], "trace": [], "wall_s": 0.0, "config": cfg.to_dict(), "teachers": {},
        "migrated_from": str(old)}, indent=1))
    atomic_save({k: state[k] for k in ("model", "num_classes", "in_chans")} | {"config": cfg.to_dict()},
                folder / "model.pt")


def load_teachers(cfg: TrainConfig, root: str | os.PathLike | None = None) -> dict[str, Teacher]:
    """``{name: Teacher}`` for every teacher of ``cfg``, from the run cache; missing ones are trained first.

    Under ``torchrun`` only rank 0 trains; the other ranks wait for its runs to complete.
    """
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    teachers = {}
    for name in cfg.teachers:
        t_cfg = teacher_config(name, cfg)
        _legacy_teacher(t_cfg, root)
        if rank == 0 or world == 1:
            run = run_one(t_cfg, root)
        else:
            while not is_done(t_cfg, root):
                time.sleep(2)
            run = Run.load(t_cfg, root)
        teachers[name] = Teacher(run.load_model(), float(run.final["test_top1"]))
    return teachers


def ensure_teachers(configs: Sequence[TrainConfig], workers: int = 1, threads: int | None = None) -> dict:
    """Train (or find in the cache) every teacher the configurations need, side by side; ``{teacher config
    digest: Run}``."""
    t_cfgs = {}
    for c in configs:
        for name in c.teachers:
            t = teacher_config(name, c)
            t_cfgs.setdefault(config_hash(t), t)
    for t in t_cfgs.values():
        _legacy_teacher(t, None)
    runs = run_many(list(t_cfgs.values()), workers=workers, threads=threads) if t_cfgs else []
    return dict(zip(t_cfgs, runs))


def _missing_teachers(configs: Sequence[TrainConfig], threads: int | None) -> dict[str, TrainConfig]:
    """``{digest: config}`` of the teacher runs the configurations need and the cache lacks (earlier versions'
    teachers are moved into the cache first)."""
    missing = {}
    for c in configs:
        for name in c.teachers:
            t = teacher_config(name, c)
            _legacy_teacher(t, None)
            if not is_done(t):
                missing.setdefault(config_hash(t), dataclasses.replace(t, threads=threads or t.threads))
    return missing


def _run_job(args: tuple) -> dict:
    cfg, root = args
    t = time.perf_counter()
    run = run_one(cfg, root)
    return {"digest": run.digest, "seconds": time.perf_counter() - t}


def run_many(configs: Sequence[TrainConfig], root: str | os.PathLike | None = None, workers: int = 1,
             threads: int | None = None, verbose: bool = True) -> list[Run]:
    """Every configuration's :class:`Run`, training the missing ones ``workers`` at a time.

    Configurations are validated before anything is trained; duplicates are trained once.
    """
    for cfg in configs:
        cfg.validate()
    todo: dict[str, TrainConfig] = {}
    for cfg in configs:
        if not is_done(cfg, root):
            todo.setdefault(config_hash(cfg), dataclasses.replace(cfg, progress=False, threads=threads or cfg.threads))
    if todo:
        # one seed of every variant before the next seed: workers starting together then compile different graphs,
        # and the later seeds find theirs in Inductor's on-disk cache instead of compiling the same graph at once
        pending = sorted(todo.values(), key=lambda c: c.seed)
        missing = _missing_teachers(pending, threads)
        # the missing teachers (strong ones, listed last, first) train side by side with the runs that need none of them, so that no
        # worker waits for a teacher; the runs that distil from them follow
        needs = [any(config_hash(teacher_config(n, c)) in missing for n in c.teachers) for c in pending]
        first = [(t, None) for t in reversed(missing.values())]
        first += [(c, root) for c, n in zip(pending, needs) if not n]
        later = [(c, root) for c, n in zip(pending, needs) if n]
        if verbose:
            print(f"training {len(pending)} of {len(configs)} runs ({len(configs) - len(pending)} cached)"
                  + (f" and {len(missing)} teacher(s) they need" if missing else "") + f", {workers} worker(s)",
                  file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        for batch in (first, later):
            def report(i: int, value: dict, batch=batch) -> None:
                if verbose:
                    c, where = batch[i]
                    r = Run.load(c, where).final
                    print(f"  trained {c.model} seed {c.seed} ({value['digest']}): test top-1 {r['test_top1']:.2f} %, "
                          f"{value['seconds']:.0f} s [{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)

            if batch:
                parallel_map(_run_job, batch, workers, threads, on_done=report, desc="runs" if verbose else None)
    return [Run.load(cfg, root) for cfg in configs]
