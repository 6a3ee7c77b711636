"""The report runner: ``python -m bnext_lib.report`` (``make report``) runs the notebooks with papermill and
assembles REPORT.md; and the one import the notebooks need (``from bnext_lib.report import Study, compare,
combine``).

The report is cut by concern: :mod:`bnext_lib.study` (Study, RunSet: runs and what a notebook writes),
:mod:`bnext_lib.verdicts` (the statistical test and the regime gate), :mod:`bnext_lib.assembly` (REPORT.md,
claims.csv, the README's headline), and this runner.

CLI::

    python -m bnext_lib.report                    # all four notebooks at the cpu profile into reports/
    python -m bnext_lib.report --profile smoke    # into reports/.scratch/
    python -m bnext_lib.report --profile gpu      # into reports/gpu/ (paper: reports/paper/)
    python -m bnext_lib.report --assemble-only    # rebuild REPORT.md from reports/results/
    python -m bnext_lib.report --refresh-notebooks  # re-store the checked (NBVAL_CHECK_OUTPUT) outputs
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from . import nbclean
from .assembly import assemble, git_commit, machine_info, update_readme
from .checkpoints import atomic_write_text
from .profiles import get_profile
from .progress import PROGRESS_ENV
from .study import AT_THE_END, NOTEBOOKS, REPO_ROOT, RunSet, Study, distillation_recipes, parse_seeds, report_dir
from .verdicts import combine, compare, cut, gate

__all__ = ["AT_THE_END", "REPO_ROOT", "NOTEBOOKS", "Study", "parse_seeds", "RunSet", "compare", "combine", "cut",
           "gate", "distillation_recipes", "machine_info", "assemble", "update_readme", "execute", "record_run", "main"]


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
            times: dict | None = None) -> dict:
    """Run notebooks with papermill into ``out/executed`` (and HTML), returning wall seconds per notebook.

    ``times`` (filled as the notebooks end) also holds, when an exception or an interrupt stops a notebook, that
    notebook's seconds so far with ``interrupted: True``: the caller records them before the exception goes on."""
    import papermill as pm

    (out / "executed").mkdir(parents=True, exist_ok=True)
    times = {} if times is None else times
    expected = _recorded_minutes(out, profile)
    for k, name in enumerate(notebooks):
        src = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        dst = out / "executed" / f"{name}.ipynb"
        left = [expected.get(n) for n in notebooks[k:]]
        eta = (f"; time left at most ~{sum(left):.0f} min (the last recorded {profile} run's times; cached runs "
               "make it less)" if left and None not in left else "")
        print(f"== {name} ({profile}) [notebook {k + 1} of {len(notebooks)}{eta}]", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            with _text_progress():
                pm.execute_notebook(str(src), str(dst), parameters={"profile": profile, "out_dir": str(out)},
                                    cwd=str(src.parent), kernel_name="python3", progress_bar=False, log_output=log)
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


def _recorded_minutes(out: Path, profile: str) -> dict:
    """Minutes per notebook of the last report recorded in ``out/run.json`` at this profile (a committed report
    comes with one), for the runner's estimate of the time left."""
    try:
        run = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    if run.get("profile") != profile:
        return {}
    return {n: v.get("first_wall_s", v.get("wall_s", 0)) / 60 for n, v in run.get("notebooks", {}).items()}


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
               interrupted: bool = False) -> dict:
    """Write ``out/run.json``: profile, commit, machine and wall seconds per notebook of this invocation.

    It continues the recorded run of the same profile when that run was interrupted, or when ``resume_ok`` (a
    ``--only`` re-execution): a notebook it finished keeps its first time and run counts, unless it trained new
    runs, whose time it adds; the notebook it was stopped in adds its seconds to this invocation's (the runs trained
    before the stop are not trained again); the total is the sum. An interrupted invocation is recorded as such,
    to be continued."""
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
    ap.add_argument("--no-html", dest="html", action="store_false")
    ap.add_argument("--assemble-only", action="store_true", help="only rebuild REPORT.md")
    ap.add_argument("--refresh-notebooks", action="store_true",
                    help="store the smoke outputs of the NBVAL_CHECK_OUTPUT cells in notebooks/")
    args = ap.parse_args(argv)
    try:
        get_profile(args.profile)
    except ValueError as e:
        ap.error(str(e))
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
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t = time.perf_counter()
        handler = signal.signal(signal.SIGTERM, _interrupt)  # `timeout`, a scheduler: record what ran, then stop
        times: dict = {}
        try:
            execute(chosen, args.profile, out, html=args.html, times=times)
        except BaseException:
            if times:
                record_run(out, args.profile, times, started, resume_ok=bool(args.only), interrupted=True)
            print(f"report: interrupted after {(time.perf_counter() - t) / 60:.1f} min; the same command resumes "
                  "(trained runs are cached)", file=sys.stderr)
            raise
        finally:
            signal.signal(signal.SIGTERM, handler)
        record_run(out, args.profile, times, started, resume_ok=bool(args.only))
        print(f"report: {(time.perf_counter() - t) / 60:.1f} min", file=sys.stderr)
    path = assemble(out)
    print(f"wrote {path}")
    if out.resolve() == (REPO_ROOT / "reports").resolve():  # the committed report: README's headline follows it
        update_readme(out)
        print(f"updated the headline of {REPO_ROOT / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
