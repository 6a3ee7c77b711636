"""Binary primitives: quantizers with straight-through gradients, the binary convolution, the temperature.

Quantizers follow larq's layout: a pure autograd function with the documented forward and pseudo-gradient, and a
thin :class:`Quantizer` module holding its settings and declaring ``precision`` (1 = binary), ``latent_clip`` and
``scaled``, which cost accounting, export and packed inference read. Speed paths for particular CPUs live in
:mod:`bnext_lib.cpu_kernels` (same numbers, other kernels).

BNext (Guo et al., arXiv 2211.12933; ``docs/method.md`` §5) binarizes

* activations with ``sign(x)`` forward and the straight-through gradient ``1{|x| < 1.5}`` (:class:`SignSTE`),
* weights progressively: forward ``clip(w / tau, -1, 1)``, exactly ``sign(w)`` once ``tau`` is below its floor
  (1e-7), identity gradient to the latent weights, which are kept in ``[-1.5, 1.5]`` (:class:`ProgressiveSign`).

The baselines use the classic weight binarizers: plain ``sign`` (BNN), the magnitude-aware ``mean|w| * sign(w)``
of XNOR-Net / Bi-Real / ReActNet (:class:`MagnitudeAwareSign`), and Bi-Real's ApproxSign activation gradient
(:class:`ApproxSign`).

Departure from the official code: the official forward builds ``(sign(x) - c(x)).detach() + c(x)``, whose value is
``sign(x)`` only up to float rounding (errors of ~1e-7). Here the forward value is exactly ``sign(x)`` (and exactly
``sign(w)`` below the floor), so binary tensors are truly in {-1, 0, +1} and bit-packing is exact. The gradients
are the official ones. ``sign(0) = 0`` as in the official code.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn as nn

from . import cpu_kernels

__all__ = [
    "sign_ste", "approx_sign", "progressive_sign", "magnitude_aware_sign",
    "Quantizer", "SignSTE", "HardTanh", "ApproxSign", "ProgressiveSign", "MagnitudeAwareSign", "BinaryConv2d",
    "temperature_buffers", "set_temperature", "get_temperature", "saturated_fraction", "TemperatureSchedule",
    "get_quantizer",
]


# --------------------------------------------------------------------------------------------- autograd functions
def _window_grad(grad: torch.Tensor, x: torch.Tensor, clip_value: float) -> torch.Tensor:
    """``grad * 1{|x| < clip_value}``; the window is open at both ends, as the gradient of the official
    ``clamp(-1.5, 1.5)`` is 0 there too."""
    if torch.compiler.is_compiling():
        # Inductor fuses the formula into one kernel anyway; keeping it keeps compiled graphs, and so the report's
        # compiled runs, bit for bit what they were.
        return grad * (x.abs() < clip_value).to(grad.dtype)
    return torch.ops.aten.hardtanh_backward(grad, x, -clip_value, clip_value)  # one kernel instead of four


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, clip_value: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip_value = clip_value
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return _window_grad(grad, x, ctx.clip_value), None


class _ApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp_min(0.0)


class _ProgressiveSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, temperature: torch.Tensor, floor: float) -> torch.Tensor:
        if temperature.device.type == "cpu" and not torch.compiler.is_compiling():
            # Reading a CPU tensor costs nothing: one or two passes over the weights instead of five, same values.
            tau = float(temperature)
            if tau < floor:
                return torch.sign(w)
            return torch.div(w, max(tau, 1e-8)).clamp_(-1.0, 1.0)
        soft = (w / temperature.clamp(min=1e-8)).clamp(-1.0, 1.0)
        # Branch-free so that a GPU never syncs on the temperature's value and a compiled graph has no break.
        return torch.where(temperature < floor, torch.sign(w), soft)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class _MagnitudeAwareSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, clip_value: float) -> torch.Tensor:
        ctx.save_for_backward(w)
        ctx.clip_value = clip_value
        scale = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
        return scale * torch.sign(w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (w,) = ctx.saved_tensors
        # The scale is treated as a constant, as in Bi-Real's and ReActNet's code.
        return _window_grad(grad, w, ctx.clip_value), None


def sign_ste(x: torch.Tensor, clip_value: float = 1.0) -> torch.Tensor:
    r"""Sign with a straight-through gradient.

    Forward :math:`\operatorname{sign}(x)`; gradient :math:`\partial L/\partial x = \partial L/\partial y \cdot
    1\{|x| < c\}` (BNN, Courbariaux et al. 2016; BNext uses :math:`c = 1.5`).
    """
    return _SignSTE.apply(x, float(clip_value))


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    r"""Bi-Real Net's ApproxSign: forward :math:`\operatorname{sign}(x)`, gradient :math:`\max(0, 2 - 2|x|)`."""
    return _ApproxSign.apply(x)


