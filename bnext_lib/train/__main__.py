"""``python -m bnext_lib.train``: the engine's command line (:func:`bnext_lib.cli.main`), also under ``torchrun``.

A module of its own, so that the engine never imports its command line (which imports the run cache, which
imports the engine): running the engine does not import :mod:`bnext_lib.train` twice.
"""
import sys

from ..cli import main

sys.exit(main())
