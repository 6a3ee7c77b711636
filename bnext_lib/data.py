"""Datasets and loaders: Fashion-MNIST (the default, offline), CIFAR-10/100, ImageNet-style folders, synthetic.

Small datasets are held in memory as ``uint8`` tensors (:class:`ImageData`) and served in batches by
:class:`BatchLoader`, which shards each global batch across DDP ranks and derives every random choice from
``(seed, epoch)``, so that a resumed run sees exactly the batches an uninterrupted one would. Image folders go
through torchvision's ``ImageFolder`` and a ``DataLoader``.

Fashion-MNIST is found, in order, under ``<root>/fashion-mnist/``, ``<root>/``, and
``/usr/share/datasets/fashion-mnist/`` (Debian's ``dataset-fashion-mnist``); with ``download=True`` torchvision
fetches it into ``<root>``. Every file is checked against the SHA-256 of the upstream IDX bytes.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from .augment import parse_augment

__all__ = ["DatasetError", "ImageData", "load_dataset", "DATASETS", "BatchLoader", "FASHION_MNIST_SHA256",
           "read_idx", "default_data_root", "FolderData", "VALIDATION_SEED"]

# SHA-256 of the decompressed upstream IDX files (Debian recompresses the .gz, so the .gz digests differ).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
# The seed of every validation split (ImageData.split_validation): one fixed set of held-out images per size.
VALIDATION_SEED = 20221123
# the training splits' sizes, for what a configuration trains on without loading it (training_images)
TRAIN_SPLIT_SIZE = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}


def training_images(dataset: str, train_subset: int | None, val_split: int | None) -> int | None:
    """How many images a run of ``dataset`` trains on: its subset, else the training split less the validation
    split; None for a dataset whose size is not known without reading it (image folders, synthetic)."""
    if train_subset is not None:
        return train_subset
    size = TRAIN_SPLIT_SIZE.get(dataset)
    return None if size is None else size - (val_split or 0)


class DatasetError(RuntimeError):
    """A dataset that cannot be found or read; the message names the file and how to fix it."""


def default_data_root() -> Path:
    """``$BNEXT_DATA`` if set, else ``data/`` of the repository (or the working directory)."""
    env = os.environ.get("BNEXT_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    return repo / "data" if (repo / "pyproject.toml").exists() else Path("data")


@dataclass
class ImageData:
    """One split held in memory.

    Attributes:
        images: ``uint8`` tensor ``N x C x H x W``.
        labels: ``int64`` tensor ``N``.
        classes: class names.
        mean, std: per-channel normalisation of the dataset (in [0, 1] units).
        name: dataset name.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    def padded(self, side: int | None) -> "ImageData":
        """The split with its images zero-padded (centred) to ``side x side`` (``None``: unchanged)."""
        h, w = self.images.shape[-2:]
        if side is None or (h, w) == (side, side):
            return self
        if side < max(h, w):
            raise ValueError(f"pad_to {side} is smaller than the {h}x{w} images of {self.name}")
        top, left = (side - h) // 2, (side - w) // 2
        images = F.pad(self.images, (left, side - w - left, top, side - h - top))
        return ImageData(images, self.labels, self.classes, self.mean, self.std, self.name)

    def subset(self, n: int | None, seed: int = 0) -> "ImageData":
        """A class-stratified subset of ``n`` samples (all if ``n`` is None or too large), chosen by ``seed``."""
        if n is None or n >= len(self):
            return self
        return self._take(self._stratified(n, seed))

    def split_validation(self, n: int | None) -> tuple["ImageData", "ImageData | None"]:
        """``(the rest, a validation split)``: ``n`` class-stratified samples held out of this split.

        The held-out samples depend on ``n`` only (they are drawn with :data:`VALIDATION_SEED`, never with a run's
        seed), so every run, seed and variant that holds out ``n`` images is validated on the same ones and
        trains on none of them. ``n`` ``None``: ``(self, None)``.
        """
        if n is None:
            return self, None
        if not 0 < n < len(self):
            raise ValueError(f"a validation split of {n} images does not fit the {len(self)} of {self.name}")
        held = self._stratified(n, VALIDATION_SEED)
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[held] = False
        return self._take(torch.nonzero(keep).flatten()), self._take(held)

    def _stratified(self, n: int, seed: int) -> torch.Tensor:
        """Sorted indices of ``n`` samples, ``n // k`` of each of the ``k`` classes (one more for the first
        ``n % k``), drawn by ``seed``."""
        g = torch.Generator().manual_seed(seed)
        per_class = []
        k = self.num_classes
        for c in range(k):
            idx = torch.nonzero(self.labels == c).flatten()
            take = n // k + (1 if c < n % k else 0)
            per_class.append(idx[torch.randperm(len(idx), generator=g)[:take]])
        return torch.cat(per_class).sort().values

    def _take(self, idx: torch.Tensor) -> "ImageData":
        return ImageData(self.images[idx], self.labels[idx], self.classes, self.mean, self.std, self.name)


