"""Our BNext against the official code: names, parameter counts, logits and one training step recorded from
hpi-xnor/BNext (tests/fixtures/official_reference.json, made by tests/fixtures/make_official_reference.py);
strict loading."""
import json
from pathlib import Path

import pytest
import torch

from bnext_lib.checkpoints import CheckpointError, load_official, save_official, to_official_state_dict
from bnext_lib.models import create_model
from official_reference import (CASES, TRAIN_BATCH, TRAIN_CASES, TRAIN_LABELS, fill_reference, grad_stats,
                                keys_digest, reference_input)

REF = json.loads((Path(__file__).parent / "fixtures" / "official_reference.json").read_text())["cases"]


@pytest.mark.parametrize("case", list(CASES))
def test_matches_official_model(case):
    name, kwargs, _, _, size, temps = CASES[case]
    expected = REF[case]
    model = create_model(name, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == expected["params"]
    official_state = to_official_state_dict(model)
    assert len(official_state) == expected["n_keys"]
    assert keys_digest(official_state) == expected["keys_sha256"], "state-dict names or shapes differ"
    x = reference_input(size)
    for tau in temps:
        load_official(model, fill_reference(official_state, tau))
        with torch.no_grad():
            logits = model.eval()(x)
        # element-wise relative tolerance: logits span many magnitudes; BNext itself matches bit for bit
        torch.testing.assert_close(logits, torch.tensor(expected["logits"][repr(tau)]), rtol=1e-5, atol=1e-4)


def test_round_trip_through_an_official_format_file(tmp_path):
    model = create_model("bnext_pico", num_classes=10).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.1)
    x = torch.randn(2, 3, 28, 28)
    expected = model(x)
    path = save_official(model, tmp_path / "checkpoint.pth.tar", epoch=3, best_top1_acc=torch.tensor(12.5),
                         train_loss=[1.0, 0.5], optimizer={"state": {}, "param_groups": []})
    saved = torch.load(path, weights_only=True)
    assert all(k.startswith("module.feature.") or k.startswith("module.prelu") or k.startswith("module.fc")
               for k in saved["state_dict"])
    fresh = load_official(create_model("bnext_pico", num_classes=10), path).eval()
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)


def test_bare_state_dict_without_prefix_loads():
    model = create_model("bnext_pico", num_classes=10)
    load_official(create_model("bnext_pico", num_classes=10), to_official_state_dict(model, ddp_prefix=False))


def test_missing_and_unexpected_keys_are_named():
    state = to_official_state_dict(create_model("bnext_pico", num_classes=10))
    del state["module.feature.3.Attention.binary_conv.weight"]
    state["module.feature.3.Attention.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        load_official(create_model("bnext_pico", num_classes=10), state)
    msg = str(e.value)
    assert "1 missing: feature.3.Attention.binary_conv.weight" in msg
    assert "1 unexpected: feature.3.Attention.extra" in msg


def test_shape_mismatch_is_named():
    state = to_official_state_dict(create_model("bnext_pico", num_classes=100))
    with pytest.raises(CheckpointError, match=r"fc.weight: checkpoint \(100, 256\) vs model \(10, 256\)"):
        load_official(create_model("bnext_pico", num_classes=10), state)


def test_variant_mismatch_gets_a_hint():
    state = to_official_state_dict(create_model("bnext_pico", num_classes=10, elm_attention=False))
    with pytest.raises(CheckpointError, match="ELM-Attention flag differs"):
        load_official(create_model("bnext_pico", num_classes=10), state)
    state = to_official_state_dict(create_model("bnext_pico", num_classes=10, info_recoupling=False))
    with pytest.raises(CheckpointError, match="Info-Recoupling flag differs"):
        load_official(create_model("bnext_pico", num_classes=10), state)


def test_corrupt_and_truncated_files_are_named(tmp_path):
    model = create_model("bnext_pico", num_classes=10)
    good = save_official(model, tmp_path / "good.pth.tar")
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth.tar is corrupt or truncated"):
        load_official(model, truncated)
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth.tar"):
        load_official(model, garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official(model, tmp_path / "absent.pth.tar")


def test_untrusted_pickled_objects_are_refused_with_advice(tmp_path):
    model = create_model("bnext_pico", num_classes=10)
    path = tmp_path / "with_object.pth.tar"
    torch.save({"state_dict": to_official_state_dict(model), "args": Path("x")}, path)
    with pytest.raises(CheckpointError, match="trusted=True"):
        load_official(model, path)
    load_official(model, path, trusted=True)


def test_models_without_official_format_refuse():
    with pytest.raises(CheckpointError, match="no official checkpoint format"):
        load_official(create_model("reactnet_nano", num_classes=10), {})


def test_save_is_atomic(tmp_path, monkeypatch):
    model = create_model("bnext_pico", num_classes=10)
    path = save_official(model, tmp_path / "ckpt.pth.tar")
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_official(model, path, epoch=9)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth.tar"]


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_training_step_matches_official_model(case):
    """Training mode (batch statistics, in-place clips, the fused STE, the CPU short-cut of the weight binarizer,
    the GEMM weight gradient on the 2x2 stage): logits and loss equal the official ones bit for bit. Gradients,
    per parameter (norm, sum, sum of |.|), agree to 1e-3 relative, or within 1e-6 of the whole model's gradient
    norm: some binary kernels right before a training-mode BatchNorm get gradients that are pure cancellation
    (norm ~1e-4 against ~1e3 for the model), i.e. rounding noise in the official code as in ours. Measured:
    bit-identical without ELM-Attention and Info-Recoupling except those kernels; ~1e-4 with them, where autograd
    accumulates the gradients of branching tensors in another order."""
    name, kwargs, _, _, size, temps = CASES[case]
    model = create_model(name, **kwargs)
    official_state = to_official_state_dict(model)
    names = model.official_key_map()
    numel = {names[k]: p.numel() for k, p in model.named_parameters()}
    x = reference_input(size, batch=TRAIN_BATCH)
    for tau in temps:
        expected = REF[case]["train"][repr(tau)]
        load_official(model, fill_reference(official_state, tau))
        model.train().zero_grad(set_to_none=True)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(TRAIN_LABELS[:TRAIN_BATCH]))
        loss.backward()
        assert torch.equal(logits, torch.tensor(expected["logits"]))
        assert loss.item() == expected["loss"]
        ours = {names[k]: v for k, v in grad_stats(model.named_parameters()).items()}
        assert ours.keys() == expected["grads"].keys()
        floor = 1e-6 * sum(v[1] for v in expected["grads"].values()) ** 0.5
        for k, (s, sq, l1) in expected["grads"].items():
            s2, sq2, l12 = ours[k]
            assert abs(sq2 ** 0.5 - sq ** 0.5) <= 1e-3 * sq ** 0.5 + floor, k
            assert abs(l12 - l1) <= 1e-3 * l1 + floor * numel[k] ** 0.5, k
            assert abs(s2 - s) <= 1e-3 * l1 + floor * numel[k] ** 0.5, k  # a sum may cancel: against sum |g|
