"""Reading and writing user images (PNG/JPEG in, PNG out) as ``(3, H, W)`` tensors in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trustlab.errors import UserError

READABLE = (".png", ".jpg", ".jpeg")


EMBEDDED = "photo:"


def is_embedded(path: str | Path) -> bool:
    """``photo:NAME`` names one of the photos shipped with trustlab (:mod:`trustlab.data.photos`)."""
    return str(path).startswith(EMBEDDED)


def image_stem(path: str | Path) -> str:
    """Base name for outputs (``photo:chelsea`` -> ``chelsea``)."""
    return str(path)[len(EMBEDDED):] if is_embedded(path) else Path(path).stem


def read_image(path: str | Path) -> torch.Tensor:
    """Read an RGB image (grey and RGBA are converted) as a float tensor ``(3, H, W)`` in [0, 1].

    ``photo:NAME`` reads an embedded photo (8-bit rounded, shorter side 256), e.g. ``photo:chelsea``.

    Raises:
        UserError: the file is missing, not PNG/JPEG, or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if is_embedded(path):
        from trustlab.data.photos import load_photo

        arr = load_photo(str(path)[len(EMBEDDED):])
        return torch.round(torch.from_numpy(arr).permute(2, 0, 1) * 255) / 255
    p = Path(path)
    if not p.is_file():
        raise UserError(f"image {str(p)!r} does not exist", "check the path")
    if p.suffix.lower() not in READABLE:
        raise UserError(f"image {str(p)!r} is not a PNG or JPEG file", "pass .png, .jpg or .jpeg images")
    try:
        with Image.open(p) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read image {str(p)!r} ({exc})", "pass a valid PNG or JPEG file") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8 (rounded)."""
    return (img.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def write_png(path: str | Path, img: torch.Tensor) -> Path:
    """Write ``(3, H, W)`` in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(p, format="PNG")
    return p


def image_grid(rows: list[list[torch.Tensor]], pad: int = 2) -> torch.Tensor:
    """Tile ``rows`` of equally sized ``(3, H, W)`` images into one image with white gaps."""
    h, w = rows[0][0].shape[-2:]
    n_cols = max(len(r) for r in rows)
    grid = torch.ones(3, len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid[:, pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    return grid
