"""The notebooks as Jupyter opens, runs and saves them: the project's kernel, files that stay unchanged, progress
that is a widget there and text elsewhere, and workers' lines shown once. (nbval runs the notebooks themselves
with bnext_lib's warnings as errors: notebooks/conftest.py.)"""
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bnext_lib import nbclean
from bnext_lib.progress import PROGRESS_ENV, LogBar, tqdm_class
from bnext_lib.report import NOTEBOOKS, REPO_ROOT

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = REPO_ROOT / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"


class _Kernel:
    """An ipykernel of this environment (as ``--nbval-current-env``) started in the repository, its own stdout
    and stderr (a Jupyter server's terminal) going to ``log``."""

    def __init__(self, log: Path, progress: str | None = None):
        import ipykernel.kernelspec
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

        class CurrentEnv(KernelSpecManager):
            def get_kernel_spec(self, kernel_name):
                return KernelSpec(**ipykernel.kernelspec.get_kernel_dict())

        self.log = open(log, "w")
        self.km = KernelManager(kernel_name="current", kernel_spec_manager=CurrentEnv())
        env = {k: v for k, v in os.environ.items() if k != PROGRESS_ENV}
        if progress:
            env[PROGRESS_ENV] = progress
        self.km.start_kernel(cwd=str(ROOT), env=env, stdout=self.log, stderr=self.log)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str) -> list[dict]:
        """Execute ``code``; its iopub outputs as ``{"type", "content"}``."""
        outputs = []

        def hook(msg):
            if msg["msg_type"] in ("stream", "display_data", "execute_result", "error"):
                outputs.append({"type": msg["msg_type"], "content": msg["content"]})

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=300)
        assert reply["content"]["status"] == "ok", outputs
        return outputs

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self.log.close()


@pytest.fixture(scope="module")
def language_info(tmp_path_factory):
    """``language_info`` as the kernel reports it to Jupyter (which writes it into the notebook)."""
    kernel = _Kernel(tmp_path_factory.mktemp("kernel") / "log")
    try:
        return kernel.kc.kernel_info(reply=True)["content"]["language_info"]
    finally:
        kernel.close()


def _project_kernelspec() -> dict:
    """The kernelspec Jupyter writes for the kernel the Makefile registers (set-up and ``make kernel`` alike)."""
    makefile = (ROOT / "Makefile").read_text()
    installs = set(re.findall(r'ipykernel install .*--name (\S+) --display-name "([^"]+)"', makefile))
    assert len(installs) == 1, installs
    (name, display), = installs
    return {"display_name": display, "language": "python", "name": name}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_opening_and_saving_in_jupyter_leaves_the_notebook_unchanged(name, language_info):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    stored = path.read_text(encoding="utf-8")
    nb = nbformat.reads(stored, as_version=4)
    version = nb.metadata.language_info["version"]
    nb.metadata.kernelspec = _project_kernelspec()  # what Jupyter fills in when the kernel starts
    nb.metadata.language_info = language_info
    saved = nbformat.writes(nb) + "\n"  # what the server writes on save
    if language_info["version"] == version:  # the Python the notebooks were stored with: not a byte changes
        assert saved == stored
    other = json.loads(saved)  # on another Python only the version changes, and git's clean filter restores it
    other["metadata"]["language_info"]["version"] = version
    assert nbclean.dumps(other) == stored
    assert nbclean.dumps(nbclean.clean(json.loads(saved), version)) == stored
    assert nbclean.dumps(nbclean.clean(json.loads(stored))) == stored  # the stored form is the filter's own


def _as_run_in_jupyter(stored: str) -> str:
    """``stored`` after Run All and Save in Jupyter, on another Python and kernel, with output-area state."""
    nb = nbformat.reads(stored, as_version=4)
    nb.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata.language_info["version"] = "3.99.1"
    nb.metadata.widgets = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    count = 40
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        cell.metadata.execution = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        cell.metadata.scrolled = True
        stderr = nbformat.v4.new_output("stream", name="stderr", text="training 3 runs\n")
        if cell.outputs:  # a checked cell: the same stdout, arriving in pieces
            text = "".join(o.text for o in cell.outputs)
            cell.outputs = [stderr, nbformat.v4.new_output("stream", name="stdout", text=text[:10]),
                            nbformat.v4.new_output("stream", name="stdout", text=text[10:])]
        else:
            cell.outputs = [stderr, nbformat.v4.new_output("display_data", data={WIDGET: {"model_id": "x"}}),
                            nbformat.v4.new_output("execute_result", data={"text/plain": "42"},
                                                   execution_count=count)]
    return nbformat.writes(nb) + "\n"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.slow