def progressive_sign(w: torch.Tensor, temperature: torch.Tensor, floor: float = 1e-7) -> torch.Tensor:
    r"""BNext's progressive weight binarization.

    Forward :math:`\operatorname{clip}(w/\tau, -1, 1)` while :math:`\tau \ge` ``floor``, else exactly
    :math:`\operatorname{sign}(w)`; identity gradient to :math:`w`.
    """
    return _ProgressiveSign.apply(w, temperature, float(floor))


def magnitude_aware_sign(w: torch.Tensor, clip_value: float = 1.0) -> torch.Tensor:
    r"""XNOR-Net style weight binarizer: :math:`\alpha_o \operatorname{sign}(w)` with
    :math:`\alpha_o = \operatorname{mean}|w_o|` per output channel; gradient :math:`1\{|w| < c\}`."""
    return _MagnitudeAwareSign.apply(w, float(clip_value))


# --------------------------------------------------------------------------------------------- quantizer modules
class Quantizer(nn.Module):
    """What every quantizer declares, and what cost accounting, export and packed inference read (larq's
    quantizer interface is the model). Subclasses set the class attributes and override what differs.

    Attributes:
        precision: bits of the output once training has converged (1: binary, 32: full precision).
        latent_clip: a binary layer keeps its latent weights in ``[-latent_clip, latent_clip]`` while training
            (``None``: no clip).
        scaled: the output is ``scale(w) * sign(w)`` with one scale per output channel (export stores it, packed
            inference multiplies the integer result by it); ``False``: the output is ``sign``.
    """

    precision: int = 32
    latent_clip: float | None = None
    scaled: bool = False

    @property
    def is_binary(self) -> bool:
        """Whether the forward gives its ``precision``-bit values now (a progressive quantizer: only at the end)."""
        return self.precision == 1

    def scale(self, w: torch.Tensor) -> torch.Tensor | None:
        """The per-output-channel scale of a ``scaled`` quantizer (``None`` otherwise)."""
        return None

    def binary_state(self) -> dict[str, torch.Tensor]:
        """The quantizer's buffers in its binary state (what a packed file restores; a temperature at zero)."""
        return {}


