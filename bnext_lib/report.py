"""The report runner: ``python -m bnext_lib.report`` (``make report``) runs the notebooks with papermill and
assembles REPORT.md; and the one import the notebooks need (``from bnext_lib.report import Study, compare,
combine``).

The report is cut by concern: :mod:`bnext_lib.study` (Study, RunSet: runs and what a notebook writes),
:mod:`bnext_lib.verdicts` (the statistical test and the regime gate), :mod:`bnext_lib.assembly` (REPORT.md,
claims.csv, the README's headline), and this runner.

Runs come from the profile's committed ledger (:mod:`bnext_lib.ledger`); only missing runs train. With a time
budget (``--budget-min``, ``make report BUDGET_MIN=100``) the report is built in parts: a part trains missing runs
until the next would not fit, records each in the ledger as it finishes, and stops cleanly; commit the ledger, and
the same command (on any machine) continues. The notebooks of a part write into ``<out>/.part/``; only a part that
completes every notebook publishes into ``<out>`` and assembles REPORT.md there, so that an interrupted or
unfinished part leaves the committed report as it was (a partial REPORT.md is in ``.part/``).

CLI::

    python -m bnext_lib.report                    # all four notebooks at the cpu profile into reports/
    python -m bnext_lib.report --budget-min 100   # one part: what fits in 100 minutes
    python -m bnext_lib.report --profile smoke    # into reports/.scratch/
    python -m bnext_lib.report --profile gpu      # into reports/gpu/ (paper: reports/paper/)
    python -m bnext_lib.report --assemble-only    # rebuild REPORT.md from reports/results/
    python -m bnext_lib.report --refresh-notebooks  # re-store the checked (NBVAL_CHECK_OUTPUT) outputs
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from . import nbclean
from .assembly import assemble, machine_info, stale_files, update_readme
from .checkpoints import atomic_write_text
from .cluster import EXECUTOR_ENV, ClusterSpec
from .ledger import Ledger, choice_ledger_beside, git_commit, ledger_dir, machine
from .profiles import get_profile
from .progress import PROGRESS_ENV
from .runs import DEADLINE_ENV
from . import plan
from .plan import AT_THE_END, FLOAT_TWIN, distillation_recipes
from .study import NOTEBOOKS, NOTEBOOKS_ENV, REPO_ROOT, RunSet, Study, parse_seeds, report_dir, report_studies
from .verdicts import combine, compare, cut, gate

__all__ = ["AT_THE_END", "FLOAT_TWIN", "REPO_ROOT", "NOTEBOOKS", "Study", "parse_seeds", "RunSet", "compare", "combine",
           "cut", "gate", "distillation_recipes", "plan", "count_runs", "runs_line", "machine_info", "assemble", "update_readme",
           "execute", "record_run", "main"]


# --------------------------------------------------------------------------------------------- runner
@contextlib.contextmanager
def _text_progress():
    """Kernels started meanwhile show text progress bars (stored as text in the executed notebooks, printed by
    papermill's log), not widgets (see :mod:`bnext_lib.progress`)."""

    saved = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "text"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PROGRESS_ENV)
        else:
            os.environ[PROGRESS_ENV] = saved


