"""Quantizers, binary convolution and temperature: forwards and pseudo-gradients against NumPy formulas."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from bnext_lib.binary import (ApproxSign, BinaryConv2d, MagnitudeAwareSign, ProgressiveSign, SignSTE,
                              TemperatureSchedule, approx_sign, get_quantizer, get_temperature, magnitude_aware_sign,
                              progressive_sign, saturated_fraction, set_temperature, sign_ste)


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    g = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
    (y * g).sum().backward()
    return y.detach(), x.grad, g


def test_sign_ste_matches_formula_and_official_clamp_gradient():
    x = torch.tensor([-2.0, -1.5, -1.49, -0.3, 0.0, 0.4, 1.5, 1.51, 3.0])
    y, gx, g = _grad(lambda t: sign_ste(t, 1.5), x)
    np.testing.assert_array_equal(y.numpy(), np.sign(x.numpy()))
    np.testing.assert_allclose(gx.numpy(), g.numpy() * (np.abs(x.numpy()) < 1.5))
    # the official STE is the gradient of clamp(x, -1.5, 1.5), which is 0 at the ends as well
    x2 = x.clone().requires_grad_(True)
    (x2.clamp(-1.5, 1.5) * g).sum().backward()
    np.testing.assert_allclose(gx.numpy(), x2.grad.numpy())


def test_approx_sign_gradient():
    x = torch.tensor([-1.2, -1.0, -0.5, 0.0, 0.25, 0.99, 2.0])
    y, gx, g = _grad(approx_sign, x)
    np.testing.assert_array_equal(y.numpy(), np.sign(x.numpy()))
    np.testing.assert_allclose(gx.numpy(), g.numpy() * np.maximum(0, 2 - 2 * np.abs(x.numpy())), rtol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.3, 1e-3])
def test_progressive_sign_soft_phase(tau):
    w = torch.randn(4, 3, 3, 3)
    y, gw, g = _grad(lambda t: progressive_sign(t, torch.tensor([tau])), w)
    np.testing.assert_allclose(y.numpy(), np.clip(w.numpy() / tau, -1, 1), rtol=1e-6)
    np.testing.assert_allclose(gw.numpy(), g.numpy())  # identity STE


def test_progressive_sign_is_exact_sign_below_floor():
    w = torch.randn(64, 8, 3, 3) * 1e-9  # tiny weights would stay fractional under clip(w / tau)
    for tau in (9.9e-8, 0.0):
        y = progressive_sign(w, torch.tensor([tau]))
        assert torch.equal(y, torch.sign(w))
    y = progressive_sign(w, torch.tensor([1e-7]))  # at the floor itself the soft form still applies
    assert not torch.equal(y, torch.sign(w))


def test_magnitude_aware_sign():
    w = torch.randn(5, 2, 3, 3)
    y, gw, g = _grad(magnitude_aware_sign, w)
    alpha = np.abs(w.numpy()).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y.numpy(), alpha * np.sign(w.numpy()), rtol=1e-6)
    np.testing.assert_allclose(gw.numpy(), g.numpy() * (np.abs(w.numpy()) < 1.0))


def test_binary_conv_without_quantizers_is_conv2d():
    conv = nn.Conv2d(6, 4, 3, stride=2, padding=1, bias=False)
    bconv = BinaryConv2d(6, 4, 3, stride=2)
    bconv.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(bconv(x), conv(x), rtol=0, atol=0)


def test_binary_conv_is_binary_at_floor_and_clips_latent_weights_in_training():
    conv = BinaryConv2d(4, 8, 3, input_quantizer=SignSTE(1.5), weight_quantizer=ProgressiveSign())
    with torch.no_grad():
        conv.weight.normal_(0, 2.0)
    set_temperature(conv, 0.0)
    assert conv.weight_quantizer.is_binary
    x = torch.randn(2, 4, 7, 7)
    conv.eval()
    ref = nn.functional.conv2d(torch.sign(x), torch.sign(conv.weight), padding=1)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=0)
    assert conv.weight.abs().max() > 1.5  # eval leaves latent weights alone
    conv.train()
    conv(x)
    assert conv.weight.abs().max() <= 1.5
    assert torch.equal(conv.quantized_weight().abs(), torch.ones_like(conv.weight))


def test_precision_attributes_and_lookup():
    for q in (SignSTE(), ApproxSign(), ProgressiveSign(), MagnitudeAwareSign()):
        assert q.precision == 1
    assert isinstance(get_quantizer("approx_sign"), ApproxSign)
    assert get_quantizer(None) is None
    with pytest.raises(ValueError, match="unknown quantizer 'nope'"):
        get_quantizer("nope")
    with pytest.raises(ValueError, match="init"):
        BinaryConv2d(2, 2, init="zeros")


def test_temperature_schedule_reaches_floor_at_the_chosen_fraction():
    s = TemperatureSchedule(epochs=20, reach=0.3)
    taus = [s(e) for e in range(20)]
    assert taus[0] == 1.0
    assert all(a > b for a, b in zip(taus[:6], taus[1:7]))
    assert taus[5] > 1e-7 and taus[6] == 0.0  # 0.3 * 20 = 6 epochs
    assert s(5.5) == pytest.approx(1e-7 ** (5.5 / 6))  # per-step values for fractional epochs


def test_official_schedule_is_0_9_per_epoch():
    s = TemperatureSchedule.official(512)
    assert s(10) == pytest.approx(0.9 ** 10)
    assert s(152) == pytest.approx(0.9 ** 152) and s(152) > 1e-7
    assert s(153) == 0.0  # official: 0.9**153 < 1e-7 -> exact sign from epoch 153 (30 % of 512)


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(epochs=10, reach=0), dict(epochs=10, reach=1.5),
                                    dict(epochs=10, factor=1.2), dict(epochs=10, floor=2.0)])
def test_temperature_schedule_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        TemperatureSchedule(**kwargs)


def test_schedule_apply_sets_every_temperature():
    from bnext_lib.models import create_model
    m = create_model("bnext_pico", num_classes=10)
    assert get_temperature(m) == 1.0
    s = TemperatureSchedule(10)
    value = s.apply(m, 2)
    temps = {float(b.item()) for n, b in m.named_buffers() if n.endswith("temperature")}
    assert len(temps) == 1 and temps.pop() == pytest.approx(value, rel=1e-6)
    assert get_temperature(m) == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.37, 1e-3, 1.01e-7, 1e-7, 9.9e-8, 0.0])
def test_progressive_sign_cpu_shortcut_equals_the_graph_form(tau, monkeypatch):
    """On CPU the forward reads tau and does one or two passes; compiled (or on a GPU) it stays branch-free."""
    w = torch.randn(16, 8, 3, 3) * 0.05
    fast = progressive_sign(w, torch.tensor([tau]))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    graph = progressive_sign(w, torch.tensor([tau]))
    assert torch.equal(fast, graph)


@pytest.mark.parametrize("cin,k,side,stride,gemm", [(1024, 3, 2, 1, True), (512, 1, 2, 1, True),
                                                    (512, 1, 1, 1, True), (64, 1, 2, 1, False),
                                                    (128, 3, 2, 1, False), (512, 3, 4, 1, False),
                                                    (512, 3, 2, 2, True)])
def test_gemm_weight_gradient_on_tiny_maps(cin, k, side, stride, gemm):
    """Forward and input gradient bit for bit oneDNN's; the weight gradient equal in float tolerance."""
    from bnext_lib.cpu_kernels import gemm_weight_grad_pays as _gemm_weight_grad_pays
    conv = BinaryConv2d(cin, cin, k, stride, input_quantizer=SignSTE(1.5), weight_quantizer=ProgressiveSign())
    x = torch.randn(16, cin, side, side, requires_grad=True)
    assert _gemm_weight_grad_pays(conv.train(), x) == gemm
    y = conv(x)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, conv.weight), g)
    xs, w = x.detach().sign().requires_grad_(), conv.weight.detach().requires_grad_()
    ref = nn.functional.conv2d(xs, w, stride=stride, padding=k // 2)
    ref_gxs, ref_gw = torch.autograd.grad(ref, (xs, w), g)
    assert torch.equal(y, ref)
    assert torch.equal(gx, ref_gxs * (x.detach().abs() < 1.5))
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-6 * ref_gw.abs().max().item())
    assert not _gemm_weight_grad_pays(conv.eval(), x)
    with torch.no_grad():
        assert not _gemm_weight_grad_pays(conv.train(), x)


