"""Data for the UAD-AT experiment: Fashion-MNIST subsets (Debian package), sklearn-digits fallback, CIFAR-10.

The train/test subsets are stratified and drawn with ``data_seed`` (fixed across training seeds, so every
method and seed is evaluated on the same test points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trustlab.data.images import (
    ImageData,
    find_fashion_mnist,
    load_cifar10,
    load_digits_images,
    load_fashion_mnist,
    stratified_indices,
)
from trustlab.errors import UserError
from trustlab.systems.uadat.config import Config
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import make_rng

log = get_logger(__name__)


@dataclass
class Splits:
    """Train and test data plus notes on where they came from."""

    train: ImageData
    test: ImageData
    notes: list[str] = field(default_factory=list)


def _subset(data: ImageData, n: int, rng: np.random.Generator, what: str) -> ImageData:
    if n == 0 or n >= len(data):
        return data
    return data.subset(stratified_indices(data.y.numpy(), n, rng), note=f"stratified {what} subset of {n}")


def load_splits(cfg: Config) -> Splits:
    """Load the configured data set and draw the train/test subsets.

    Raises:
        UserError: the data set is missing (and no fallback is allowed) or malformed.
    """
    rng = make_rng(cfg.data_seed)
    notes: list[str] = []
    name = cfg.dataset
    if name == "fashion-mnist" and cfg.data_root is None and find_fashion_mnist() is None:
        if not cfg.fallback_to_digits:
            raise UserError("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)",
                            "apt-get install dataset-fashion-mnist, set data_root, or --set fallback_to_digits=true")
        log.warning("Fashion-MNIST not found; falling back to sklearn digits upsampled to 28x28")
        notes.append("Fashion-MNIST not installed: fell back to sklearn digits (8x8 upsampled to 28x28)")
        name = "digits"
    if name == "fashion-mnist":
        train = load_fashion_mnist("train", cfg.data_root)
        test = load_fashion_mnist("test", cfg.data_root)
    elif name == "cifar10":
        assert cfg.data_root is not None
        train = load_cifar10(cfg.data_root, "train")
        test = load_cifar10(cfg.data_root, "test")
    else:
        full = load_digits_images(28)
        idx = rng.permutation(len(full))
        n_test = min(max(cfg.n_test, 1), len(full) // 4)
        test = full.subset(idx[:n_test], note="held-out digits")
        train = full.subset(idx[n_test:], note="training digits")
        if cfg.n_test > n_test:
            notes.append(f"digits has only {len(full)} images: n_test capped at {n_test}")
    train = _subset(train, cfg.n_train, rng, "train")
    test = _subset(test, cfg.n_test, rng, "test")
    notes.append(f"data: {train.card.name}, {len(train)} train / {len(test)} test ({train.card.source}; "
                 f"{train.card.licence})")
    return Splits(train, test, notes)