def execute(notebooks: Sequence[str], profile: str, out: Path, html: bool = True, log: bool = True,
            times: dict | None = None, workers: int | None = None) -> dict:
    """Run notebooks with papermill into ``out/executed`` (and HTML), returning wall seconds per notebook.

    A notebook stopped because its runs wait for the next part (:class:`~bnext_lib.runs.RunsWaiting`) is recorded
    with ``waiting: True`` and the next notebook runs (its runs may all be in the ledger). ``times`` (filled as the
    notebooks end) also holds, when an exception or an interrupt stops a notebook, that notebook's seconds so far
    with ``interrupted: True``: the caller records them before the exception goes on."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    (out / "executed").mkdir(parents=True, exist_ok=True)
    times = {} if times is None else times
    for k, name in enumerate(notebooks):
        src = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        dst = out / "executed" / f"{name}.ipynb"
        print(f"== {name} ({profile}) [notebook {k + 1} of {len(notebooks)}]", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            with _text_progress():
                # relative to the notebook's folder (the kernel's cwd): no machine's path in the executed notebook
                parameters = {"profile": profile, "out_dir": os.path.relpath(out, src.parent),
                              **({"workers": workers} if workers else {})}
                pm.execute_notebook(str(src), str(dst), parameters=parameters,
                                    cwd=str(src.parent), kernel_name="python3", progress_bar=False, log_output=log,
                                    extra_arguments=QUIET_KERNEL)
        except PapermillExecutionError as e:
            times[name] = {"wall_s": round(time.perf_counter() - t, 1), "interrupted": True}
            if e.ename != "RunsWaiting":
                raise
            times[name] = {"wall_s": times[name]["wall_s"], "waiting": True}
            print(f"== {name}: stopped after {times[name]['wall_s'] / 60:.1f} min: {e.evalue}", file=sys.stderr,
                  flush=True)
            continue
        except BaseException:
            times[name] = {"wall_s": round(time.perf_counter() - t, 1), "interrupted": True}
            raise
        times[name] = {"wall_s": round(time.perf_counter() - t, 1)}
        print(f"== {name}: {times[name]['wall_s'] / 60:.1f} min", file=sys.stderr, flush=True)
        if html:
            from nbconvert import HTMLExporter
            body, _ = HTMLExporter().from_filename(str(dst))
            atomic_write_text(dst.with_suffix(".html"), body)
    return times


# the kernel's own log at errors only: its warning that it talks to this process over TCP on localhost without
# encryption, once per notebook, is noise a user should not have to learn to ignore
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def ledger_summary(ledger: Ledger) -> str:
    """One line on a ledger: its runs, their worker-hours and the machines that trained them."""
    s = ledger.summary()
    skipped = (f"; {len(s['skipped'])} record(s) not usable, the first: {s['skipped'][0]}" if s["skipped"] else "")
    if not s["runs"]:
        return f"{_shown(ledger.root)}: no runs recorded yet{skipped}"
    return (f"{_shown(ledger.root)}: {s['runs']} runs recorded, {s['hours']:.2f} worker-hours, trained on "
            + "; ".join(f"{n} x {k}" for k, n in s["machines"].items()) + skipped)


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def refresh_notebooks(notebooks: Sequence[str] = NOTEBOOKS) -> None:
    """Execute each notebook at its defaults and store it in its stored form (:mod:`bnext_lib.nbclean`): only
    the outputs nbval checks, the project's kernelspec and the stored ``language_info`` version."""
    import tempfile

    import nbformat
    import papermill as pm

    for name in notebooks:
        src = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        with tempfile.TemporaryDirectory() as tmp, _text_progress():
            dst = Path(tmp) / src.name
            pm.execute_notebook(str(src), str(dst), cwd=str(src.parent), kernel_name="python3", progress_bar=False)
            ran = nbformat.read(str(dst), as_version=4)
        nb = nbformat.read(str(src), as_version=4)
        executed = [c for c in ran.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        for cell, done in zip(nb.cells, executed):
            if cell.cell_type == "code":
                cell.execution_count, cell.outputs = done.execution_count, done.outputs
        version = nb.metadata.get("language_info", {}).get("version") or ran.metadata.language_info.get("version")
        nbformat.write(nbformat.from_dict(nbclean.clean(nb, version)), str(src))
        print(f"refreshed {src}", file=sys.stderr)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _continue_notebook(old: dict, entry: dict) -> dict:
    """A notebook's run.json entry when an invocation continues a recorded run (see :func:`record_run`)."""
    if old.get("interrupted"):  # resumed: the seconds before the stop count too
        entry["first_wall_s"] = round(old.get("first_wall_s", old["wall_s"]) + entry["wall_s"], 1)
        entry["resumed"] = True
        if entry.get("interrupted"):
            entry["wall_s"] = entry["first_wall_s"]
    elif old:
        first = {k: old.get(f"first_{k}", old.get(k)) for k in ("wall_s", "runs_trained", "runs_cached") if k in old}
        if entry.get("runs_trained"):  # it trained runs the first invocation did not (a variant no longer cut)
            first["wall_s"] = round(first["wall_s"] + entry["wall_s"], 1)
            first["runs_trained"] = first.get("runs_trained", 0) + entry["runs_trained"]
            entry["extended"] = True
        entry.update({f"first_{k}": v for k, v in first.items()})
    return entry


def record_run(out: Path, profile: str, times: dict, started: str, resume_ok: bool = False,
               interrupted: bool = False, runs: dict | None = None) -> dict:
    """Write ``out/run.json``: profile, commit, machine and wall seconds per notebook of this invocation.

    It continues the recorded run of the same profile when that run was interrupted, or when ``resume_ok`` (a
    ``--only`` re-execution): a notebook it finished keeps its first time and run counts, unless it trained new
    runs, whose time it adds; the notebook it was stopped in adds its seconds to this invocation's (the runs trained
    before the stop are not trained again); the total is the sum. An interrupted invocation is recorded as such,
    to be continued. ``runs``: how many of the whole report's runs the ledger holds (:func:`bnext_lib.plan.count`)."""
    path = out / "run.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    if previous.get("profile") != profile or not (resume_ok or previous.get("interrupted")):
        previous = {}
    notebooks = dict(previous.get("notebooks", {}))
    for name, entry in times.items():
        entry = dict(entry)
        if not entry.get("interrupted"):
            res = json.loads((out / "results" / f"{name}.json").read_text())
            entry.update(runs_trained=res["runs_trained"], runs_cached=res["runs_cached"])
        notebooks[name] = _continue_notebook(notebooks.get(name, {}), entry)
    commit = git_commit()
    run = {"profile": profile, "started": previous.get("started", started), "commit": previous.get("commit", commit),
           "machine": machine_info(), "notebooks": notebooks,
           "wall_s": round(sum(v.get("first_wall_s", v["wall_s"]) for v in notebooks.values()), 1)}
    if interrupted:
        run["interrupted"] = True
    if runs is not None:
        run["runs"] = runs
    if previous:
        _continue_note(run, previous, times, started, commit)
    atomic_write_text(path, json.dumps(run, indent=1))
    return run


def _continue_note(run: dict, previous: dict, times: dict, started: str, commit: str) -> None:
    """Say in ``run["note"]`` what this invocation added to the recorded run, and carry its outside-measured total."""
    extended = [run["notebooks"][n] for n in times if run["notebooks"][n].get("extended")]
    trained = sum(e["runs_trained"] for e in extended)
    how = ("resumed after an interruption" if previous.get("interrupted") else
           f"trained {trained} new run(s) beside the cached ones" if trained else
           "re-executed from the cached runs of the first invocation")
    note = f"{', '.join(times)} {how} on {started} (commit {commit[:7]})"
    if previous.get("note"):  # the first invocation is already described there
        run["note"] = f"{previous['note'].rstrip('.')}. Then: {note}"
    else:
        run["note"] = (f"{note}; the first invocation: commit {previous.get('commit', '?')[:7]}, started "
                       f"{previous.get('started')}; wall times are the first invocation's, plus the resumed "
                       "time of a notebook it was stopped in")
    if "total_wall_s" in previous:  # timed outside the runner (assembly._total_wall_s): new training adds to it
        added = sum(e["wall_s"] for e in extended)
        run["total_wall_s"] = round(previous["total_wall_s"] + added, 1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnext_lib.report", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default cpu)")
    ap.add_argument("--only", nargs="+", metavar="NOTEBOOK", help=f"a subset of {', '.join(NOTEBOOKS)}")
    ap.add_argument("--out", help="output folder (default: reports/ for cpu, reports/.scratch/ for smoke, "
                                  "reports/<profile>/ for the others)")
    ap.add_argument("--budget-min", type=float, metavar="MIN",
                    help="a part of the report: start no run that would not end within MIN minutes (expected "
                         "costs from the ledger's runs on this kind of machine); the next part continues")
    ap.add_argument("--workers", type=int, metavar="N",
                    help="runs trained side by side (default: the profile's); 1 leaves a core free beside a part")
    ap.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                    help="local: a process pool on this machine (default); slurm: the missing runs of each batch as "
                         "one Slurm job array (submitit, the `cluster` extra) writing into one shared ledger; "
                         "submitit-local: the same path on this machine")
    ap.add_argument("--slurm-partition", help="the Slurm partition (default: the cluster's)")
    ap.add_argument("--slurm-time-min", type=int, default=60, help="each job's time limit; a job that reaches it is "
                                                                  "requeued and resumes (default 60)")
    ap.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job (default 0)")
    ap.add_argument("--no-html", dest="html", action="store_false")
    ap.add_argument("--assemble-only", action="store_true", help="only rebuild REPORT.md")
    ap.add_argument("--refresh-notebooks", action="store_true",
                    help="store the smoke outputs of the NBVAL_CHECK_OUTPUT cells in notebooks/")
    args = ap.parse_args(argv)
    try:
        get_profile(args.profile)
    except ValueError as e:
        ap.error(str(e))
    if args.budget_min is not None and not args.budget_min > 0:
        ap.error(f"--budget-min must be a positive number of minutes, got {args.budget_min:g}")
    if args.workers is not None and args.workers < 1:
        ap.error(f"--workers must be a positive integer, got {args.workers}")
    if args.executor != "local":
        try:
            spec = ClusterSpec("slurm" if args.executor == "slurm" else "local",
                               folder=str(REPO_ROOT / "data" / "submitit"), partition=args.slurm_partition,
                               time_min=args.slurm_time_min, gpus_per_task=args.slurm_gpus)
        except ValueError as e:
            ap.error(str(e))
        os.environ[EXECUTOR_ENV] = spec.to_env()  # the notebooks' kernels inherit it
    chosen = list(NOTEBOOKS)
    if args.only:
        unknown = [n for n in args.only if n not in NOTEBOOKS]
        if unknown:
            ap.error(f"unknown notebook(s) {unknown}; choose from {list(NOTEBOOKS)}")
        chosen = [n for n in NOTEBOOKS if n in args.only]
    if args.refresh_notebooks:
        refresh_notebooks(chosen)
        return 0
    # resolved here: the notebooks run in notebooks/, where a relative path would point elsewhere
    out = Path(args.out).resolve() if args.out else report_dir(args.profile)
    if not args.assemble_only:
        waiting = _part(chosen, args, out)
        if waiting is None:
            return 130
        if waiting:
            return 0
    path = assemble(out)
    print(f"wrote {path}")
    if out.resolve() == (REPO_ROOT / "reports").resolve():  # the committed report: README's headline follows it
        update_readme(out)
        print(f"updated the headline of {REPO_ROOT / 'README.md'}")
    return 0