def test_window_gradient_is_the_same_eager_and_in_compiled_graphs(monkeypatch):
    from bnext_lib.binary import _window_grad
    x = torch.tensor([-2.0, -1.5, -1.49, 0.0, 1.49, 1.5, 3.0]).repeat(50)
    g = torch.randn_like(x)
    eager = _window_grad(g, x, 1.5)  # aten.hardtanh_backward
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(eager, _window_grad(g, x, 1.5))  # the formula inductor fuses
    assert torch.equal(eager, g * (x.abs() < 1.5))


# ------------------------------------------------------------------------------------------ the quantizer interface
def _quantizers():
    from bnext_lib.models import create_model, list_models
    seen = {}
    for name in list_models():
        for m in create_model(name, num_classes=10).modules():
            if isinstance(m, BinaryConv2d):
                for q in (m.input_quantizer, m.weight_quantizer):
                    if q is not None:
                        seen.setdefault(type(q).__name__, (name, q))
    return seen


@pytest.mark.slow
def test_every_quantizer_of_every_model_declares_the_interface():
    from bnext_lib.binary import Quantizer
    found = _quantizers()
    assert {"SignSTE", "ApproxSign", "ProgressiveSign", "MagnitudeAwareSign"} <= set(found)
    for kind, (model, q) in found.items():
        assert isinstance(q, Quantizer), (model, kind)
        assert q.precision in (1, 32) and isinstance(q.scaled, bool)
        assert q.latent_clip is None or q.latent_clip > 0


