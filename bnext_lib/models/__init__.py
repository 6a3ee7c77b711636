"""Models: BNext (T/S/M/L, small-image variants, BNext-18) and binary baselines behind one registry.

``create_model(name, num_classes, **kwargs)`` builds any of them; importing this package also registers them with
timm, so ``timm.create_model("bnext_tiny")`` works.
"""
from .registry import (ModelInfo, build_model, check_model_name, create_model, list_models, model_info,
                       register_model, timm_name)
from . import bnext, baselines  # noqa: F401  (registers the builders)
from .bnext import BNext, BNext18
from .baselines import EARLIER_BLOCKS, BinaryResNet, ReActNet

__all__ = ["create_model", "build_model", "check_model_name", "timm_name", "list_models", "model_info", "register_model", "ModelInfo", "EARLIER_BLOCKS",
           "BNext", "BNext18", "BinaryResNet", "ReActNet"]