def _part(chosen: Sequence[str], args, out: Path) -> list[str] | None:
    """Run the notebooks into ``out/.part``; publish into ``out`` when none waits. The notebooks that wait for
    runs ([] when none), or None when the part was interrupted (``out`` left as it was)."""
    ledger = Ledger(ledger_dir(args.profile))
    stage = out / ".part"
    shutil.rmtree(stage, ignore_errors=True)
    print(f"report ({args.profile}): {ledger_summary(ledger)}", file=sys.stderr, flush=True)
    runs = count_runs(args.profile, ledger)
    print(f"report ({args.profile}): {runs_line(runs)}", file=sys.stderr, flush=True)
    slow = emulated_bf16(args.profile)
    if slow:
        print(f"report: warning: {slow}", file=sys.stderr, flush=True)
    if args.budget_min is not None:
        os.environ[DEADLINE_ENV] = str(time.time() + 60 * args.budget_min)
        print(f"report: a part of at most {args.budget_min:g} min: no run starts that its measured cost on this "
              "kind of machine would take past it", file=sys.stderr, flush=True)
    os.environ[NOTEBOOKS_ENV] = ",".join(chosen)
    started, t = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    handler = signal.signal(signal.SIGTERM, _interrupt)  # `timeout`, a scheduler: stop as cleanly as Ctrl-C
    times: dict = {}
    try:
        execute(chosen, args.profile, stage, html=args.html, times=times, workers=args.workers)
    except KeyboardInterrupt:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the kernel client's tasks, cancelled with it
        ledger.write_index()
        print(f"report: interrupted after {(time.perf_counter() - t) / 60:.1f} min; {_shown(out)} is as it was; the "
              f"runs that finished are in {_shown(ledger.root)} (commit it); the same command continues",
              file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGTERM, handler)
        os.environ.pop(DEADLINE_ENV, None)
        os.environ.pop(NOTEBOOKS_ENV, None)
    ledger.write_index()
    waiting = [n for n, v in times.items() if v.get("waiting")]
    runs = count_runs(args.profile, ledger)
    record_run(stage, args.profile, times, started, runs=runs)
    if waiting:
        path = assemble(stage)
        print(f"report: part done in {(time.perf_counter() - t) / 60:.1f} min; {ledger_summary(ledger)}; "
              f"{runs_line(runs)}; waiting for "
              f"runs: {', '.join(waiting)}. A partial report is in {_shown(path)}; {_shown(out)} is as it was. "
              f"Commit {_shown(ledger.root)} and run the same command to continue.", file=sys.stderr)
        return waiting
    publish(stage, out)
    print(f"report: {(time.perf_counter() - t) / 60:.1f} min; {ledger_summary(ledger)}", file=sys.stderr)
    return []


