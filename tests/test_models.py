"""Every registered model: shapes, any input size, gradients; BNext's parameter counts and ablation flags."""
import pytest
import timm
import torch

from bnext_lib.models import create_model, list_models, model_info

SMALL = [n for n in list_models() if not model_info(n).imagenet]
IMAGENET_CHEAP = ["bnext_tiny", "bnext18", "birealnet18", "binary_resnet18", "reactnet_a"]


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("size", [28, 32, 27])
def test_small_models_forward_any_size(name, size):
    m = create_model(name, num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 1, size, size))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", SMALL)
def test_every_trainable_parameter_gets_a_gradient(name):
    m = create_model(name, num_classes=10, in_chans=1).train()
    m(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", SMALL)
def test_ceil_mode_pooling_does_not_count_padding(name):
    """Inductor's backward of ceil-mode average pooling with count_include_pad=True divides the last window by the
    full kernel size while the forward does not (pytorch/pytorch#198119): compiled training would get wrong
    gradients on odd maps. Without padding count_include_pad=False gives the same numbers in eager."""
    pools = [m for m in create_model(name, num_classes=10, in_chans=1).modules()
             if isinstance(m, torch.nn.AvgPool2d) and m.ceil_mode]
    assert all(not m.count_include_pad for m in pools)


@pytest.mark.slow
@pytest.mark.portability
def test_compiled_shortcut_pooling_has_the_eager_gradient():
    from bnext_lib.blocks import shortcut_pool

    pool = shortcut_pool()
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    w = torch.randn(2, 3, 4, 4)
    eager, = torch.autograd.grad((pool(x) * w).sum(), x)
    compiled, = torch.autograd.grad((torch.compile(pool)(x) * w).sum(), x)
    assert torch.equal(compiled, eager)  # one division by the same divisor, in this process


@pytest.mark.parametrize("name", IMAGENET_CHEAP)
def test_imagenet_models_at_224_and_28(name):
    m = create_model(name, num_classes=1000).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        assert m(torch.randn(1, 3, 28, 28)).shape == (1, 1000)  # the official BNext crashes here


# Official parameter counts (hpi-xnor/BNext bnext.py), see tests/fixtures/official_reference.json
@pytest.mark.parametrize("elm,ir,count", [(True, True, 29_847_486), (False, True, 29_847_486),
                                          (True, False, 28_341_802), (False, False, 28_341_802)])
def test_bnext_tiny_variant_parameter_counts(elm, ir, count):
    m = create_model("bnext_tiny", num_classes=10, stem_stride=1, elm_attention=elm, info_recoupling=ir)
    assert sum(p.numel() for p in m.parameters()) == count


def test_bnext_tiny_imagenet_parameter_count():
    m = create_model("bnext_tiny")
    assert sum(p.numel() for p in m.parameters()) == 30_862_236


def test_ablation_flags_change_the_graph_not_the_class():
    full = create_model("bnext_pico", num_classes=10)
    no_elm = create_model("bnext_pico", num_classes=10, elm_attention=False)
    no_ir = create_model("bnext_pico", num_classes=10, info_recoupling=False)
    assert type(full.blocks[1]) is type(no_elm.blocks[1]) is type(no_ir.blocks[1])
    assert full.blocks[1].mixer.elm_attention and not full.blocks[0].mixer.elm_attention  # alternation
    assert not any(b.mixer.elm_attention for b in no_elm.blocks)
    assert all(u.recoupling is None for b in no_ir.blocks for u in [b.mixer, *b.ffn])
    x = torch.randn(2, 3, 28, 28)
    torch.manual_seed(0)
    a = create_model("bnext_pico", num_classes=10).eval()(x)
    torch.manual_seed(0)
    b = create_model("bnext_pico", num_classes=10, elm_attention=False).eval()(x)
    assert not torch.allclose(a, b)


def test_unused_official_parameters_are_frozen_and_kept():
    m = create_model("bnext_pico", num_classes=10, info_recoupling=False)
    frozen = sorted(n for n, p in m.named_parameters() if not p.requires_grad)
    assert "stem.prelu.weight" in frozen
    assert "blocks.0.ffn.0.act_in.weight" in frozen and "blocks.0.ffn.0.norm2.weight" in frozen
    assert "blocks.1.mixer.act_in.weight" not in frozen  # ELM-Attention uses its input PReLU


def test_create_model_errors():
    with pytest.raises(ValueError, match="unknown model 'bnext_huge'"):
        create_model("bnext_huge")
    with pytest.raises(TypeError, match="does not take"):
        create_model("bnext_tiny", width=2)
    with pytest.raises(ValueError, match="stem_stride"):
        create_model("bnext_tiny", stem_stride=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("bnext_tiny", num_classes=0)


def test_timm_registry():
    m = timm.create_model("bnext_tiny", num_classes=10, stem_stride=1)
    assert sum(p.numel() for p in m.parameters()) == 29_847_486
    assert "bnext_small" in timm.list_models("bnext*")
    with pytest.raises(ValueError, match="load_official"):
        timm.create_model("bnext_tiny", pretrained=True)


def test_the_float_twin_is_the_same_network_without_quantizers():
    """``binary=False`` (``--float-twin``): the context arm of "specific to binary networks" keeps every parameter
    of the binary network (names and shapes); its weights are full precision and its activations pass through the
    sign's bounded surrogate (HardTanh) instead of the sign, with no temperatures; it is counted as full precision;
    a model that has no twin refuses the option before any data is read."""
    from bnext_lib.binary import BinaryConv2d, HardTanh, get_temperature
    from bnext_lib.complexity import profile
    from bnext_lib.config import TrainConfig

    binary, twin = (create_model("bnext_micro", num_classes=10, in_chans=1, binary=b) for b in (True, False))
    params = lambda m: {n: p.shape for n, p in m.named_parameters()}  # noqa: E731
    assert params(twin) == params(binary)
    convs = [m for m in twin.modules() if isinstance(m, BinaryConv2d)]
    assert convs and all(isinstance(m.input_quantizer, HardTanh) and m.weight_quantizer is None for m in convs)
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(convs[0].input_quantizer(x), x.clamp(-1.5, 1.5))
    assert get_temperature(twin) is None and get_temperature(binary) is not None
    assert profile(twin, (1, 1, 28, 28)).bops == 0 and profile(binary, (1, 1, 28, 28)).bops > 0
    with pytest.raises(ValueError, match="does not take \\['binary'\\]"):
        TrainConfig(model="birealnet18_micro", binary=False).validate()
    with pytest.raises(ValueError, match="takes none of the options"):
        TrainConfig(model="timm:resnet18", elm_attention=False).validate()
