"""Real photographs shipped inside scikit-image and scikit-learn, cut into seeded crops.

The photos need no network: ``skimage.data`` ships them in its wheel and scikit-learn ships
``china.jpg``/``flower.jpg``. Crops are taken at a random scale (so a 32-pixel crop still holds an
object part, not a flat patch) and resized with antialiasing. The photos are split *by photo* into a
training pool (for the tiny VAE / UNet) and a held-out pool (attacked and evaluated), so that
evaluation never sees a training photo.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.errors import UserError

#: Photos used to train the tiny default autoencoders.
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left",
    "motorcycle_right", "camera", "coins", "moon", "clock", "brick", "grass", "gravel",
)
#: Photos never used for training; attacks are evaluated on crops of these.
HELDOUT_PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "china", "flower")

CARD: dict[str, Any] = {
    "name": "photos",
    "n_photos": len(TRAIN_PHOTOS) + len(HELDOUT_PHOTOS),
    "split": {"train": list(TRAIN_PHOTOS), "heldout": list(HELDOUT_PHOTOS)},
    "classes": None,
    "source": "scikit-image skimage.data (RGB and grey photos, grey ones replicated to RGB) and "
              "scikit-learn load_sample_images (china.jpg, flower.jpg); shipped in the wheels, offline",
    "licence": "astronaut, rocket, hubble: public domain (NASA/SpaceX); chelsea, coffee, camera: CC0; "
               "other skimage images: see skimage.data docstrings; china/flower: CC-BY 2.0",
    "crops": "seeded random square crops at a random scale, resized to the requested size (antialias)",
}


def _as_rgb01(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    return (a - a.min()) / max(float(a.max() - a.min()), 1e-8)


#: Photos are downscaled once so that their shorter side is at most this many pixels.
MAX_SIDE = 256


def load_photo(name: str) -> np.ndarray:
    """One photo as float32 ``(H, W, 3)`` in [0, 1], shorter side at most :data:`MAX_SIDE` pixels.

    Raises:
        UserError: ``name`` is not one of :data:`TRAIN_PHOTOS` or :data:`HELDOUT_PHOTOS`.
    """
    return _load_small(name).copy()


@cache
def _load_small(name: str) -> np.ndarray:
    full = torch.from_numpy(_load_full(name)).permute(2, 0, 1)[None]
    h, w = full.shape[-2:]
    f = MAX_SIDE / min(h, w)
    if f < 1:
        full = F.interpolate(full, size=(round(h * f), round(w * f)), mode="bilinear", antialias=True,
                             align_corners=False)
    return full[0].permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float32)


def _load_full(name: str) -> np.ndarray:
    """One photo at full resolution as float32 ``(H, W, 3)`` in [0, 1].

    Raises:
        UserError: ``name`` is not one of :data:`TRAIN_PHOTOS` or :data:`HELDOUT_PHOTOS`.
    """
    import skimage.data as sd

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return _as_rgb01(load_sample_image(f"{name}.jpg"))
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = sd.stereo_motorcycle()
        return _as_rgb01(left if name.endswith("left") else right)
    if name not in TRAIN_PHOTOS + HELDOUT_PHOTOS:
        raise UserError(f"unknown photo {name!r}", f"use one of {', '.join(TRAIN_PHOTOS + HELDOUT_PHOTOS)}")
    return _as_rgb01(getattr(sd, name)())


def photo_crops(names: tuple[str, ...] | list[str], n: int, size: int, seed: int,
                min_frac: float = 0.15, max_frac: float = 0.6) -> torch.Tensor:
    """``n`` seeded crops of the named photos as a ``(n, 3, size, size)`` float tensor in [0, 1].

    Args:
        names: Photos to crop (cycled so each gets about ``n / len(names)`` crops).
        n: Number of crops.
        size: Output side in pixels.
        seed: Seed of the crop positions and scales.
        min_frac: Smallest crop side as a fraction of the photo's shorter side.
        max_frac: Largest crop side as a fraction of the photo's shorter side.
    """
    if n <= 0 or size <= 0:
        raise ValueError(f"n and size must be positive, got n={n}, size={size}")
    if not 0 < min_frac <= max_frac <= 1:
        raise ValueError(f"need 0 < min_frac <= max_frac <= 1, got {min_frac}, {max_frac}")
    rng = np.random.default_rng(seed)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        photo = load_photo(names[i % len(names)])
        h, w, _ = photo.shape
        side = int(min(h, w) * rng.uniform(min_frac, max_frac))
        side = max(side, size)
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(np.ascontiguousarray(photo[top:top + side, left:left + side])).permute(2, 0, 1)
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        out[i] = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0].clamp(0, 1)
    return out
