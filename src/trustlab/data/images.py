"""Small image-classification data sets, offline: Fashion-MNIST from Debian, sklearn digits, CIFAR-10 folders.

* **Fashion-MNIST** (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747; MIT licence, Zalando) is read from the
  four IDX ``.gz`` files that the Debian package ``dataset-fashion-mnist`` installs under
  ``/usr/share/datasets/fashion-mnist``. The folder is found from ``$TRUSTLAB_FASHION_MNIST_DIR``, then
  ``dpkg -L dataset-fashion-mnist``, then the usual path. Nothing is downloaded.
* **sklearn digits** (UCI optical digits, 1,797 8×8 images, BSD-3 via scikit-learn) is the fallback when
  the Debian package is absent: images are scaled from 17 grey levels to ``[0, 1]`` and upsampled
  bilinearly to the requested side (default 28) so the same models run on both.
* **CIFAR-10** (Krizhevsky 2009) from the standard *python* batches folder the user provides
  (``data_batch_1..5``, ``test_batch``). The batches are pickles; they are read with a restricted
  unpickler that only accepts the NumPy array reconstruction they need, never arbitrary objects.

Every loader returns an :class:`ImageData` (``x`` float in ``[0, 1]``, shape ``(N, C, H, W)``; ``y``
int64) and a :class:`DataCard`.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.errors import UserError
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DataCard:
    """What a data set is and where it came from (recorded with every result)."""

    name: str
    n: int
    classes: tuple[str, ...]
    shape: tuple[int, ...]
    source: str
    licence: str
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy."""
        return {"name": self.name, "n": self.n, "classes": list(self.classes), "shape": list(self.shape),
                "source": self.source, "licence": self.licence, "notes": self.notes}


@dataclass
class ImageData:
    """Images in ``[0, 1]`` with integer labels and a card."""

    x: torch.Tensor
    y: torch.Tensor
    card: DataCard
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray | torch.Tensor, note: str = "") -> ImageData:
        """Rows ``idx`` as a new data set (the card's ``n`` and notes updated)."""
        idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        card = DataCard(self.card.name, int(idx_t.numel()), self.card.classes, self.card.shape,
                        self.card.source, self.card.licence, (self.card.notes + " " + note).strip())
        return ImageData(self.x[idx_t], self.y[idx_t], card, dict(self.extra))