class SignSTE(Quantizer):
    """Activation (or weight) binarizer ``sign`` with the straight-through window ``|x| < clip_value``.

    Args:
        clip_value: half-width of the window where the gradient passes (BNext: 1.5, BNN: 1.0).
        track_temperature: register a ``temperature`` buffer. The official BNext ``HardSign`` carries one that
            decays with the weights' but never changes its forward; it is kept so official checkpoints load
            strictly and so logs can show it.
    """

    precision = 1

    def __init__(self, clip_value: float = 1.0, track_temperature: bool = False):
        super().__init__()
        self.clip_value = float(clip_value)
        if track_temperature:
            self.register_buffer("temperature", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(x, self.clip_value)

    def extra_repr(self) -> str:
        return f"clip_value={self.clip_value}"


class HardTanh(Quantizer):
    """Full precision: ``clamp(x, -clip_value, clip_value)``, the function whose gradient is :class:`SignSTE`'s
    straight-through window. A float twin's activation: it keeps the binary unit's bounded input without its sign
    (with none at all, a float BNext's multiplicative ELM-Attention grows its activations from block to block
    faster than BatchNorm's running statistics follow, and its eval-mode logits overflow, docs/method.md §9)."""

    def __init__(self, clip_value: float = 1.0):
        super().__init__()
        self.clip_value = float(clip_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-self.clip_value, self.clip_value)

    def extra_repr(self) -> str:
        return f"clip_value={self.clip_value}"


class ApproxSign(Quantizer):
    """Bi-Real Net's activation binarizer (see :func:`approx_sign`)."""

    precision = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return approx_sign(x)


class ProgressiveSign(Quantizer):
    """BNext's progressive weight binarizer (see :func:`progressive_sign`), holding the ``temperature`` buffer.

    ``precision`` is 1: that is the state every run ends in (the temperature reaches its floor at ~30 % of
    training), and the one cost accounting describes. :attr:`is_binary` tells whether it holds already.

    Args:
        floor: temperature below which the forward is exactly ``sign(w)`` (official: 1e-7; BNext-18: 1e-5).
        latent_clip: the layer keeps its latent weights in ``[-latent_clip, latent_clip]`` while training.
    """

    precision = 1

    def __init__(self, floor: float = 1e-7, latent_clip: float = 1.5):
        super().__init__()
        self.floor = float(floor)
        self.latent_clip = float(latent_clip)
        self.register_buffer("temperature", torch.ones(1))

    @property
    def is_binary(self) -> bool:
        return bool(self.temperature.item() < self.floor)

    def binary_state(self) -> dict[str, torch.Tensor]:
        return {"temperature": torch.zeros(1)}

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return progressive_sign(w, self.temperature, self.floor)

    def extra_repr(self) -> str:
        return f"floor={self.floor}, latent_clip={self.latent_clip}"


class MagnitudeAwareSign(Quantizer):
    """Weight binarizer ``mean|w| * sign(w)`` per output channel (XNOR-Net, Bi-Real, ReActNet)."""

    precision = 1
    scaled = True

    def __init__(self, clip_value: float = 1.0):
        super().__init__()
        self.clip_value = float(clip_value)

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().mean(dim=tuple(range(1, w.dim())))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return magnitude_aware_sign(w, self.clip_value)


_QUANTIZERS = {
    "sign_ste": SignSTE,
    "approx_sign": ApproxSign,
    "progressive_sign": ProgressiveSign,
    "magnitude_aware_sign": MagnitudeAwareSign,
    "hardtanh": HardTanh,
}


def get_quantizer(identifier: str | Quantizer | None) -> Quantizer | None:
    """Resolve ``None``, a :class:`Quantizer`, or a quantizer name (``sign_ste``, ``approx_sign``, ...)."""
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, nn.Module):
        raise TypeError(f"{type(identifier).__name__} is not a bnext_lib.binary.Quantizer: declare precision, "
                        "latent_clip and scaled by subclassing it")
    if isinstance(identifier, str) and identifier in _QUANTIZERS:
        return _QUANTIZERS[identifier]()
    raise ValueError(f"unknown quantizer {identifier!r}; choose one of {sorted(_QUANTIZERS)} or pass a module")


# --------------------------------------------------------------------------------------------- binary convolution
class BinaryConv2d(nn.Conv2d):
    """A convolution whose input and kernel pass through quantizers (larq's ``QuantConv2D`` pattern).

    ``y = conv2d(input_quantizer(x), weight_quantizer(w))``. With both quantizers ``None`` it is exactly
    ``nn.Conv2d``. While training, latent weights are clipped in place to the weight quantizer's ``latent_clip``
    before use, as the official code does on every training forward.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as for ``nn.Conv2d``; padding is
            ``kernel_size // 2`` unless given.
        input_quantizer: module or name for the activations, e.g. ``SignSTE(1.5)``.
        weight_quantizer: module or name for the kernel, e.g. ``ProgressiveSign()``.
        init: ``"normal"`` (official BNext: N(0, 1e-3^2)), ``"uniform"`` (ReActNet / Bi-Real: U(0, 1e-3)), or
            ``"default"`` (``nn.Conv2d``'s Kaiming-uniform).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1, bias: bool = False,
                 input_quantizer: str | nn.Module | None = None, weight_quantizer: str | nn.Module | None = None,
                 init: str = "normal"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=kernel_size // 2 if padding is None else padding, groups=groups, bias=bias)
        self.input_quantizer = get_quantizer(input_quantizer)
        self.weight_quantizer = get_quantizer(weight_quantizer)
        if init == "normal":
            nn.init.normal_(self.weight, std=1e-3)
        elif init == "uniform":
            with torch.no_grad():
                self.weight.uniform_(0.0, 1e-3)
        elif init != "default":
            raise ValueError(f"init must be 'normal', 'uniform' or 'default', got {init!r}")

    @property
    def input_precision(self) -> int:
        return 32 if self.input_quantizer is None else self.input_quantizer.precision

    @property
    def weight_precision(self) -> int:
        return 32 if self.weight_quantizer is None else self.weight_quantizer.precision

    def quantized_weight(self) -> torch.Tensor:
        """The kernel the convolution uses (binary once the temperature is at its floor)."""
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip = None if self.weight_quantizer is None else self.weight_quantizer.latent_clip
        if self.training and clip is not None:
            with torch.no_grad():
                self.weight.clamp_(-clip, clip)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        fast = cpu_kernels.binary_conv2d(self, x, self.quantized_weight())  # None where no speed path applies
        return fast if fast is not None else self._conv_forward(x, self.quantized_weight(), self.bias)


# --------------------------------------------------------------------------------------------- temperature
def temperature_buffers(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every ``temperature`` buffer of the model (weight and activation binarizers), with its name."""
    for name, buf in model.named_buffers():
        if name == "temperature" or name.endswith(".temperature"):
            yield name, buf


