"""Datasets and loaders: real Fashion-MNIST, corrupt and truncated IDX files, sharding, determinism."""
import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from bnext_lib import data as data_mod
from bnext_lib.data import (FASHION_MNIST_SHA256, BatchLoader, DatasetError, load_dataset, read_idx, synthetic)


def _idx(array: torch.Tensor) -> bytes:
    dims = array.shape
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + array.to(torch.uint8).numpy().tobytes()


def _write_fake_fashion_mnist(folder: Path, truncate: str | None = None) -> None:
    folder.mkdir(parents=True)
    for stem in FASHION_MNIST_SHA256:
        if "images" in stem:
            raw = _idx(torch.zeros(5, 28, 28))
        else:
            raw = _idx(torch.arange(5))
        blob = gzip.compress(raw)
        if stem == truncate:
            blob = blob[: len(blob) // 2]
        (folder / (stem + ".gz")).write_bytes(blob)


@pytest.mark.skipif(data_mod._find_fashion_mnist(Path("/nonexistent")) is None,
                    reason="Fashion-MNIST not installed (make test installs dataset-fashion-mnist as root)")
def test_real_fashion_mnist_loads_and_verifies():
    train = load_dataset("fashion_mnist", "train", root="/nonexistent")
    test = load_dataset("fashion_mnist", "test", root="/nonexistent")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.num_classes == 10 and train.in_chans == 1


def test_read_idx_checks_the_header():
    raw = _idx(torch.arange(12).view(3, 4))
    assert read_idx(raw, "x").shape == (3, 4)
    with pytest.raises(DatasetError, match="x is truncated or corrupt"):
        read_idx(raw[:-1], "x")
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(b"\x01\x02\x03\x04", "x")


def test_corrupt_file_is_named(tmp_path):
    _write_fake_fashion_mnist(tmp_path / "fashion-mnist")
    with pytest.raises(DatasetError, match=r"fashion-mnist/train-images-idx3-ubyte.gz is corrupt or truncated.*"
                                           r"SHA-256.*Fix: delete it"):
        load_dataset("fashion_mnist", "train", root=tmp_path)


def test_truncated_gzip_is_named(tmp_path):
    _write_fake_fashion_mnist(tmp_path / "fashion-mnist", truncate="t10k-images-idx3-ubyte")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is truncated or corrupt"):
        load_dataset("fashion_mnist", "test", root=tmp_path)


@pytest.mark.slow
def test_the_cli_names_a_bad_data_file_in_one_line(tmp_path, capsys):
    from bnext_lib.cli import main
    _write_fake_fashion_mnist(tmp_path / "fashion-mnist")  # the right format, not the real files' checksums
    assert main(["--data-root", str(tmp_path), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'fashion-mnist'}/") and "is corrupt" in err[0]
    with pytest.raises(DatasetError, match="is corrupt"):  # --debug: the traceback, for a bug report
        main(["--data-root", str(tmp_path), "--epochs", "1", "--no-progress", "--debug"])


@pytest.mark.slow
def test_the_cli_names_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from bnext_lib.cli import main
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint")
    assert main(["--dataset", "synthetic", "--data-root", str(tmp_path), "--epochs", "1", "--no-progress",
                 "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "last.pt" in err[0]


def test_missing_dataset_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train, download):
            (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True)
            (Path(root) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"half")
            raise RuntimeError("no internet")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    monkeypatch.setattr(data_mod, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="could not download"):
        load_dataset("fashion_mnist", root=tmp_path / "data", download=True)
    assert list((tmp_path / "data").iterdir()) == []


def test_sha256_table_matches_design_notes():
    assert FASHION_MNIST_SHA256["t10k-labels-idx1-ubyte"][0].startswith("0402a96d")
    assert len({d for d, _ in FASHION_MNIST_SHA256.values()}) == 4
    assert hashlib.sha256(b"").hexdigest() not in {d for d, _ in FASHION_MNIST_SHA256.values()}


def test_synthetic_is_deterministic_and_split():
    a, b = synthetic("train", n=64), synthetic("train", n=64)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(synthetic("test", n=64).images, a.images)


def test_subset_is_stratified():
    d = synthetic("train", n=1000).subset(100, seed=3)
    assert len(d) == 100 and torch.bincount(d.labels, minlength=10).tolist() == [10] * 10


def test_a_validation_split_is_fixed_stratified_and_disjoint():
    full = synthetic("train", n=1000)
    rest, val = full.split_validation(200)
    again_rest, again_val = full.split_validation(200)
    assert len(val) == 200 and len(rest) == 800
    assert torch.bincount(val.labels, minlength=10).tolist() == torch.bincount(again_val.labels, minlength=10).tolist()
    assert torch.equal(val.images, again_val.images) and torch.equal(rest.images, again_rest.images)
    counts = torch.bincount(full.labels, minlength=10)
    assert (torch.bincount(val.labels, minlength=10) - counts // 5).abs().max() <= 20  # stratified: ~1/5 a class
    assert full.split_validation(None) == (full, None)
    with pytest.raises(ValueError, match="does not fit"):
        full.split_validation(1000)


def test_subset_keeps_its_images_with_the_refactored_draw():
    """subset() draws as before the validation split existed (the run cache's runs keep their images)."""
    d = synthetic("train", n=1000)
    g = torch.Generator().manual_seed(3)
    idx = torch.cat([torch.nonzero(d.labels == c).flatten()[torch.randperm(int((d.labels == c).sum()), generator=g)[:10]]
                     for c in range(10)]).sort().values
    assert torch.equal(d.subset(100, seed=3).images, d.images[idx])


def test_batch_loader_shards_global_batches():
    d = synthetic("train", n=100)
    single = BatchLoader(d, 20, seed=5)
    ranks = [BatchLoader(d, 20, seed=5, rank=r, world=2) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(3)
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    first = [y for _, y in single]
    single.set_epoch(4)
    assert not all(torch.equal(a, b) for a, b in zip(first, [y for _, y in single]))
    single.set_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in single]))


def test_batch_loader_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="not divisible"):
        BatchLoader(synthetic("train", n=10), 5, world=2)


def test_eval_loader_keeps_every_sample():
    d = synthetic("test", n=37)
    loader = BatchLoader(d, 8, shuffle=False, drop_last=False)
    assert sum(len(y) for _, y in loader) == 37


def test_padded_centres_images_with_zeros():
    d = synthetic("train", n=20)
    p = d.padded(32)
    assert p.images.shape[-2:] == (32, 32) and p.images.dtype == torch.uint8
    assert torch.equal(p.images[..., 2:30, 2:30], d.images)
    assert p.images[..., :2, :].eq(0).all() and p.images[..., :, 30:].eq(0).all()
    assert d.padded(None) is d and d.padded(28) is d
    with pytest.raises(ValueError, match="smaller"):
        d.padded(20)
