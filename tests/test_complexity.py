"""Cost accounting against the BNext README and hand counts."""
import pytest
import torch.nn as nn

from bnext_lib.binary import BinaryConv2d, ProgressiveSign, SignSTE
from bnext_lib.complexity import cost_table, profile
from bnext_lib.models import create_model, model_info


def test_hand_counted_toy_model():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),                                      # real: 3*8*9*16*16
        BinaryConv2d(8, 16, 3, input_quantizer=SignSTE(), weight_quantizer=ProgressiveSign()),  # binary
        BinaryConv2d(16, 16, 1),                                                         # no quantizers: real
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    p = profile(model, (1, 3, 16, 16))
    assert p.bops == 8 * 16 * 9 * 16 * 16
    assert p.flops == 3 * 8 * 9 * 256 + 16 * 16 * 256 + 16 * 10
    assert p.params_binary == 16 * 8 * 9
    assert p.params_real == 3 * 8 * 9 + 16 * 16 + 16 * 10 + 10
    assert p.packed_bytes == 144 + 4 * p.params_real
    assert p.ops == p.bops / 64 + p.flops / 8 and p.ops_fp32 == p.bops / 64 + p.flops
    assert p.unknown == []


@pytest.mark.parametrize("name", ["bnext_tiny", "bnext_small", "bnext_middle",
                                  pytest.param("bnext_large", marks=pytest.mark.slow)])
def test_readme_ops_and_degree_within_one_percent(name):
    info = model_info(name)
    p = profile(create_model(name), (1, 3, 224, 224))
    assert p.ops / 1e9 == pytest.approx(info.readme_ops, rel=0.01)
    assert 100 * p.binarization_degree == pytest.approx(info.readme_degree, rel=0.01)


@pytest.mark.parametrize("name", ["reactnet_a", "birealnet18"])
def test_published_ops_of_baselines(name):
    p = profile(create_model(name), (1, 3, 224, 224))
    assert p.ops_fp32 / 1e9 == pytest.approx(model_info(name).extra["published_ops_fp32"], rel=0.02)


def test_bnext_tiny_breakdown():
    p = profile(create_model("bnext_tiny"), (1, 3, 224, 224))
    assert p.bops / 1e9 == pytest.approx(4.82, abs=0.005)
    assert p.flops / 1e6 == pytest.approx(13.3, abs=0.1)
    assert p.params_binary / 1e6 == pytest.approx(28.25, abs=0.01)
    assert p.packed_bytes / 1e6 == pytest.approx(14.0, abs=0.05)  # 1-bit binary weights + fp32 rest


def test_cost_table_for_names_and_modules():
    table = cost_table(["bnext_pico", "reactnet_nano"], (1, 3, 28, 28), num_classes=10)
    assert list(table.index) == ["bnext_pico", "reactnet_nano"]
    for col in ("params_M", "BOPs_G", "FLOPs_M", "OPs_G", "degree_pct", "packed_MB", "published_top1"):
        assert col in table.columns
    t2 = cost_table({"mine": create_model("bnext_pico", num_classes=10)}, (1, 3, 28, 28))
    assert t2.loc["mine", "OPs_G"] == pytest.approx(table.loc["bnext_pico", "OPs_G"])


def test_profile_restores_training_mode():
    m = create_model("bnext_pico", num_classes=10).train()
    profile(m, (1, 3, 28, 28))
    assert m.training
