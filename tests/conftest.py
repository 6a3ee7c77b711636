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
