"""The smallest run the engine trains in seconds: bnext_pico on synthetic images, 64 to train, 32 to test."""
from bnext_lib.config import TrainConfig


def tiny_config(**changes) -> TrainConfig:
    base = dict(model="bnext_pico", dataset="synthetic", epochs=1, batch_size=32, train_subset=64, test_subset=32,
                augment="none", progress=False, threads=1)
    return TrainConfig(**{**base, **changes})
