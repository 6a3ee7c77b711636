import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# Tests never write into this machine's run cache (data/runs) or a profile's ledger (reports/.../ledger): they train
# into build/test/, which the notebooks' nbval run of `make test` shares (notebooks/conftest.py).
_TEST_CACHE = Path(__file__).resolve().parents[1] / "build" / "test"
os.environ.setdefault("BNEXT_RUNS", str(_TEST_CACHE / "runs"))
os.environ.setdefault("BNEXT_LEDGER", str(_TEST_CACHE / "ledger"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _the_fast_tier_trains_nothing(request, monkeypatch):
    """A test not marked ``slow`` (the fast tier, ``make test-fast``) that trains a run, compiles a model or starts
    a process (a worker, a kernel, a child Python; git's few milliseconds aside) fails, saying which to mark: the
    tier's promise is checked, not hoped for."""
    if request.node.get_closest_marker("slow"):
        return
    import multiprocessing.process
    import subprocess

    import bnext_lib.train as engine

    def forbidden(what):
        def fail(*args, **kwargs):
            pytest.fail(f"{request.node.nodeid} {what}: mark it @pytest.mark.slow", pytrace=False)
        return fail

    real_popen = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        program = args if isinstance(args, str) else (args[0] if args else "")
        if Path(str(program)).name != "git":
            forbidden("starts a process")()
        real_popen(self, args, *rest, **kwargs)

    import bnext_lib.packed as packed

    # the packed-bit kernel is a C++ extension built on first use (a compiler process): the fast tier checks the
    # packed arithmetic on its numpy kernel, the slow tier on the compiled one
    monkeypatch.setattr(packed, "_extension", lambda: None)
    monkeypatch.setattr(engine, "_train", forbidden("trains a run"))
    monkeypatch.setattr(torch, "compile", forbidden("compiles a model"))
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", forbidden("starts a process"))
