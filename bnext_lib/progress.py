"""Progress bars: a widget in Jupyter, a text bar elsewhere (scripts, and papermill runs of ``make report``).

``tqdm.auto`` would pick the widget in any IPython kernel, papermill's included, where it ends up stored as a
widget the report cannot show, and warns when ipywidgets is missing. :func:`tqdm_class` chooses explicitly: the
widget only in a kernel that has ipywidgets and is not told ``BNEXT_PROGRESS=text`` (what the report's runners
set for the kernels they start), the text bar otherwise, and never warns.
"""
from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["PROGRESS_ENV", "tqdm_class"]

PROGRESS_ENV = "BNEXT_PROGRESS"


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def tqdm_class():
    """The ``tqdm`` class to use here: ``tqdm.notebook.tqdm`` or ``tqdm.std.tqdm``."""
    if os.environ.get(PROGRESS_ENV) != "text" and _in_kernel() and importlib.util.find_spec("ipywidgets"):
        from tqdm.notebook import tqdm
        return tqdm
    from tqdm.std import tqdm
    return tqdm