def test_git_sees_no_change_after_run_and_save_with_the_makefile_filter(tmp_path):
    """A clone set up as ``make`` does it: a notebook run and saved on another Python and kernel shows no diff, and
    after ``make lab``'s save hook no status either; an edit still shows."""
    name = "notebooks/01_architecture_study.ipynb"  # it has a checked cell
    for rel in (name, ".gitattributes", "bnext_lib/nbclean.py"):  # the filter runs the file, not the package
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    _git(tmp_path, "init", "-q")
    command = re.search(r"git config filter\.bnext-notebook\.clean '([^']+)'", (ROOT / "Makefile").read_text())
    _git(tmp_path, "config", "filter.bnext-notebook.clean", command.group(1).replace("$(PYTHON)", sys.executable))
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "stored")
    path = tmp_path / name
    stored = path.read_text(encoding="utf-8")
    saved = _as_run_in_jupyter(stored)
    assert saved != stored and "3.99.1" in saved
    path.write_text(saved, encoding="utf-8")
    assert _git(tmp_path, "diff") == "" and _git(tmp_path, "diff", "HEAD", "--name-only") == ""
    nbclean.post_save(os_path=str(path))
    assert _git(tmp_path, "status", "--porcelain") == ""
    assert path.read_text(encoding="utf-8") == saved  # the outputs stay in the file
    path.write_text(saved.replace("Architecture study", "Architecture studies"), encoding="utf-8")
    nbclean.post_save(os_path=str(path))
    assert _git(tmp_path, "status", "--porcelain").split() == ["M", name]
    assert "Architecture studies" in _git(tmp_path, "diff")
    broken = "<<<<<<< not json"
    assert subprocess.run([sys.executable, "-m", "bnext_lib.nbclean"], input=broken, text=True, cwd=ROOT,
                          capture_output=True, check=True).stdout == broken


def test_a_checked_cell_keeps_its_stdout_as_nbval_needs_it():
    nb = nbformat.reads((ROOT / "notebooks/01_architecture_study.ipynb").read_text(encoding="utf-8"), 4)
    checked = [c for c in nb.cells if nbclean.CHECK_MARK in c.source]
    assert checked and all(c.execution_count and c.outputs for c in checked)
    cell = json.loads(json.dumps(checked[0]))
    text = "".join(cell["outputs"][0]["text"])
    cell["execution_count"] = 43
    cell["outputs"] = [{"output_type": "stream", "name": "stderr", "text": ["a warning\n"]},
                       {"output_type": "stream", "name": "stdout", "text": text[:10]},
                       {"output_type": "stream", "name": "stdout", "text": [text[10:]]},
                       {"output_type": "execute_result", "data": {"text/plain": "1"}, "metadata": {},
                        "execution_count": 43}]
    position = [c for c in nb.cells if c.cell_type == "code"].index(checked[0]) + 1
    out = nbclean.clean({"cells": [{"cell_type": "code", "source": "x", "outputs": [], "metadata": {}}] * (position - 1)
                         + [cell]})["cells"][-1]
    assert out["execution_count"] == position == checked[0].execution_count
    assert [o["output_type"] for o in out["outputs"]] == ["stream", "execute_result"]
    assert out["outputs"][0]["text"] == text.splitlines(keepends=True)
    assert out["outputs"][1]["execution_count"] == position


def test_progress_outside_a_kernel_is_text(monkeypatch):
    from tqdm.std import tqdm

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert tqdm_class() is tqdm
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert tqdm_class() is LogBar
    with LogBar(total=2, desc="runs", mininterval=0) as bar:
        for i in range(2):
            bar.write(f"line {i}", file=log)
            bar.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and lines[0].startswith("runs:   0%") and lines[1] == "line 0"
    assert lines.count("line 1") == 1 and sum("runs: 100%" in line for line in lines) == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["jupyter", "text"])
def test_workers_lines_show_once_under_a_widget_or_text_bar(mode, tmp_path):
    """Lines printed in spawned workers reach the notebook once and not the server's terminal; the bar is a
    widget in Jupyter, text where the report's runners ask for it, and nothing warns."""
    kernel = _Kernel(tmp_path / "terminal.log", progress="text" if mode == "text" else None)
    try:
        outputs = kernel.run("from bnext_lib.pool import parallel_map\n"
                             "parallel_map(print, ['line from worker 0', 'line from worker 1'], workers=2, desc='work')")
    finally:
        kernel.close()
    text = "".join(o["content"]["text"] for o in outputs if o["type"] == "stream")
    assert text.count("line from worker 0") == 1 and text.count("line from worker 1") == 1, text
    assert "line from worker" not in (tmp_path / "terminal.log").read_text()
    assert "Warning" not in text
    widgets = [o for o in outputs if o["type"] == "display_data" and WIDGET in o["content"]["data"]]
    if mode == "jupyter":
        assert widgets
    else:
        assert not widgets and "work: 100%" in text and "\r" not in text


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_shape(name):
    nb = nbformat.read(str(NB_DIR / f"{name}.ipynb"), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'profile = "smoke"' in tagged[0].source
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any(f"Study({name!r}" in src for src in code)
    assert code[-1].strip() == "study.finish()"
    for src in code:  # narrative, parameters and calls only
        for forbidden in ("def ", "class ", "nn.Module", ".backward(", "optimizer", "import torch"):
            assert forbidden not in src, (name, forbidden)
    assert nb.cells[0].cell_type == "markdown"


@pytest.mark.parametrize("params, message", [({"profile": "laptop"}, "unknown profile"),
                                              ({"epochs": -2}, "epochs must be a positive integer"),
                                              ({"model": "bnext_xl"}, "is unknown")])
@pytest.mark.slow
def test_notebook_rejects_bad_parameters_before_work(params, message, tmp_path):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match=message) as err:
        pm.execute_notebook(str(NB_DIR / "03_distillation.ipynb"), str(tmp_path / "run.ipynb"),
                            parameters={**params, "out_dir": str(out)}, kernel_name="python3",
                            progress_bar=False, cwd=str(NB_DIR))
    assert err.value.exec_count <= 3  # the cell right after the parameters (papermill's injected cell counts)
    assert not out.exists()