# --------------------------------------------------------------------------------------------- IDX files
def read_idx(raw: bytes, where: str) -> np.ndarray:
    """Parse an IDX file (``uint8`` payload) from its bytes, checking the header against the length."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{where} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DatasetError(f"{where} is truncated or corrupt: {len(raw)} bytes, the header promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_verified(path: Path, stem: str) -> bytes:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{path} is truncated or corrupt ({e}). {_fix_hint(path)}") from e
    digest, size = FASHION_MNIST_SHA256[stem]
    actual = hashlib.sha256(raw).hexdigest()
    if actual != digest:
        raise DatasetError(f"{path} is corrupt or truncated: {len(raw)} bytes (expected {size}) with SHA-256 "
                           f"{actual[:16]}... (expected {digest[:16]}...). {_fix_hint(path)}")
    return raw


def _fix_hint(path: Path) -> str:
    if path.is_relative_to(SYSTEM_FASHION_MNIST):
        return "Fix: apt-get install --reinstall dataset-fashion-mnist"
    return "Fix: delete it and run again (with download=True, or after installing dataset-fashion-mnist)"


def _find_fashion_mnist(root: Path) -> dict[str, Path] | None:
    for folder in (root / "fashion-mnist", root, root / "FashionMNIST" / "raw", SYSTEM_FASHION_MNIST):
        found = {}
        for stem in FASHION_MNIST_SHA256:
            for name in (stem + ".gz", stem):
                if (folder / name).is_file():
                    found[stem] = folder / name
                    break
        if len(found) == len(FASHION_MNIST_SHA256):
            return found
    return None


def _download_fashion_mnist(root: Path) -> None:
    """torchvision's download into a temporary folder inside ``root``, moved into place only when complete."""
    from torchvision.datasets import FashionMNIST

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        FashionMNIST(str(tmp), train=True, download=True)
        FashionMNIST(str(tmp), train=False, download=True)
        dest = root / "fashion-mnist"
        dest.mkdir(exist_ok=True)
        for stem in FASHION_MNIST_SHA256:
            os.replace(tmp / "FashionMNIST" / "raw" / (stem + ".gz"), dest / (stem + ".gz"))
    except Exception as e:
        raise DatasetError(f"could not download Fashion-MNIST into {root} ({e}); install Debian's "
                           "dataset-fashion-mnist or copy the four IDX files into {root}/fashion-mnist/") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fashion_mnist(root: Path, split: str, download: bool) -> ImageData:
    files = _find_fashion_mnist(root)
    if files is None:
        if not download:
            raise DatasetError(
                f"Fashion-MNIST not found under {root}/fashion-mnist, {root} or {SYSTEM_FASHION_MNIST}. Install it "
                "with `apt-get install dataset-fashion-mnist` (what `make test` does as root), copy the four IDX "
                "files into data/fashion-mnist/, or pass download=True where there is internet.")
        _download_fashion_mnist(root)
        files = _find_fashion_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_read_verified(files[f"{prefix}-images-idx3-ubyte"], f"{prefix}-images-idx3-ubyte"),
                      str(files[f"{prefix}-images-idx3-ubyte"]))
    labels = read_idx(_read_verified(files[f"{prefix}-labels-idx1-ubyte"], f"{prefix}-labels-idx1-ubyte"),
                      str(files[f"{prefix}-labels-idx1-ubyte"]))
    return ImageData(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                     FASHION_MNIST_CLASSES, (0.2860,), (0.3530,), "fashion_mnist")


# --------------------------------------------------------------------------------------------- other datasets
def _cifar(root: Path, split: str, download: bool, hundred: bool) -> ImageData:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR100 if hundred else CIFAR10
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as e:
        raise DatasetError(f"{cls.__name__} not found or corrupt under {root} ({e}); pass download=True where "
                           "there is internet") from e
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    if hundred:  # the official CIFAR normalisation (train_assistant_group_amp.py)
        mean, std = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)
    else:
        mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    return ImageData(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes), mean, std,
                     "cifar100" if hundred else "cifar10")


