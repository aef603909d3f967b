"""SAR target chips: a seeded point-scatterer simulator (embedded default) and a loader for real chips.

Simulator (card: ``SIM_CARD``). Each of ``C`` classes is a fixed layout of 4-7 point scatterers plus
an elongated low-return body (class-specific length/width), drawn once from ``template_seed`` so
every call shares the same classes. A chip rotates its class layout by a random aspect angle,
jitters position and scatterer amplitudes, adds a clutter floor, and applies multiplicative
speckle ``I = R · n`` with ``n ~ Gamma(L, 1/L)`` (``E[n] = 1``, ``Var[n] = 1/L``; standard L-look
intensity model). The chip is the amplitude ``√I`` normalised by its 99th percentile to ``[0, 1]``,
the usual preprocessing of MSTAR magnitude chips. It stands in for MSTAR (10 vehicle classes, SOC
split) which cannot be downloaded at run time.

Loader. :func:`load_sar_folder` reads a user's own MSTAR/OpenSARShip chips exported as images or
``.npy`` arrays, either one sub-folder per class (``root/<class>/*.png``) or a ``labels.csv`` with
``file,label`` rows, centre-crops, resizes and normalises them like the simulator.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from trustlab.errors import UserError

__all__ = ["SIM_CARD", "SARChips", "class_templates", "gamma_speckle", "load_sar_folder", "normalise_chips",
           "simulate_sar_chips"]

SIM_CARD = {
    "name": "sar-sim",
    "source": "generated in code (trustlab.data.sar.simulate_sar_chips); point-scatterer model + Gamma speckle",
    "classes": "10 synthetic target classes by default (stand-in for MSTAR SOC)",
    "licence": "same as trustlab",
}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"}


@dataclass
class SARChips:
    """A labelled set of chips.

    Attributes:
        x: ``(N, 1, H, W)`` float32 amplitudes in ``[0, 1]``.
        y: ``(N,)`` int64 labels.
        classes: Class names, indexed by label.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]


def gamma_speckle(shape: tuple[int, ...], looks: float, generator: np.random.Generator) -> NDArray[np.float64]:
    """Multiplicative L-look intensity speckle ``n ~ Gamma(shape=L, scale=1/L)`` (mean 1, variance 1/L)."""
    if not looks > 0:
        raise ValueError(f"looks must be > 0, got {looks}")
    return generator.gamma(looks, 1.0 / looks, size=shape)


