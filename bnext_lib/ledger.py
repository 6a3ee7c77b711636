"""The ledger: every finished run of a profile as one small, committed JSON record, named by its digest.

A run's weights and checkpoints live in the machine's run cache (``data/runs/``, :mod:`bnext_lib.runs`), which dies
with the machine; its record lives in the ledger (``reports/<profile>/ledger/``: ``reports/ledger/`` for cpu),
which is committed, so that a report can be trained in parts on different machines and audited by anyone.
A record holds what the report reads from a run and what an auditor needs to check it:

* ``schema``, ``digest`` (:func:`~bnext_lib.config.config_hash`) and the full configuration, including the options
  the digest leaves out but rounding depends on (threads, device);
* ``final``, ``history`` (per epoch), ``trace`` (16 points per epoch), ``wall_s``, ``started``/``ended``;
* ``teachers``: per teacher its digest, the SHA-256 of its weights and its top-1;
* ``weights_sha256``: the SHA-256 of the weights the run ended with (:func:`weights_sha256`), ``params``;
* ``machine`` (CPU model and instruction sets, GPU, torch and CUDA) and ``commit``;
* ``derived``: what a notebook computes from the weights (loss-landscape slices), computed when the run
  finishes, so that a finished run never needs its weights again.

Teachers' weights, which students depend on, are committed once beside the records (``weights/<digest>.safetensors``)
and checked against their recorded SHA-256 when they are loaded. ``index.csv`` is a table of the records for
readers, derived from them (:meth:`Ledger.write_index`).

Integrity: a record that is truncated, not JSON, fails the schema, or whose digest is not its configuration's,
raises :class:`LedgerError` naming the file, and is never used; every write is atomic; :meth:`Ledger.lock` holds a
file lock per digest, so that two processes (or two cluster jobs on a shared file system) never train one run.
A change to the engine that changes a run's numbers bumps :data:`~bnext_lib.config.NUMERICS`, which is part of
every digest: older records are then simply not found (and listed as orphans), never mixed with new ones.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .checkpoints import atomic_write, atomic_write_text
from .config import TrainConfig, config_hash

__all__ = ["SCHEMA", "REQUIRED", "LedgerError", "Ledger", "ledger_dir", "choice_ledger_beside", "report_dir", "machine",
           "same_machine", "git_commit", "weights_sha256", "record_config", "config_of", "cpu_kind", "digest_lock", "now",
           "dumps"]

SCHEMA = 1
# the fields every record has, with their JSON types
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": int, "digest": str, "config": dict, "final": dict, "history": list, "trace": list, "teachers": dict,
    "weights_sha256": str, "params": int, "num_classes": int, "in_chans": int, "wall_s": (int, float),
    "started": str, "ended": str, "machine": dict, "commit": str, "derived": dict}
# configuration fields that describe where a run was asked to write, not the run
_NOT_RECORDED = ("out", "resume", "progress")
_REPO_ROOT = Path(__file__).resolve().parents[1]


class LedgerError(ValueError):
    """A record that cannot be used; the message is one line naming the file and what is wrong."""


def report_dir(profile: str) -> Path:
    """Where a profile's report goes unless told otherwise (the runner's ``--out``, a notebook's ``out_dir``): the
    committed cpu report in ``reports/``, every other profile beside it (``reports/gpu/``, ``reports/paper/``;
    smoke's in ``reports/.scratch/``, which git ignores), so that no profile writes over another's."""
    return _REPO_ROOT / "reports" / {"cpu": "", "smoke": ".scratch"}.get(profile, profile)


def ledger_dir(profile: str, choice: bool = False) -> Path:
    """A profile's ledger: ``$BNEXT_LEDGER/<profile>`` if that is set (tests, a scratch ledger), else
    ``ledger/`` in the profile's report folder (:func:`report_dir`). ``choice``: the ledger of the
    benchmarks' runs on choice seeds (the variance budget, the regime's choice), ``choice-ledger/`` beside it, which
    never holds a report seed's run; notebook 04's recipe choice is a batch of the report's plan, in its ledger."""
    env = os.environ.get("BNEXT_LEDGER")
    name = "choice-ledger" if choice else "ledger"
    if env:
        return Path(env) / (f"{profile}-choice" if choice else profile)
    return report_dir(profile) / name


