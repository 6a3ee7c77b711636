"""Model registry: ``create_model(name, ...)`` for this project, mirrored into timm's registry.

Every builder registered here is also registered with :func:`timm.models.register_model`, so that
``timm.create_model("bnext_tiny", num_classes=10)`` works once ``bnext_lib`` is imported.
"""
from __future__ import annotations

import fnmatch
import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

__all__ = ["register_model", "create_model", "build_model", "list_models", "model_info", "ModelInfo", "timm_name",
           "check_model_name", "check_model_options", "TIMM_PREFIX"]


@dataclass(frozen=True)
class ModelInfo:
    """What is published about a registered model (ImageNet, 224x224, 1000 classes), for tables and tests.

    Attributes:
        family: ``"bnext"`` or ``"baseline"``.
        paper: short citation.
        top1: published ImageNet top-1 in %, ``None`` where none exists.
        top1_source: where ``top1`` comes from.
        readme_ops: the official README's OPs in G (BOPs/64 + FLOPs/8), ``None`` where not published.
        readme_degree: the official README's binarization degree in %, ``None`` where not published (for the
            baselines under the README's other convention: FLOPs at full cost, the cost table's ``degree_fp32_pct``).
        imagenet: whether the configuration is the ImageNet one (small-image variants are not).
    """

    family: str
    paper: str
    top1: float | None = None
    top1_source: str = ""
    readme_ops: float | None = None
    readme_degree: float | None = None
    imagenet: bool = True
    extra: dict = field(default_factory=dict)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> Callable:
    """Decorator: register a builder under its function name, here and in timm."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = fn
        _INFO[name] = info
        _register_with_timm(name, fn)
        return fn

    return decorator


def _register_with_timm(name: str, fn: Callable[..., nn.Module]) -> None:
    try:
        from timm.models import register_model as timm_register
        from timm.models._registry import _model_entrypoints
    except ImportError:  # timm is a dependency; stay importable without it anyway
        return
    if name in _model_entrypoints:
        return

    @functools.wraps(fn)
    def entrypoint(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None,
                   **kwargs):
        if pretrained:
            raise ValueError(f"{name}: no hub weights exist; build it and use "
                             "bnext_lib.checkpoints.load_official(model, path) with an official checkpoint")
        return create_model(name, **kwargs)

    timm_register(entrypoint)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    _check_name(name)
    return _INFO[name]


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, e.g. ``"bnext_tiny"``.
        num_classes: classifier outputs.
        **kwargs: the builder's keyword arguments (BNext: ``elm_attention``, ``info_recoupling``,
            ``stem_stride``, ``in_chans``). ``None`` values are dropped so that unset CLI options keep the
            builder's defaults.
    """
    _check_name(name)
    fn = _BUILDERS[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    accepted = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise TypeError(f"{name} does not take {unknown}; it takes {sorted(set(accepted) - {'num_classes'})}")
    model = fn(num_classes=num_classes, **kwargs)
    # how to rebuild it (used by bnext_lib.export)
    model.model_name, model.model_kwargs = name, {"num_classes": num_classes, **kwargs}
    return model


TIMM_PREFIX = "timm:"


def timm_name(name: str) -> str | None:
    """The timm architecture of a ``timm:<name>`` model name, ``None`` for a registered model's name: the one
    parser of the prefix that training configurations, teachers and reports use."""
    return name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else None


def check_model_name(name: str) -> str | None:
    """What is wrong with a training configuration's model name (``None``: nothing): a registered model or
    ``timm:<name>`` of a model timm has."""
    arch = timm_name(name)
    if arch is None:
        return None if name in _BUILDERS else f"{name!r} is unknown; choose one of {list_models()} or 'timm:<name>'"
    import timm
    return None if timm.is_model(arch) else f"{name!r}: timm has no model {arch!r}"


def check_model_options(name: str, options: dict) -> str | None:
    """What is wrong with builder options for a known model name (``None``: nothing): each must be a keyword its
    builder takes (a timm model takes none of them), so that e.g. ``--float-twin`` on a baseline fails before any
    data is read."""
    if not options:
        return None
    builder = _BUILDERS.get(name)
    if builder is None:
        return f"{name!r} (built by timm) takes none of the options {sorted(options)}"
    takes = inspect.signature(builder).parameters
    unknown = sorted(k for k in options if k not in takes)
    return f"{name!r} does not take {unknown}" if unknown else None


def build_model(name: str, num_classes: int, in_chans: int, **options) -> nn.Module:
    """A registered model, or ``timm:<name>`` built by timm (full precision): the names a training
    configuration accepts."""
    arch = timm_name(name)
    if arch is not None:
        import timm
        return timm.create_model(arch, num_classes=num_classes, in_chans=in_chans)
    return create_model(name, num_classes=num_classes, in_chans=in_chans, **options)