def class_templates(num_classes: int, template_seed: int = 2601) -> list[dict[str, NDArray[np.float64]]]:
    """The fixed scatterer layout of each class (same for every call with the same seed).

    Returns:
        One dict per class: ``points`` ``(m, 2)`` in target units, ``amps`` ``(m,)``, ``body`` (length, width).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    rng = np.random.default_rng(template_seed)
    out = []
    for _ in range(num_classes):
        m = int(rng.integers(4, 8))
        length, width = rng.uniform(0.45, 0.8), rng.uniform(0.15, 0.35)
        pts = np.stack([rng.uniform(-length, length, m), rng.uniform(-width, width, m)], axis=1)
        amps = rng.uniform(0.4, 1.0, m)
        amps[rng.integers(m)] = 1.0
        out.append({"points": pts, "amps": amps, "body": np.array([length, width])})
    return out


def normalise_chips(a: NDArray[np.floating], q: float = 0.99) -> NDArray[np.float32]:
    """Divide each chip ``(N, H, W)`` by its ``q`` quantile and clip to ``[0, 1]``."""
    flat = a.reshape(a.shape[0], -1)
    s = np.quantile(flat, q, axis=1)
    s = np.where(s > 0, s, 1.0)
    return np.clip(a / s[:, None, None], 0.0, 1.0).astype(np.float32)


def simulate_sar_chips(n: int, generator: np.random.Generator, num_classes: int = 10, size: int = 32,
                       looks: float = 2.0, clutter: float = 0.04, template_seed: int = 2601,
                       scatterer_sigma: float = 0.07, jitter: float = 0.06, aspect_deg: float = 360.0) -> SARChips:
    """Draw ``n`` class-balanced SAR chips.

    Args:
        n: Number of chips.
        generator: NumPy generator (aspect angles, jitter, speckle, labels).
        num_classes: Number of target classes (>= 2).
        size: Chip side in pixels.
        looks: Number of looks ``L`` of the speckle.
        clutter: Mean background reflectivity.
        template_seed: Seed of the class layouts (keep fixed so train and test share classes).
        scatterer_sigma: Width of a scatterer's point-spread function (in units of half the chip).
        jitter: Std of the per-chip translation and per-scatterer position jitter.
        aspect_deg: Range of aspect angles (360: full circle as in MSTAR; smaller: an easier task).

    Returns:
        :class:`SARChips` with ``x`` of shape ``(n, 1, size, size)``.
    """
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    if clutter < 0 or scatterer_sigma <= 0 or jitter < 0 or not 0 <= aspect_deg <= 360:
        raise ValueError("clutter and jitter must be >= 0, scatterer_sigma > 0, aspect_deg in [0, 360]")
    temps = class_templates(num_classes, template_seed)
    y = np.resize(np.arange(num_classes), n)
    y = y[generator.permutation(n)]
    lin = np.linspace(-1.0, 1.0, size)
    gx, gy = np.meshgrid(lin, lin)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (P, 2)
    refl = np.empty((n, size * size))
    phi = generator.uniform(0.0, np.deg2rad(aspect_deg), n)
    shift = generator.normal(0.0, jitter, (n, 2))
    for i in range(n):
        t = temps[int(y[i])]
        c, s = np.cos(phi[i]), np.sin(phi[i])
        rot = np.array([[c, -s], [s, c]])
        pts = (t["points"] + generator.normal(0.0, jitter / 3, t["points"].shape)) @ rot.T * 0.7 + shift[i]
        amps = t["amps"] * generator.lognormal(0.0, 0.25, t["amps"].shape)
        d2 = ((grid[None, :, :] - pts[:, None, :]) ** 2).sum(-1)  # (m, P)
        r = (amps[:, None] * np.exp(-d2 / (2 * scatterer_sigma**2))).sum(0)
        local = (grid - shift[i]) @ rot / 0.7  # body frame
        body = np.exp(-((local[:, 0] / t["body"][0]) ** 4 + (local[:, 1] / t["body"][1]) ** 4))
        refl[i] = clutter + 0.12 * body + r
    inten = refl * gamma_speckle(refl.shape, looks, generator)
    amp = np.sqrt(inten).reshape(n, size, size)
    x = torch.from_numpy(normalise_chips(amp)).unsqueeze(1)
    return SARChips(x=x, y=torch.from_numpy(y.astype(np.int64)), classes=[f"class_{k}" for k in range(num_classes)])


def _read_chip(path: Path) -> NDArray[np.float64]:
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("F") if im.mode not in ("I;16", "I") else im, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any decoder error is a malformed user file
        raise UserError(f"cannot read SAR chip {str(path)!r} ({type(exc).__name__}: {exc})",
                        "remove it or convert it to PNG/TIFF/.npy") from exc
    arr = np.abs(np.asarray(arr, dtype=np.float64))
    if arr.ndim == 3:
        arr = arr.mean(axis=-1) if arr.shape[-1] <= 4 else arr[0]
    if arr.ndim != 2 or min(arr.shape) < 4:
        raise UserError(f"SAR chip {str(path)!r} has shape {arr.shape}", "chips must be 2-D images of at least 4x4")
    return arr


def _square_resize(arr: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    h, w = arr.shape
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    t = torch.from_numpy(arr[top : top + m, left : left + m].astype(np.float32))[None, None]
    mode = "area" if m >= size else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t, size=(size, size), mode=mode, **kw)[0, 0].double().numpy()


def load_sar_folder(root: str | Path, size: int = 32) -> SARChips:
    """Load real SAR chips (e.g. MSTAR or OpenSARShip) from a folder.

    Layouts:
        - ``root/<class_name>/<chip>.{png,jpg,tif,npy,...}`` (one sub-folder per class), or
        - ``root/labels.csv`` with a header ``file,label`` (paths relative to ``root``).

    Args:
        root: The folder.
        size: Output side; chips are centre-cropped to a square and resized.

    Raises:
        UserError: missing folder, no chips, fewer than 2 classes, or an unreadable/malformed chip.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"SAR data folder {str(root)!r} does not exist",
                        "pass a folder with one sub-folder of chips per class, or a labels.csv (file,label)")
    items: list[tuple[Path, str]] = []
    csv_path = root / "labels.csv"
    if csv_path.is_file():
        with csv_path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
                raise UserError(f"{str(csv_path)!r} must have a header with columns file,label",
                                "write 'file,label' as its first line")
            for row in reader:
                p = root / str(row["file"])
                if not p.is_file():
                    raise UserError(f"{str(csv_path)!r} lists {row['file']!r}, which does not exist", "fix the path")
                items.append((p, str(row["label"]).strip()))
    else:
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            items.extend((f, d.name) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS)
    if not items:
        raise UserError(f"no SAR chips found under {str(root)!r}",
                        f"put chips ({', '.join(sorted(IMAGE_EXTS))}) in one sub-folder per class or list them in labels.csv")
    classes = sorted({lab for _, lab in items})
    if len(classes) < 2:
        raise UserError(f"SAR data under {str(root)!r} has only one class ({classes[0]!r})", "provide at least 2 classes")
    index = {c: i for i, c in enumerate(classes)}
    chips = np.stack([_square_resize(_read_chip(p), size) for p, _ in items])
    x = torch.from_numpy(normalise_chips(chips)).unsqueeze(1)
    y = torch.tensor([index[lab] for _, lab in items], dtype=torch.int64)
    return SARChips(x=x, y=y, classes=classes)