def synthetic(split: str = "train", n: int | None = None, num_classes: int = 10, size: int = 28, in_chans: int = 1,
              seed: int = 0) -> ImageData:
    """A learnable synthetic dataset: one smooth random prototype per class, shifted and noised per sample.

    Deterministic in ``seed``; the train and test splits draw different samples of the same prototypes.
    """
    n = n if n is not None else (2048 if split == "train" else 512)
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.interpolate(torch.rand(num_classes, in_chans, 7, 7, generator=g), size=size,
                                             mode="bilinear", align_corners=False)
    g.manual_seed(seed * 7919 + (1 if split == "train" else 2))
    labels = torch.randint(0, num_classes, (n,), generator=g)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    x = protos[labels]
    x = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2)) for img, s in zip(x, shifts)])
    x = (x + 0.6 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return ImageData((x * 255).round().to(torch.uint8), labels, [f"class{i}" for i in range(num_classes)],
                     (0.5,) * in_chans, (0.25,) * in_chans, "synthetic")


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, **kwargs) -> ImageData:
    """Load one split of an in-memory dataset.

    Args:
        name: ``fashion_mnist``, ``cifar10``, ``cifar100`` or ``synthetic`` (``imagefolder`` datasets are read
            lazily by the training engine).
        split: ``train`` or ``test``.
        root: data folder (default :func:`default_data_root`).
        download: let torchvision download when the files are missing (needs internet).
        **kwargs: for ``synthetic``: ``n``, ``num_classes``, ``size``, ``in_chans``, ``seed``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else default_data_root()
    if name == "fashion_mnist":
        return _fashion_mnist(root, split, download)
    if name in ("cifar10", "cifar100"):
        return _cifar(root, split, download, name == "cifar100")
    if name == "synthetic":
        return synthetic(split, **kwargs)
    raise ValueError(f"unknown in-memory dataset {name!r}; choose one of {DATASETS[:3] + DATASETS[4:]}")


# --------------------------------------------------------------------------------------------- batches
class FolderData:
    """An ImageNet-style folder split (``train/``, ``val/``) read lazily with torchvision's ImageFolder and
    transformed by timm's ``create_transform`` (the augmentation preset's RandAugment, random erasing and flip).

    Args:
        root: the folder holding ``train/`` and ``val/``.
        split: ``train`` or ``test`` (read from ``val/``).
        image_size: input side.
        augment: an augmentation preset spec (``none`` for evaluation).
    """

    def __init__(self, root: Path, split: str, image_size: int, augment: str):
        from timm.data import create_transform
        from torchvision.datasets import ImageFolder

        folder = root / ("train" if split == "train" else "val")
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist (expected {root}/train and {root}/val)")
        cfg = parse_augment(augment)
        transform = create_transform(image_size, is_training=split == "train", auto_augment=cfg.randaugment,
                                     re_prob=cfg.random_erasing, interpolation="bicubic",
                                     crop_pct=0.95, hflip=0.5 if cfg.flip else 0.0)
        self.dataset = ImageFolder(str(folder), transform=transform)
        self.num_classes, self.in_chans = len(self.dataset.classes), 3

    def steps(self, batch: int, world: int = 1) -> int:
        """Batches per epoch of a shuffled (``drop_last``) loader: what ``DistributedSampler`` gives each rank,
        divided by the per-rank batch."""
        n = len(self.dataset)
        per_rank = math.ceil((n - world) / world) if n % world else n // world
        return per_rank // (batch // world)

    def loader(self, batch: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1, workers: int = 0,
               epoch: int = 0):
        """A ``DataLoader`` over this rank's share of the split (global batch ``batch``)."""
        from torch.utils.data import DataLoader, DistributedSampler

        sampler = DistributedSampler(self.dataset, world, rank, shuffle=shuffle, seed=seed, drop_last=shuffle)
        sampler.set_epoch(epoch)
        return DataLoader(self.dataset, batch_size=batch // world, sampler=sampler, num_workers=workers,
                          drop_last=shuffle, pin_memory=torch.cuda.is_available())


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch (shuffling, augmentation)."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2 ** 31)


class BatchLoader:
    """Batches of an in-memory split, sharded across ranks, reproducible from ``(seed, epoch)``.

    Each epoch draws one permutation (the same on every rank); global batch ``i`` is
    ``perm[i*B:(i+1)*B]`` and rank ``r`` takes its ``r``-th contiguous share, so ``world`` ranks together see
    exactly the global batches a single process would.

    Args:
        data: the split.
        batch_size: the *global* batch size (divisible by ``world``).
        shuffle: draw a new permutation per epoch (training) or keep the order (evaluation).
        drop_last: drop the last incomplete global batch (training).
        seed: base seed.
        rank, world: this process's rank and the number of processes.
        sample_transform: per-image transform on ``uint8`` ``C x H x W`` tensors (e.g. RandAugment); its
            randomness comes from the global generators, which the engine seeds per epoch and rank.
    """

    def __init__(self, data: ImageData, batch_size: int, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0, rank: int = 0, world: int = 1,
                 sample_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if batch_size % world:
            raise ValueError(f"global batch size {batch_size} is not divisible by the {world} processes")
        self.data, self.batch_size, self.shuffle, self.drop_last = data, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world = seed, rank, world
        self.sample_transform = sample_transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))
        else:
            order = torch.arange(n)
        for i in range(len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            share = -(-len(batch) // self.world)
            idx = batch[self.rank * share:(self.rank + 1) * share]
            images = self.data.images[idx]
            if self.sample_transform is not None and len(idx):
                images = torch.stack([self.sample_transform(img) for img in images])
            yield images, self.data.labels[idx]
