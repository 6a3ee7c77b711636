"""bnext_lib: BNext binary neural networks (Guo et al., arXiv 2211.12933), their cost accounting and training.

Import what you need from the submodules: ``bnext_lib.models.create_model``, ``bnext_lib.complexity.profile``,
``bnext_lib.checkpoints.load_official``, ``bnext_lib.binary`` (quantizers, temperature schedule).
"""
__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]


def __getattr__(name: str):
    # create_model and list_models load torch on first use, so that bnext_lib.nbclean (git's clean filter, the
    # Jupyter server's save hook) imports without it
    if name in ("create_model", "list_models"):
        from . import models
        return getattr(models, name)
    raise AttributeError(f"module 'bnext_lib' has no attribute {name!r}")