@torch.no_grad()
def set_temperature(model: nn.Module, value: float) -> int:
    """Set every temperature buffer to ``value`` (the official code decays all of them together).

    Returns the number of buffers set; 0 means the model has no progressive binarization.
    """
    n = 0
    for _, buf in temperature_buffers(model):
        buf.fill_(value)
        n += 1
    return n


def get_temperature(model: nn.Module) -> float | None:
    """The weight binarizers' temperature (they share one value), or ``None`` if the model has none."""
    for m in model.modules():
        if isinstance(m, ProgressiveSign):
            return float(m.temperature.item())
    return None


@torch.no_grad()
def saturated_fraction(model: nn.Module) -> float | None:
    r"""Fraction of the progressively binarized latent weights whose forward value is already :math:`\pm 1`,
    i.e. :math:`|w| \ge \tau` (all of them once :math:`\tau` is below the floor, exact zeros aside).

    ``None`` if the model has no :class:`ProgressiveSign`.
    """
    hit = total = 0
    for m in model.modules():
        if isinstance(m, BinaryConv2d) and isinstance(m.weight_quantizer, ProgressiveSign):
            q = m.weight_quantizer
            w = m.weight.detach()
            hit += int(((w != 0) if q.is_binary else (w.abs() >= q.temperature)).sum())
            total += w.numel()
    return hit / total if total else None


class TemperatureSchedule:
    r"""The progressive-binarization schedule :math:`\tau_e = f^{\,e}`, ending exactly binary.

    The official run multiplies :math:`\tau` by 0.9 after every epoch of a 512-epoch run, so it falls below the
    1e-7 floor at epoch 153, about 30 % of the run. For a run of any length the factor is chosen so that
    :math:`\tau` reaches ``floor`` at ``reach`` of the run; from there on it is 0 (exact ``sign``).

    Args:
        epochs: run length (epochs, or any other unit the caller steps in).
        reach: fraction of the run at which :math:`\tau` reaches ``floor``.
        floor: the binarizers' floor (1e-7 for BNext).
        factor: per-unit decay factor; given, it overrides ``reach`` (``factor=0.9`` is the official schedule).
    """

    def __init__(self, epochs: float, reach: float = 0.3, floor: float = 1e-7, factor: float | None = None):
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        if not 0.0 < reach <= 1.0:
            raise ValueError(f"reach must be in (0, 1], got {reach}")
        if not 0.0 < floor < 1.0:
            raise ValueError(f"floor must be in (0, 1), got {floor}")
        self.epochs, self.floor = float(epochs), float(floor)
        if factor is None:
            self.end = reach * self.epochs
            self.factor = floor ** (1.0 / self.end)
        else:
            if not 0.0 < factor < 1.0:
                raise ValueError(f"factor must be in (0, 1), got {factor}")
            self.factor = float(factor)
            self.end = math.log(floor) / math.log(factor)

    @classmethod
    def official(cls, epochs: float = 512) -> "TemperatureSchedule":
        """The released recipe: ``tau *= 0.9`` after every epoch."""
        return cls(epochs, factor=0.9)

    def __call__(self, epoch: float) -> float:
        """Temperature to use during ``epoch`` (fractional epochs allowed, for per-step updates)."""
        if epoch >= self.end:
            return 0.0
        return self.factor ** epoch

    def apply(self, model: nn.Module, epoch: float) -> float:
        """Set the model's temperatures for ``epoch`` and return the value."""
        value = self(epoch)
        set_temperature(model, value)
        return value

    def __repr__(self) -> str:
        return f"TemperatureSchedule(epochs={self.epochs:g}, factor={self.factor:.6g}, binary_from={self.end:.4g})"
