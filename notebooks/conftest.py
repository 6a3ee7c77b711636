"""nbval runs of the notebooks (``make test``): a warning raised by the project's own code fails the cell.

The kernel nbval starts (``--nbval-current-env``), and the training workers it spawns, inherit this environment.
PYTHONWARNINGS matches module names exactly, so every module of bnext_lib is listed.
"""
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bnext_lib"


def bnext_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def warnings_as_errors() -> str:
    """A PYTHONWARNINGS value that makes every warning attributed to a bnext_lib module an error."""
    own = [f"error:::{name}" for name in bnext_modules()]
    return ",".join(filter(None, [os.environ.get("PYTHONWARNINGS", "")] + own))


os.environ["PYTHONWARNINGS"] = warnings_as_errors()
# the unit tests' run cache and ledger (tests/conftest.py), never this machine's or a committed one
_TEST_CACHE = PACKAGE.parent / "build" / "test"
os.environ.setdefault("BNEXT_RUNS", str(_TEST_CACHE / "runs"))
os.environ.setdefault("BNEXT_LEDGER", str(_TEST_CACHE / "ledger"))