def choice_ledger_beside(root: str | os.PathLike) -> Path:
    """The choice ledger beside the report ledger in ``root``, by :func:`ledger_dir`'s naming (``ledger/`` ->
    ``choice-ledger/``, ``$BNEXT_LEDGER/<profile>`` -> ``<profile>-choice``)."""
    root = Path(root)
    return root.parent / ("choice-ledger" if root.name == "ledger" else f"{root.name}-choice")


# --------------------------------------------------------------------------------------------- provenance
# the settings that cap torch's CPU kernels below what the CPU offers: they change rounding as another CPU would
KERNEL_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
_ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
        "amx_tile", "amx_int8", "asimd", "sve")


def machine() -> dict:
    """The machine a run trained on: CPU model and the instruction sets torch's kernels choose by, cores, GPU,
    torch, CUDA and Python versions."""
    import torch

    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    info = {"cpu": model or platform.processor() or platform.machine(), "isa": [f for f in _ISA if f in flags],
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    caps = {k: os.environ[k] for k in KERNEL_CAPS if os.environ.get(k)}
    if caps:  # kernels capped below the CPU's best (make test-portable, benchmarks/kernel_variance.py)
        info["kernel_caps"] = caps
    return info


def cpu_kind(info: Mapping[str, Any]) -> str:
    """What makes two machines' runs cost and round alike: the CPU model, its instruction sets and any cap on the
    kernels (or the GPU)."""
    if info.get("gpu"):
        return str(info["gpu"])
    caps = "".join(f", {k}={v}" for k, v in sorted(info.get("kernel_caps", {}).items()))
    return f"{info.get('cpu')} [{' '.join(info.get('isa', []))}{caps}]"


def git_commit() -> str:
    """HEAD (marked when the code differs from it, reports aside); ``$BNEXT_COMMIT`` where there is no ``.git``
    (a machine that got the working tree only)."""
    if os.environ.get("BNEXT_COMMIT"):
        return os.environ["BNEXT_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        # outputs don't count; `git diff` compares contents through the notebooks' clean filter (bnext_lib/nbclean.py)
        dirty = subprocess.run(["git", "diff", "HEAD", "--name-only", "--", ".", ":!reports"],
                               cwd=_REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def weights_sha256(state: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict's tensors (name, dtype, shape and bytes, in name order): the same weights give the
    same hash whatever file format holds them."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def record_config(cfg: TrainConfig) -> dict:
    """The configuration as a record keeps it: every field but where the run was asked to write."""
    return {k: v for k, v in cfg.to_dict().items() if k not in _NOT_RECORDED}


def config_of(values: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` a record's ``config`` describes."""
    values = dict(values)
    values["teachers"] = tuple(values.get("teachers", ()))
    return TrainConfig(**values)


# --------------------------------------------------------------------------------------------- the ledger
class Ledger:
    """The records of one profile in ``root`` (``<digest>.json``), teachers' weights in ``root/weights``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.skipped: list[str] = []  # the records the last records(skip_bad=True) passed over, named

    def __repr__(self) -> str:
        return f"Ledger({str(self.root)!r})"

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.json"

    def weights_path(self, digest: str) -> Path:
        return self.root / "weights" / f"{digest}.safetensors"

    # ------------------------------------------------------------------ reading
    def read(self, path: str | os.PathLike) -> dict:
        """One record, checked: JSON, the schema, and the digest of its configuration (:class:`LedgerError`)."""
        path = Path(path)
        return self.read_file(path, path.stem)

    @staticmethod
    def read_file(path: Path, digest: str) -> dict:
        """:meth:`read` of a record stored under another name (a run cache's ``<digest>/record.json``)."""
        try:
            text = path.read_text()
        except OSError as e:
            raise LedgerError(f"ledger record {path}: unreadable ({e.strerror or e})") from None
        try:
            record = json.loads(text)
        except ValueError as e:
            raise LedgerError(f"ledger record {path}: truncated or not JSON ({e})") from None
        problem = _schema_problem(record)
        if problem:
            raise LedgerError(f"ledger record {path}: {problem}")
        try:
            cfg = config_of(record["config"])
        except TypeError as e:
            raise LedgerError(f"ledger record {path}: its configuration is not a TrainConfig ({e})") from None
        found = config_hash(cfg)
        if found != record["digest"] or found != digest:
            raise LedgerError(f"ledger record {path}: its configuration's digest is {found}, the record says "
                              f"{record['digest']} and its name {digest} (edited, written by other code, or before "
                              "a change of the engine's numerics); delete it to re-train")
        return record

    def get(self, cfg: TrainConfig) -> dict | None:
        """``cfg``'s record (checked), or None when the ledger does not have it."""
        path = self.path(config_hash(cfg))
        return self.read(path) if path.exists() else None

    def has(self, cfg: TrainConfig) -> bool:
        return self.path(config_hash(cfg)).exists()

    def records(self, skip_bad: bool = False) -> Iterator[dict]:
        """Every record, checked, in digest order. ``skip_bad``: pass over a record that fails its checks (an
        older engine's, once :data:`~bnext_lib.config.NUMERICS` moved on, or a damaged one), naming it in
        :attr:`skipped`, instead of raising: for summaries and estimates, never for the runs a report reads."""
        self.skipped: list[str] = []
        for path in sorted(self.root.glob("*.json")):
            try:
                yield self.read(path)
            except LedgerError as e:
                if not skip_bad:
                    raise
                self.skipped.append(str(e))

    # ------------------------------------------------------------------ writing
    def put(self, record: Mapping[str, Any]) -> Path:
        """Write a record atomically (checked first: a bad record is never written)."""
        problem = _schema_problem(record)
        if problem:
            raise LedgerError(f"ledger record {record.get('digest')}: {problem}")
        return atomic_write_text(self.path(record["digest"]), dumps(record))

    def put_weights(self, digest: str, state: Mapping[str, Any]) -> Path:
        """Commit a teacher's weights (safetensors) beside its record."""
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items() if hasattr(v, "detach")}
        data = save(tensors, metadata={"digest": digest})
        return atomic_write(self.weights_path(digest), lambda f: f.write(data))

    def load_weights(self, digest: str, sha256: str) -> dict:
        """A teacher's committed weights, checked against the SHA-256 its record gives."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.weights_path(digest)
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise LedgerError(f"teacher weights {path}: unreadable ({e})") from None
        found = weights_sha256(state)
        if found != sha256:
            raise LedgerError(f"teacher weights {path}: SHA-256 {found[:12]}… is not the recorded {sha256[:12]}…")
        return state

    def lock(self, digest: str):
        """Hold the lock of one digest in this ledger (:func:`digest_lock`)."""
        return digest_lock(self.root, digest)

    # ------------------------------------------------------------------ for readers
    def index(self):
        """One row per record: digest, model, seed, the options that tell variants apart, top-1s, wall seconds,
        machine and commit (a ``pandas.DataFrame``)."""
        import pandas as pd

        rows = []
        for r in self.records(skip_bad=True):
            c, f = r["config"], r["final"]
            rows.append({"digest": r["digest"], "model": c["model"], "seed": c["seed"],
                         "train_subset": c.get("train_subset"), "epochs": c["epochs"],
                         "teachers": "+".join(c.get("teachers", [])), "augment": c["augment"],
                         "test_top1": f.get("test_top1"), "val_top1": f.get("val_top1"),
                         "train_eval_top1": f.get("train_eval_top1"), "wall_s": round(r["wall_s"], 1),
                         "machine": cpu_kind(r["machine"]), "commit": r["commit"][:12], "ended": r["ended"],
                         "teacher_weights": self.weights_path(r["digest"]).exists()})
        return pd.DataFrame(rows)

    def write_index(self) -> Path | None:
        """``index.csv`` from the records (none without records)."""
        table = self.index()
        if table.empty:
            return None
        return atomic_write_text(self.root / "index.csv", table.to_csv(index=False))

    def summary(self) -> dict:
        """What the ledger holds, for the runner's and the report's ledger lines: ``runs``, ``hours`` (worker-hours
        of wall time), ``cpu_hours`` (each run's wall time times the torch threads it trained with, for a GPU run
        its host threads), ``machines`` (``{kind: runs}``), ``commits`` (short hashes) and ``skipped`` (records
        that are not usable, named)."""
        records = list(self.records(skip_bad=True)) if self.root.is_dir() else []
        machines: dict[str, int] = {}
        for r in records:
            machines[cpu_kind(r["machine"])] = machines.get(cpu_kind(r["machine"]), 0) + 1
        return {"runs": len(records), "hours": sum(r["wall_s"] for r in records) / 3600,
                "cpu_hours": sum(r["wall_s"] * (r["machine"].get("torch_threads") or 1) for r in records) / 3600,
                "machines": machines,
                "commits": sorted({r["commit"][:7] for r in records}), "skipped": list(self.skipped)}

    def estimate(self, cfg: TrainConfig, kind: str) -> float | None:
        """Wall seconds a run of ``cfg`` is expected to take on a machine of ``kind`` (:meth:`estimator`)."""
        return self.estimator(kind)(cfg)

    def estimator(self, kind: str, also: Sequence["Ledger"] = (), levels: Sequence[int] = (0, 1, 2)):
        """A function from a configuration to the wall seconds its run is expected to take on a machine of
        ``kind`` (:func:`cpu_kind`), reading the records once: the median of the recorded runs of the same variant
        (every option but the seeds), else of the same model, data size, length, batch, evaluation rhythm and
        number of teachers, else a line through the medians of the same model, data size, length and batch at the
        numbers of teachers recorded (two at least: a two-teacher student priced from the CE and one-teacher ones,
        each teacher a forward pass a step); on this kind of machine first, else on any. ``also``: ledgers (anything
        with this method) asked in turn at each of these levels when nothing alike is recorded here (the choice
        ledger, whose runs on choice seeds are the report's variants often before the report trains one).
        ``levels``: which of these three to ask. None when nothing alike was recorded in any."""
        if also:  # level by level: a variant recorded in the choice ledger before a line through this one's
            chain = [ledger.estimator(kind, levels=(level,)) for level in levels for ledger in (self, *also)]
            return lambda cfg, cold=False, derived=(): next(
                (e for e in (f(cfg, cold, derived) for f in chain) if e is not None), None)
        table = self._cost_table(kind)

        def expected(cfg: TrainConfig, cold: bool = False, derived: Sequence[str] = ()) -> float | None:
            """``cold``: the run is the first of its graph in this part, so it pays the compilation. ``derived``:
            the values (:func:`bnext_lib.landscape.landscape_key`) it computes when it finishes, at their recorded
            cost where runs alike recorded one (records written before it was timed say nothing)."""
            mine = record_config(cfg)
            for level, key in enumerate(_cost_keys(mine)):
                for same_kind in (True, False):
                    runs = table.get((level, same_kind, key), []) if level in levels else []
                    warm = _warm_cost(runs, level, len(mine.get("teachers", ())))
                    if warm is None:
                        continue
                    paid = max(c for _, _, c, _ in runs) if cold and cfg.compile else 0.0
                    extra = sum(statistics.median(seen) for seen in
                                ([d[k] for _, _, _, d in runs if k in d] for k in derived) if seen)
                    return float(warm + paid + extra)
            return None
        return expected

    def _cost_table(self, kind: str) -> dict[tuple, list[tuple[int, float, float, dict]]]:
        """``{(level, on this kind, key): [(teachers, warm wall s, compilation s, derived s)]}``, the levels those
        of :func:`_cost_keys`."""
        costs: dict[tuple, list] = {}
        for r in self.records(skip_bad=True):
            paid = compile_seconds(r)
            entry = (len(r["config"].get("teachers", ())), r["wall_s"] - paid, paid, r.get("derived_s", {}))
            for level, key in enumerate(_cost_keys(r["config"])):
                costs.setdefault((level, cpu_kind(r["machine"]) == kind, key), []).append(entry)
        return costs


def _cost_keys(values: Mapping[str, Any]) -> tuple:
    """What runs alike share, closest first: the variant; its shape (:func:`_shape`); its model, data size, length
    and batch (the teachers on a line, and the evaluation rhythm left out: the line errs high for a run that
    evaluates less often than those recorded, as a budget should)."""
    return _variant(values), _shape(values), _shape(values)[:4]


def _warm_cost(runs: Sequence[tuple], level: int, teachers: int) -> float | None:
    """The cost of a warm run from the runs alike at ``level`` of :func:`_cost_keys` (None when they cannot say)."""
    if not runs:
        return None
    return _median_cost(runs) if level < 2 else _cost_by_teachers(runs, teachers)


def _median_cost(runs: Sequence[tuple]) -> float:
    return statistics.median(w for _, w, _, _ in runs)


def _cost_by_teachers(runs: Sequence[tuple], teachers: int) -> float | None:
    """The warm cost at ``teachers`` on the least-squares line through the median cost at each number of teachers
    recorded; None with fewer than two numbers recorded (nothing to draw a line through)."""
    at = {n: _median_cost([r for r in runs if r[0] == n]) for n in {r[0] for r in runs}}
    if len(at) < 2:
        return None
    slope, intercept = statistics.linear_regression(list(at), list(at.values()))
    return max(0.0, intercept + slope * teachers)


def same_machine(theirs: Mapping[str, Any], here: Mapping[str, Any], threads: int | None = None) -> bool:
    """Whether a run recorded on ``theirs`` re-trains identically ``here``: the same CPU kind (model, instruction
    sets, kernel caps), torch and thread count, and no GPU (whose kernels are not deterministic). ``threads``: the
    run's configured thread count, which its re-training uses too; None (torch's default) compares the machines'
    recorded counts instead."""
    return (cpu_kind(theirs) == cpu_kind(here) and theirs.get("torch") == here.get("torch")
            and (threads is not None or theirs.get("torch_threads") == here.get("torch_threads"))
            and not theirs.get("gpu"))


def compile_seconds(record: Mapping[str, Any]) -> float:
    """What a compiled run paid for compiling its graph in a cold process: its first training step's time beyond
    an ordinary step (the first epoch's ``first_step_s`` against its batch over its images per second); 0 for a
    run not compiled or recorded before steps were timed."""
    if not record["config"].get("compile") or not record.get("history"):
        return 0.0
    first = record["history"][0]
    if first.get("first_step_s") is None or not first.get("train_images_s"):
        return 0.0
    step = record["config"]["batch_size"] / first["train_images_s"]
    return max(0.0, float(first["first_step_s"]) - step)


def graph_key(cfg: TrainConfig) -> tuple:
    """What a compiled graph depends on: the variant without its seeds (runs of one variant share the graph)."""
    return _variant(record_config(cfg))


def _variant(values: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in values.items()
                        if k not in ("seed", "subset_seed", "order_seed", "threads", "device", "data_root")))


def _shape(values: Mapping[str, Any]) -> tuple:
    return (values["model"], values.get("train_subset"), values["epochs"], values["batch_size"],
            len(values.get("teachers", ())), values.get("eval_every"))


@contextlib.contextmanager
def digest_lock(folder: str | os.PathLike, digest: str):
    """Hold the lock of one digest (a file lock in ``folder/.locks``, which git ignores; filelock's, which also
    works on a cluster's shared file system): the process that gets it trains the run, the others wait for it,
    then find its record."""
    from filelock import FileLock

    locks = Path(folder) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{digest}.lock")):
        yield


def dumps(record: Mapping[str, Any]) -> str:
    """A record as it is stored: sorted keys, one value per line where it is short, so that a diff reads well."""
    return json.dumps(record, indent=1, sort_keys=True, allow_nan=True) + "\n"


def _schema_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"not a record (a JSON {type(record).__name__})"
    if record.get("schema") != SCHEMA:
        return f"schema {record.get('schema')!r}, this code reads schema {SCHEMA}"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [k for k, t in REQUIRED.items() if not isinstance(record[k], t) or isinstance(record[k], bool)]
    if wrong:
        return f"wrong type of {', '.join(wrong)}"
    for name, t in record["teachers"].items():
        if not isinstance(t, dict) or not {"digest", "weights_sha256", "test_top1"} <= set(t):
            return f"teacher {name!r} lacks its digest, weights' SHA-256 or top-1"
    return None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
