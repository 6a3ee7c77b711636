"""The stored form of the notebooks, and the git clean filter that maps a notebook Jupyter saved back to it.

A notebook is stored as Jupyter writes it on the project's kernel, so that opening it does not mark it modified:
kernelspec ``bnext`` ("Python (bnext)", registered by the Makefile's set-up and by ``make kernel``) and the full
``language_info`` that ipykernel reports. Code cells are stored without outputs, except the cells marked
``# NBVAL_CHECK_OUTPUT``, whose outputs nbval compares (stderr left out) with the execution count of an in-order
run. ``python -m bnext_lib.report --refresh-notebooks`` writes this form.

Running a notebook in Jupyter and saving it changes outputs, execution counts, timing metadata and, on another
Python, ``language_info.version``. The Makefile's set-up registers this module as a git clean filter
(``.gitattributes``: ``filter=bnext-notebook``) which maps all that back to the stored form, so ``git diff``, ``git
add`` and the report's commit stamp see no change while the file keeps its outputs. ``git status`` also compares
sizes first and lists a notebook whose size changed until its index entry is refreshed: ``make lab``'s server does
that after each save (:func:`post_save`); with another Jupyter, ``git add`` the notebook (nothing is staged).
The version is kept as the index has it (the one a notebook was first stored with): to store another one,
``git -c filter.bnext-notebook.clean=cat add notebooks/*.ipynb``.

Standard library only: git runs it as ``python3 bnext_lib/nbclean.py PATH`` from the repository (notebook on
stdin, stored form on stdout), without the project's environment and without importing the package (which
loads torch).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

__all__ = ["CHECK_MARK", "KERNELSPEC", "LANGUAGE_INFO", "clean", "dumps", "indexed_version", "post_save"]

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KERNELSPEC = {"display_name": "Python (bnext)", "language": "python", "name": "bnext"}
# ipykernel's language_info less the version (the Python's, which differs between machines)
LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3"}
VOLATILE_METADATA = ("widgets", "papermill", "vscode")  # widget state, papermill runs, an editor's interpreter
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")  # timings, output-area state


def _lines(text) -> list[str]:
    return ("".join(text) if isinstance(text, list) else text).splitlines(keepends=True)


def _checked_outputs(outputs: list, count: int) -> list:
    """A checked cell's outputs: no stderr, consecutive streams merged (as Jupyter shows them), its count."""
    kept: list = []
    for o in outputs:
        if o.get("output_type") == "stream":
            if o.get("name") == "stderr":
                continue
            if kept and kept[-1].get("output_type") == "stream" and kept[-1].get("name") == o.get("name"):
                kept[-1]["text"] = _lines(_lines(kept[-1]["text"]) + _lines(o["text"]))
                continue
            o = {**o, "text": _lines(o["text"])}
        elif o.get("output_type") == "execute_result":
            o = {**o, "execution_count": count}
        kept.append(o)
    return kept


def clean(nb: dict, version: str | None = None) -> dict:
    """``nb`` (an nbformat-4 dict, changed in place and returned) in its stored form; ``version``: the
    ``language_info.version`` to store (``None``: keep the notebook's own)."""
    meta = nb.setdefault("metadata", {})
    for key in VOLATILE_METADATA:
        meta.pop(key, None)
    own = (meta.get("language_info") or {}).get("version")
    meta["kernelspec"] = copy.deepcopy(KERNELSPEC)
    meta["language_info"] = copy.deepcopy(LANGUAGE_INFO)
    if version or own:
        meta["language_info"]["version"] = version or own
    position = 0
    for cell in nb.get("cells", []):
        for key in VOLATILE_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("cell_type") != "code":
            continue
        position += 1  # the count a fresh in-order run gives it (nbval compares only cells that have one)
        if CHECK_MARK in "".join(cell.get("source", "")):
            cell["execution_count"] = position
            cell["outputs"] = _checked_outputs(cell.get("outputs", []), position)
        else:
            cell["execution_count"] = None
            cell["outputs"] = []
    return nb


def dumps(nb: dict) -> str:
    """JSON text exactly as ``nbformat.write`` (and so Jupyter) writes a notebook whose text is split in lines."""
    return json.dumps(nb, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"


def _git(*args: str, cwd: str | None = None) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd or None, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def indexed_version(path: str) -> str | None:
    """``language_info.version`` of ``path`` (relative to the repository, where git runs its filters) as git's
    index has it (``None``: not in the index, or no git)."""
    try:
        return json.loads(_git("cat-file", "blob", f":{path}"))["metadata"]["language_info"]["version"]
    except (ValueError, KeyError, TypeError):
        return None


def post_save(model=None, os_path: str = "", contents_manager=None, **kwargs) -> None:
    """Jupyter's post-save hook (``make lab``): a saved notebook whose stored form is what git's index holds gets
    its index entry refreshed, so that ``git status`` does not list it (git skips comparing contents when a
    file's size changed). Anything else, an edit or a repository without the filter, is left for git to show."""
    folder, name = os.path.split(os_path)
    indexed = _git("rev-parse", "--verify", "-q", f":./{name}", cwd=folder)
    if indexed and _git("hash-object", name, cwd=folder) == indexed:  # hashed through the clean filter
        _git("update-index", "--", name, cwd=folder)  # the same blob: only the size and times git compares change


def main(argv: list[str]) -> int:
    data = sys.stdin.buffer.read()  # bytes: notebooks are UTF-8 whatever the locale
    try:
        nb = json.loads(data)
    except ValueError:  # not a notebook (a conflict, a half-written file): git stores it as it is
        sys.stdout.buffer.write(data)
        return 0
    sys.stdout.buffer.write(dumps(clean(nb, indexed_version(argv[0]) if argv else None)).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
