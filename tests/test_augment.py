"""Every augmentation preset on grey and colour batches."""
import pytest
import torch

from bnext_lib.augment import PRESETS, Augmenter, AugmentConfig, parse_augment

SHAPES = {"grey": (1, 28, 28), "colour": (3, 32, 32)}


@pytest.mark.parametrize("preset", sorted(PRESETS) + ["basic+randaugment+mixup", "cutmix+random_erasing"])
@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_preset_on_batches(preset, kind):
    c, h, w = SHAPES[kind]
    aug = Augmenter(preset, (0.5,) * c, (0.25,) * c, num_classes=10)
    images = torch.randint(0, 256, (8, c, h, w), dtype=torch.uint8)
    labels = torch.arange(8) % 10
    transform = aug.sample_transform()
    if transform is not None:
        out = torch.stack([transform(img) for img in images])
        assert out.shape == images.shape and out.dtype == torch.uint8
        images = out
    x, target = aug.train_batch(images, labels)
    assert x.shape == (8, c, h, w) and x.dtype == torch.float32 and torch.isfinite(x).all()
    if aug.soft_targets:
        assert target.shape == (8, 10)
        torch.testing.assert_close(target.sum(1), torch.ones(8))
    else:
        assert torch.equal(target, labels)
    assert aug.eval_batch(images).shape == (8, c, h, w)


def test_none_is_only_normalisation():
    aug = Augmenter("none", (0.5,), (0.25,), 10)
    images = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    x, _ = aug.train_batch(images, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(x, torch.full((2, 1, 4, 4), 2.0))


def test_basic_crop_and_flip_change_images_but_keep_content_statistics():
    torch.manual_seed(0)
    aug = Augmenter("basic", (0.0,), (1.0,), 10)
    images = torch.randint(1, 256, (64, 1, 16, 16), dtype=torch.uint8)
    x, _ = aug.train_batch(images, torch.zeros(64, dtype=torch.long))
    assert not torch.equal(x, images.float() / 255)
    assert (x == 0).any()  # zero padding entered some crops


def test_parse_and_merge():
    assert parse_augment("released") == AugmentConfig(crop_padding=4, flip=True, randaugment="rand-m7-mstd0.5-inc1")
    assert parse_augment("basic+randaugment") == parse_augment("released")
    assert parse_augment("mixup+cutmix").mixup == 0.8 and parse_augment("mixup+cutmix").cutmix == 1.0
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_augment("basic+autoaugment")
    with pytest.raises(ValueError):
        parse_augment("")


def test_mixup_needs_even_batches():
    aug = Augmenter("mixup", (0.5,), (0.25,), 10)
    with pytest.raises(ValueError, match="even batch"):
        aug.train_batch(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))


def test_flip_only_mirrors_and_never_shifts():
    torch.manual_seed(0)
    aug = Augmenter("flip", (0.0,), (1.0,), 10)
    images = torch.randint(1, 256, (64, 1, 16, 16), dtype=torch.uint8)
    x, _ = aug.train_batch(images, torch.zeros(64, dtype=torch.long))
    plain, mirrored = images.float() / 255, images.flip(-1).float() / 255
    same = [torch.equal(x[i], plain[i]) for i in range(64)]
    flipped = [torch.equal(x[i], mirrored[i]) for i in range(64)]
    assert all(s or f for s, f in zip(same, flipped)) and any(same) and any(flipped)


def test_grey_randaugment_draws_only_the_operations_that_change_a_grey_image():
    """GREY_OPS is the committed measurement (benchmarks/randaugment_grey.py), not a typed-in list; the grey presets
    draw from it and only from it, and a colour dataset keeps the released policy."""
    from pathlib import Path

    import pandas as pd

    from bnext_lib.augment import GREY_OPS, for_images

    table = pd.read_csv(Path(__file__).resolve().parents[1] / "reports" / "tables" / "randaugment_grey_ops.csv")
    assert GREY_OPS == tuple(table.op[table.changes_grey])
    assert "ColorIncreasing" not in GREY_OPS and len(GREY_OPS) < len(table)
    assert for_images("released", True) == "released_grey" and for_images("released", False) == "released"
    assert for_images("basic", True) == "basic" and for_images("randaugment", True) == "randaugment_grey"
    assert parse_augment("released_grey") == AugmentConfig(crop_padding=4, flip=True,
                                                           randaugment=PRESETS["released"].randaugment,
                                                           randaugment_ops=GREY_OPS)
    aug = Augmenter("randaugment_grey", (0.5,), (0.25,), 10)
    aug.sample_transform()(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8))
    ops = [op.name for op in aug._ra_cache[28].ops]
    assert ops == list(GREY_OPS)
    plain = Augmenter("randaugment", (0.5,), (0.25,), 10)
    plain.sample_transform()(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8))
    assert "ColorIncreasing" in [op.name for op in plain._ra_cache[28].ops]  # the released policy, as it was