def stratified_indices(y: np.ndarray | torch.Tensor, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices with (as near as possible) equal counts per class, drawn with ``rng``, shuffled."""
    y = np.asarray(y)
    classes = np.unique(y)
    if n > len(y):
        raise UserError(f"asked for {n} samples but the data has only {len(y)}", "ask for fewer samples")
    per = [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]
    out = []
    for c, k in zip(classes, per, strict=True):
        pool = np.flatnonzero(y == c)
        out.append(rng.choice(pool, size=min(k, len(pool)), replace=False))
    idx = np.concatenate(out)
    if len(idx) < n:  # a class was too small: top up from the rest
        rest = np.setdiff1d(np.arange(len(y)), idx)
        idx = np.concatenate([idx, rng.choice(rest, size=n - len(idx), replace=False)])
    return rng.permutation(idx)


# -- Fashion-MNIST ---------------------------------------------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file into a uint8 array, checking its header.

    Raises:
        UserError: the file is missing, truncated, or not an unsigned-byte IDX file.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"IDX file {str(p)!r} does not exist", f"install the Debian package {DEBIAN_PACKAGE}")
    try:
        raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read IDX file {str(p)!r} ({exc})", "reinstall the data package") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{str(p)!r} is not an unsigned-byte IDX file", "pass the original .gz files")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset != count:
        raise UserError(f"IDX file {str(p)!r} is truncated ({len(raw) - offset} of {count} bytes)",
                        "reinstall the data package")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def find_fashion_mnist() -> Path | None:
    """The Fashion-MNIST folder: ``$TRUSTLAB_FASHION_MNIST_DIR``, ``dpkg -L``, or the usual path; else None."""
    env = os.environ.get("TRUSTLAB_FASHION_MNIST_DIR")
    if env:
        return Path(env)
    if shutil.which("dpkg"):
        try:
            out = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=10)
            for line in out.stdout.splitlines():
                if line.endswith(FASHION_MNIST_FILES["train"][0]):
                    return Path(line).parent
        except (OSError, subprocess.SubprocessError):
            pass
    if (DEFAULT_FASHION_DIR / FASHION_MNIST_FILES["train"][0]).is_file():
        return DEFAULT_FASHION_DIR
    return None


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> ImageData:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) split, 1×28×28 in ``[0, 1]``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: Folder holding the four IDX ``.gz`` files; default :func:`find_fashion_mnist`.

    Raises:
        UserError: unknown split, or the folder/files are missing or malformed.
    """
    if split not in FASHION_MNIST_FILES:
        raise UserError(f"unknown Fashion-MNIST split {split!r}", "use 'train' or 'test'")
    folder = Path(root) if root is not None else find_fashion_mnist()
    if folder is None:
        raise UserError("Fashion-MNIST is not installed",
                        f"apt-get install {DEBIAN_PACKAGE}, or set TRUSTLAB_FASHION_MNIST_DIR to its folder")
    img_name, lab_name = FASHION_MNIST_FILES[split]
    images = read_idx(folder / img_name)
    labels = read_idx(folder / lab_name)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise UserError(f"Fashion-MNIST files in {str(folder)!r} have inconsistent shapes "
                        f"{images.shape} / {labels.shape}", "reinstall the data package")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    card = DataCard("fashion-mnist", int(len(y)), FASHION_MNIST_CLASSES, tuple(x.shape[1:]),
                    f"Debian package {DEBIAN_PACKAGE} ({folder}), split {split}",
                    "MIT (Zalando Research)", "Xiao et al. 2017, arXiv:1708.07747; 28x28 grey, 10 balanced classes")
    return ImageData(x, y, card)


# -- sklearn digits (fallback) -----------------------------------------------------------------------
def load_digits_images(size: int = 28) -> ImageData:
    """sklearn's 1,797 8×8 digits scaled to ``[0, 1]`` and upsampled bilinearly to ``size``×``size``.

    Note: digits have 17 grey levels, so very small ε (e.g. 8/255) are below one level.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0)
    y = torch.from_numpy(d.target.astype(np.int64))
    card = DataCard("sklearn-digits", int(len(y)), tuple(str(i) for i in range(10)), tuple(x.shape[1:]),
                    "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
                    "BSD-3 (scikit-learn)", f"8x8, 17 grey levels, upsampled bilinearly to {size}x{size}")
    return ImageData(x, y, card)


# -- CIFAR-10 (user-provided python batches) -------------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Accepts only what CIFAR-10's python batches contain: dicts, lists, bytes and NumPy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise UserError(f"{str(path)!r} is not a CIFAR-10 python batch ({exc})",
                        "pass the folder of the python version (cifar-10-batches-py)") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{str(path)!r} does not hold a CIFAR-10 batch dict", "pass cifar-10-batches-py")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise UserError(f"{str(path)!r} lacks 'data'/'labels'", "pass the python version of CIFAR-10")
    data = np.asarray(data, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"{str(path)!r} has data of shape {data.shape}, expected (N, 3072)",
                        "pass the python version of CIFAR-10")
    return data, labels


def load_cifar10(root: str | Path, split: str = "train") -> ImageData:
    """CIFAR-10 from the standard python batches folder (``data_batch_1..5``, ``test_batch``).

    Args:
        root: The ``cifar-10-batches-py`` folder (no download is attempted).
        split: ``"train"`` (50,000) or ``"test"`` (10,000).

    Raises:
        UserError: unknown split, missing folder or batch files, or malformed batches.
    """
    if split not in ("train", "test"):
        raise UserError(f"unknown CIFAR-10 split {split!r}", "use 'train' or 'test'")
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"CIFAR-10 folder {str(folder)!r} does not exist",
                        "pass the extracted cifar-10-batches-py folder (trustlab does not download it)")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 folder {str(folder)!r} lacks {', '.join(missing)}",
                        "pass the python version folder holding data_batch_1..5 and test_batch")
    parts = [_read_cifar_batch(folder / n) for n in names]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"CIFAR-10 labels in {str(folder)!r} fall outside 0..9", "check the files")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    card = DataCard("cifar10", int(len(labels)), CIFAR10_CLASSES, (3, 32, 32), f"user folder {folder}, {split}",
                    "CIFAR-10 terms (Krizhevsky 2009)", "python pickle batches, read with a restricted unpickler")
    return ImageData(x, torch.from_numpy(labels), card)


def load_image_dataset(name: str, split: str = "train", root: str | Path | None = None, size: int = 28) -> ImageData:
    """Load ``fashion-mnist``, ``digits`` or ``cifar10`` by name.

    Raises:
        UserError: unknown name, or the loader's own errors.
    """
    key = name.lower().replace("_", "-")
    if key in ("fashion-mnist", "fmnist"):
        return load_fashion_mnist(split, root)
    if key in ("digits", "sklearn-digits"):
        return load_digits_images(size)
    if key in ("cifar10", "cifar-10"):
        if root is None:
            raise UserError("CIFAR-10 needs a folder", "set data.root to your cifar-10-batches-py folder")
        return load_cifar10(root, split)
    raise UserError(f"unknown image data set {name!r}", "use fashion-mnist, digits or cifar10")


# -- user arrays (.npz) ------------------------------------------------------------------------------
def images_from_arrays(x: np.ndarray, y: np.ndarray, name: str, source: str,
                       classes: tuple[str, ...] | None = None) -> ImageData:
    """Validate user arrays and turn them into :class:`ImageData`.

    ``x``: ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` (``C`` in 1/3, last axis read as channels
    when it is 1 or 3 and the second is not), uint8 in 0..255 or floats in ``[0, 1]``; ``y``: ``N``
    integer labels ``0..K-1``.

    Raises:
        UserError: wrong shapes, value range, label type, or fewer than two samples.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"{name}: images have shape {x.shape}, expected (N, H, W), (N, C, H, W) or (N, H, W, C) "
                        "with C = 1 or 3", "save the images as one array of that shape")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{name}: {len(x)} images but labels of shape {y.shape}", "save one integer label per image")
    if len(x) < 2:
        raise UserError(f"{name}: only {len(x)} image(s)", "pass at least two labelled images")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            raise UserError(f"{name}: labels have dtype {y.dtype}", "save integer class indices 0..K-1")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise UserError(f"{name}: negative label {int(y.min())}", "labels are class indices 0..K-1")
    if x.dtype == np.uint8:
        xf = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
            raise UserError(f"{name}: float images must lie in [0, 1] (found {np.nanmin(x):.3g}..{np.nanmax(x):.3g})",
                            "scale pixels to [0, 1] or save uint8 0..255")
        xf = x.astype(np.float32)
    else:
        raise UserError(f"{name}: images have dtype {x.dtype}", "save uint8 (0..255) or float32 in [0, 1]")
    k = int(y.max()) + 1
    classes = classes if classes is not None and len(classes) >= k else tuple(str(i) for i in range(k))
    card = DataCard(name, int(len(y)), classes, tuple(xf.shape[1:]), source, "user data")
    return ImageData(torch.from_numpy(np.ascontiguousarray(xf)), torch.from_numpy(y), card)


def load_npz_images(path: str | Path, split: str = "train") -> ImageData:
    """Images from a NumPy ``.npz`` file: keys ``x``/``y``, or ``x_train``/``y_train`` and ``x_test``/``y_test``.

    With per-split keys, ``split`` picks them; with ``x``/``y`` every split reads the same arrays.
    See :func:`images_from_arrays` for the accepted shapes and dtypes. Pickled object arrays are refused.

    Raises:
        UserError: missing or unreadable file, missing keys, or bad arrays.
    """
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}", "use 'train' or 'test'")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"npz file {str(p)!r} does not exist", "check the path after npz:")
    try:
        with np.load(p, allow_pickle=False) as fh:
            arrays = {k: fh[k] for k in fh.files}
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{str(p)!r} is not a readable .npz file ({exc})",
                        "save it with numpy.savez(path, x=images, y=labels)") from exc
    for kx, ky in ((f"x_{split}", f"y_{split}"), ("x", "y")):
        if kx in arrays and ky in arrays:
            return images_from_arrays(arrays[kx], arrays[ky], p.stem, f"npz file {p} ({kx}, {ky})")
    raise UserError(f"{str(p)!r} has keys {sorted(arrays)}, not x/y or x_{split}/y_{split}",
                    "save it with numpy.savez(path, x=images, y=labels)")

