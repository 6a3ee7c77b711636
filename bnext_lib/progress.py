"""Progress bars: a widget in Jupyter, a text bar elsewhere (a terminal, a log, papermill runs of ``make report``).

``tqdm.auto`` would pick the widget in any IPython kernel, papermill's included, where it ends up stored as a
widget the report cannot show, and warns when ipywidgets is missing. :func:`tqdm_class` chooses explicitly: the
widget only in a kernel that has ipywidgets and is not told ``BNEXT_PROGRESS=text`` (what the report's runners
set for the kernels they start); otherwise tqdm's bar on a terminal, and :class:`LogBar` where the text is kept
(a log, a stored notebook output). It never warns.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from tqdm.std import tqdm as _TextBar

__all__ = ["PROGRESS_ENV", "LogBar", "tqdm_class"]

PROGRESS_ENV = "BNEXT_PROGRESS"


class LogBar(_TextBar):
    """tqdm for text that is kept: a line when the count has changed, at most every ``mininterval`` (10 s by
    default), never a carriage return that rewrites one (what a terminal bar leaves in a log or a stored output),
    nothing erased to print other lines."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", 10.0)
        super().__init__(*args, **kwargs)

    @staticmethod
    def status_printer(file):
        def print_status(text: str) -> None:
            if text:
                file.write(text + "\n")
                file.flush()
        return print_status

    def display(self, msg=None, pos=None):
        if msg is None:
            if self.n == getattr(self, "_shown", None):  # a refresh after tqdm.write: already on its line
                return True
            self._shown = self.n
        return super().display(msg, pos)

    def clear(self, nolock=False):
        pass


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def tqdm_class():
    """The ``tqdm`` class to use here: ``tqdm.notebook.tqdm``, ``tqdm.std.tqdm`` or :class:`LogBar`."""
    if _in_kernel() and os.environ.get(PROGRESS_ENV) != "text" and importlib.util.find_spec("ipywidgets"):
        from tqdm.notebook import tqdm
        return tqdm
    isatty = getattr(sys.stderr, "isatty", None)
    return _TextBar if isatty is not None and isatty() else LogBar
