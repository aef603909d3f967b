"""Data of the PCA experiment: seeded crops of real photos (training vs held-out photos).

See :mod:`trustlab.data.photos` for the card. Users protect their own files with ``trustlab protect``
(:mod:`trustlab.systems.pca.cli`), which reads PNG/JPEG through :func:`trustlab.diffusion.image_io.read_image`.
"""

from __future__ import annotations

import torch

from trustlab.data.photos import CARD, HELDOUT_PHOTOS, TRAIN_PHOTOS, photo_crops

__all__ = ["CARD", "heldout_crops", "train_crops"]


def train_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Crops of the training photos (for the tiny VAEs and the UNet)."""
    return photo_crops(TRAIN_PHOTOS, n, size, seed=seed)


def heldout_crops(n: int, size: int, seed: int) -> torch.Tensor:
    """Crops of photos never seen in training (the images to protect)."""
    return photo_crops(HELDOUT_PHOTOS, n, size, seed=10_000 + seed)