def count_runs(profile: str, ledger: Ledger) -> dict:
    """:func:`bnext_lib.plan.count` of the report at ``profile``, the missing runs' costs estimated from ``ledger``
    and the profile's choice ledger."""
    return plan.count(report_studies(profile, ledger.root), also=[Ledger(choice_ledger_beside(ledger.root))])


def runs_line(runs: dict) -> str:
    """"n of N runs of the whole report recorded (01: n of N, ...)", and what the count assumed."""
    per = ", ".join(f"{name[:2]}: {n} of {total}" for name, (n, total) in runs["notebooks"].items())
    assumed = f"; assuming {' and '.join(runs['assumed'])}" if runs["assumed"] else ""
    left = runs["total"] - runs["recorded"]
    cost = ""
    if left:
        known = left - runs["unknown"]
        cost = (f"; the {left} missing: ~{runs['missing_s'] / 3600:.1f} worker-hours expected on this kind of "
                f"machine for {known} of them from recorded runs alike"
                + (f", {runs['unknown']} of kinds never recorded" if runs["unknown"] else ""))
    return f"{runs['recorded']} of {runs['total']} runs of the whole report recorded ({per}{assumed}){cost}"


def emulated_bf16(profile: str) -> str | None:
    """Why a part of ``profile`` would crawl on this machine: a profile that trains under bf16 autocast on a CPU
    with neither avx512_bf16 nor amx_bf16, where bf16 is emulated (None when that is not so)."""
    import torch

    if not get_profile(profile).train.get("amp") or torch.cuda.is_available():
        return None
    if {"avx512_bf16", "amx_bf16"} & set(machine()["isa"]):
        return None
    return (f"this CPU ({machine()['cpu']}) has neither avx512_bf16 nor amx_bf16: the {profile} profile's bf16 "
            "autocast is emulated here, 9x (bnext_micro) to 47x (ResNet-10t) slower than float32 as measured on an "
            "AVX2-only AMD EPYC (docs/method.md §11.2); a part on this machine trains little")


def publish(stage: Path, out: Path) -> None:
    """Move a complete part's files from ``stage`` into ``out`` (each atomically), merging ``run.json`` with the
    recorded run, then remove what the report no longer accounts for (:func:`~bnext_lib.assembly.stale_files`)."""
    for src in sorted(p for p in stage.rglob("*") if p.is_file() and p.name != "run.json"):
        dst = out / src.relative_to(stage)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    part = json.loads((stage / "run.json").read_text())
    if set(part["notebooks"]) == set(NOTEBOOKS):  # the whole report: its own record
        os.replace(stage / "run.json", out / "run.json")
    else:  # --only: these notebooks' entries continue the recorded run
        times = {n: {k: v for k, v in e.items() if k == "wall_s"} for n, e in part["notebooks"].items()}
        record_run(out, part["profile"], times, part["started"], resume_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    written = {out / sub for sub in ("figures", "tables", "results", "executed")}
    for path in stale_files(out):  # only in the folders a report writes: nothing else under --out is touched
        if path.parent in written:
            path.unlink()


if __name__ == "__main__":
    sys.exit(main())
