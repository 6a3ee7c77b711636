"""Packed-bit inference equals the float simulation exactly."""
import pytest
import torch

from bnext_lib.binary import BinaryConv2d, set_temperature
from bnext_lib.packed import PackedBinaryConv2d, kernel_backend, pack_bits, packed_model, xnor_popcount


def _conv(cin, cout, k, stride, groups, weight_quantizer="progressive_sign", padding=None):
    conv = BinaryConv2d(cin, cout, k, stride=stride, groups=groups, padding=padding, input_quantizer="sign_ste",
                        weight_quantizer=weight_quantizer, init="default").eval()
    set_temperature(conv, 0.0)
    return conv


@pytest.mark.slow
def test_pack_bits_and_popcount():
    torch.manual_seed(0)
    bits = torch.rand(5, 3, 130) > 0.5
    words = pack_bits(bits)
    assert words.shape == (5, 3, 3) and words.dtype == torch.int64
    a, b = torch.rand(7, 100) > 0.5, torch.rand(4, 100) > 0.5
    expected = (a[:, None, :] ^ b[None, :, :]).sum(-1).to(torch.int32)
    assert torch.equal(xnor_popcount(pack_bits(a), pack_bits(b)), expected)


@pytest.mark.parametrize("cin, cout, k, stride, groups, size", [
    (16, 8, 3, 1, 1, (9, 11)),      # odd sizes
    (16, 8, 3, 2, 1, (13, 7)),      # stride 2 on odd sizes
    (70, 12, 3, 1, 1, (5, 5)),      # K = 630: words with padding bits
    (64, 32, 1, 1, 1, (6, 6)),      # 1x1
    (64, 32, 1, 2, 1, (7, 7)),      # 1x1 stride 2 (shortcut-style)
    (32, 32, 3, 1, 4, (8, 9)),      # groups
    (24, 48, 3, 2, 3, (11, 11)),    # groups, stride 2
])
def test_packed_conv_equals_float(cin, cout, k, stride, groups, size):
    torch.manual_seed(1)
    conv = _conv(cin, cout, k, stride, groups)
    packed = PackedBinaryConv2d(conv)
    x = torch.randn(2, cin, *size)
    x[0, 0, 1, 1] = 0.0                     # an exact zero of sign(x) inside the image
    with torch.no_grad():
        ref = conv(x)
    out = packed(x)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)


def test_packed_conv_weight_zeros_and_magnitude_aware():
    torch.manual_seed(2)
    conv = _conv(16, 8, 3, 1, 1)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 0.0       # sign(0) = 0 in the official forward
        conv.weight[3, 5, 1, 2] = 0.0
    x = torch.randn(1, 16, 7, 7)
    with torch.no_grad():
        assert torch.equal(PackedBinaryConv2d(conv)(x), conv(x))
    mag = _conv(16, 8, 3, 1, 1, weight_quantizer="magnitude_aware_sign")
    with torch.no_grad():
        torch.testing.assert_close(PackedBinaryConv2d(mag)(x), mag(x), rtol=1e-6, atol=1e-5)


def test_refuses_non_binary():
    conv = BinaryConv2d(8, 8, 3, input_quantizer="sign_ste", weight_quantizer="progressive_sign")
    set_temperature(conv, 0.5)
    with pytest.raises(ValueError, match="not binary yet"):
        PackedBinaryConv2d(conv)
    with pytest.raises(ValueError, match="1-bit inputs"):
        PackedBinaryConv2d(BinaryConv2d(8, 8, 3, weight_quantizer="progressive_sign"))


@pytest.mark.parametrize("name", ["bnext_pico", "reactnet_nano"])
def test_packed_model_equals_float_model(name, tmp_path):
    from bnext_lib.export import save_packed
    from bnext_lib.models import create_model
    from bnext_lib.packed import load_packed_inference

    torch.manual_seed(3)
    model = create_model(name, num_classes=10, in_chans=1).eval()
    set_temperature(model, 0.0)
    for m in model.modules():  # BN statistics away from identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        out = packed_model(model)(x)
        path = save_packed(model, tmp_path / "m.safetensors", format="exact")
        loaded = load_packed_inference(path)(x)
    if name.startswith("bnext"):  # +-1 kernels: integer arithmetic, bit-identical logits
        assert torch.equal(out, ref) and torch.equal(loaded, ref)
    else:  # magnitude-aware kernels: the per-channel scale is applied after the sum, a different rounding
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(loaded, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # builds the compiled kernel that the numpy one is held against
def test_numpy_fallback_equals_kernel(monkeypatch):
    import bnext_lib.packed as packed

    torch.manual_seed(4)
    a, b = pack_bits(torch.rand(37, 300) > 0.5), pack_bits(torch.rand(9, 300) > 0.5)
    first = xnor_popcount(a, b)
    monkeypatch.setattr(packed, "_EXT", None)
    monkeypatch.setattr(packed, "_EXT_ERROR", "disabled for the test")
    assert kernel_backend() == "numpy"
    assert torch.equal(xnor_popcount(a, b), first)
    monkeypatch.setattr(packed.np, "bitwise_count", None, raising=False)
    monkeypatch.delattr(packed.np, "bitwise_count")
    assert torch.equal(xnor_popcount(a, b), first)  # the byte-table path of numpy < 2