def test_cost_export_and_packed_inference_read_the_declared_precision(tmp_path):
    """A quantizer that declares 8 bits, in place of a model's 1-bit ones: cost accounting counts its layers as
    full-precision, export leaves them float, packed inference refuses them; with the same quantizer declaring
    1 bit all three treat the layers as binary."""
    from bnext_lib.binary import Quantizer, set_temperature
    from bnext_lib.complexity import profile
    from bnext_lib.export import save_packed
    from bnext_lib.models import create_model
    from bnext_lib.packed import PackedBinaryConv2d

    class Declared(Quantizer):
        def __init__(self, bits):
            super().__init__()
            self.precision = bits

        def forward(self, x):
            return torch.sign(x)

    def model_with(bits):
        model = create_model("bnext_pico", num_classes=10).eval()
        set_temperature(model, 0.0)
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.input_quantizer = Declared(bits)
                m.weight_quantizer = Declared(bits)
        return model

    x = torch.randn(1, 3, 28, 28)
    binary, eight = model_with(1), model_with(8)
    assert profile(binary, x.shape).binarization_degree > 0.5
    assert profile(eight, x.shape).binarization_degree == 0
    conv = next(m for m in eight.modules() if isinstance(m, BinaryConv2d))
    with pytest.raises(ValueError, match="1-bit"):
        PackedBinaryConv2d(conv)
    PackedBinaryConv2d(next(m for m in binary.modules() if isinstance(m, BinaryConv2d)))
    small = save_packed(binary, tmp_path / "b.safetensors").stat().st_size
    large = save_packed(eight, tmp_path / "e.safetensors").stat().st_size
    assert large > 4 * small  # the 8-bit layers stay float32 in the file


def test_a_module_that_does_not_declare_the_interface_is_refused():
    with pytest.raises(TypeError, match="Quantizer"):
        BinaryConv2d(8, 8, input_quantizer=nn.Tanh())


def test_saturated_fraction():
    conv = BinaryConv2d(4, 4, 3, input_quantizer="sign_ste", weight_quantizer="progressive_sign")
    model = nn.Sequential(conv)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1, 1, conv.weight.numel()).view_as(conv.weight))
    set_temperature(model, 0.5)
    expected = (conv.weight.abs() >= 0.5).float().mean().item()
    assert saturated_fraction(model) == pytest.approx(expected)
    set_temperature(model, 0.0)
    assert saturated_fraction(model) == pytest.approx(1.0)
    assert saturated_fraction(nn.Linear(2, 2)) is None
