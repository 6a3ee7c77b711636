"""bnext_lib: BNext binary neural networks (Guo et al., arXiv 2211.12933), their cost accounting and training.

Import what you need from the submodules: ``bnext_lib.models.create_model``, ``bnext_lib.complexity.profile``,
``bnext_lib.checkpoints.load_official``, ``bnext_lib.binary`` (quantizers, temperature schedule). Importing the
package registers the models with timm (``timm.create_model("bnext_tiny")``).
"""
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]
