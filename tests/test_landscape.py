"""Loss landscapes: filter-normalized directions, the centre restored, roughness, the run's own images."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from bnext_lib.binary import set_temperature
from bnext_lib.landscape import filter_normalized_direction, loss_landscape, roughness
from bnext_lib.runs import run_one
from tiny import tiny_config


def test_roughness():
    x = np.linspace(-1, 1, 7)
    plane = 2 * x[:, None] + 3 * x[None, :]
    assert roughness(plane) == pytest.approx(0.0, abs=1e-12)
    bowl = x[:, None] ** 2 + x[None, :] ** 2
    step = x[1] - x[0]
    assert roughness(bowl) == pytest.approx(4 * step ** 2)
    with pytest.raises(ValueError):
        roughness(np.zeros((2, 5)))


def test_filter_normalized_direction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 5, 5))
    dirs = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    for p, d in zip(model.parameters(), dirs):
        if p.ndim < 2:
            assert torch.count_nonzero(d) == 0
        else:
            dims = tuple(range(1, p.ndim))
            torch.testing.assert_close(torch.linalg.vector_norm(d, dim=dims), torch.linalg.vector_norm(p, dim=dims))


def test_loss_landscape_centre_and_restore():
    from bnext_lib.models import create_model

    torch.manual_seed(0)
    model = create_model("bnext_pico", num_classes=10, in_chans=1).eval()
    set_temperature(model, 0.0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        centre = nn.functional.cross_entropy(model(x), y).item()
    ls = loss_landscape(model, x, y, steps=3, span=0.5)
    assert ls.loss.shape == (3, 3) and ls.centre_loss == pytest.approx(centre, rel=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="odd"):
        loss_landscape(model, x, y, steps=4)


@pytest.mark.slow
def test_landscape_sees_the_images_the_run_trained_on(tmp_path, monkeypatch):
    """A run trained on zero-padded images is sliced on zero-padded images (28x28 ones gave the trained point a
    top-1 well below the run's own)."""
    import bnext_lib.landscape as landscape_mod

    monkeypatch.setenv("BNEXT_RUNS", str(tmp_path))
    cfg = tiny_config(pad_to=32, seed=3)
    run_one(cfg)
    seen, real = {}, landscape_mod.loss_landscape

    def spy(model, x, y, **kw):
        seen["side"] = tuple(x.shape[-2:])
        return real(model, x, y, **kw)

    monkeypatch.setattr(landscape_mod, "loss_landscape", spy)
    spec = ("landscape", 3, 0.5, 16, 0)
    run = run_one(cfg, derive=[spec])  # a finished run: computed from its weights, kept in its record
    ls = landscape_mod.Landscape.from_dict(run.record["derived"][landscape_mod.landscape_key(*spec[1:])])
    assert seen["side"] == (32, 32) and ls.loss.shape == (3, 3)
    seen.clear()
    again = run_one(cfg, derive=[spec]).record["derived"]["landscape_s3_w0.5_n16_seed0"]
    assert again["loss"] == ls.loss.tolist() and not seen  # read from the record, not computed again


@pytest.mark.slow
def test_a_landscape_batch_comes_from_the_run_s_own_training_images(tmp_path, monkeypatch):
    """With a validation split and a subset drawn by its own seed, the sliced batch is drawn from exactly the
    images the engine trained on (never a held-out one)."""
    import bnext_lib.landscape as landscape_mod
    from bnext_lib.train import training_images

    monkeypatch.setenv("BNEXT_RUNS", str(tmp_path))
    cfg = tiny_config(val_split=40, subset_seed=7, seed=3)
    run_one(cfg)
    seen, real = {}, landscape_mod.loss_landscape
    monkeypatch.setattr(landscape_mod, "loss_landscape", lambda model, x, y, **kw: seen.update(x=x) or
                        real(model, x, y, **kw))
    run_one(cfg, derive=[("landscape", 3, 0.5, 16, 0)])
    train, val = training_images(cfg)
    flat = lambda t: {tuple(r.tolist()) for r in t.reshape(len(t), -1)}  # noqa: E731
    from bnext_lib.augment import Augmenter
    trained = flat(Augmenter("none", train.mean, train.std, train.num_classes).eval_batch(train.images))
    assert flat(seen["x"]) <= trained and len(val) == 40


def test_a_runs_roughness_is_the_mean_over_its_direction_seeds(tmp_path):
    """Several pairs of directions per run: the table's roughness is their mean, roughness_sd their spread."""
    import numpy as np

    from bnext_lib.landscape import Landscape, landscape_table
    from bnext_lib.study import Study

    axis = np.linspace(-1, 1, 5)
    bowl = lambda k: Landscape(axis, axis, k * (axis[:, None] ** 2 + axis[None, :] ** 2), np.full((5, 5), 90.0))  # noqa: E731
    table = landscape_table({("BNext", 0): [bowl(1.0), bowl(3.0)], ("plain", 0): bowl(2.0)})
    r = table.set_index("label")
    assert r.loc["BNext", "roughness"] == pytest.approx((bowl(1.0).roughness + bowl(3.0).roughness) / 2)
    assert r.loc["BNext", "directions"] == 2 and r.loc["BNext", "roughness_sd"] > 0
    assert r.loc["plain", "directions"] == 1 and np.isnan(r.loc["plain", "roughness_sd"])
    specs = Study("01_architecture_study", profile="cpu", out_dir=tmp_path).landscape_specs
    assert [s[-1] for s in specs] == [0, 1, 2] and len({s[:-1] for s in specs}) == 1  # one grid, three seeds
