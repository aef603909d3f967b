"""FVL-FP data: the embedded synthetic FairVL federation, or your own data from an ``.npz`` file.

Embedded default: :mod:`trustlab.data.fair_vl` (documented there): non-IID clients whose
label-attribute correlation ``corr_k`` differs, a (label, group)-balanced global test set, and a biased
captioned corpus for pretraining the tiny CLIP.

Your own data (``data_path=my.npz``), one row per image:

* ``images``: float array ``(N, ...)`` already preprocessed for your backbone (e.g. ``(N, 3, 224, 224)``
  CLIP-normalised pixels for a transformers ``CLIPModel``);
* ``labels``: int ``(N,)`` task labels ``0..C-1``; ``groups``: int ``(N,)`` attribute ``0..G-1``;
* ``clients``: int ``(N,)`` client id ``0..K-1``; ``split``: int ``(N,)`` with 0 = train, 1 = val, 2 = test
  (the global test set is the union of all test rows);
* ``class_names`` and ``group_names``: string arrays (words used in the prompts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trustlab.data.fair_vl import (
    ClientSplit,
    FairVLBatch,
    FairVLFederation,
    FairVLSpec,
    make_federation,
    make_world,
)
from trustlab.errors import UserError

__all__ = ["load_npz_federation", "synthetic_federation"]

REQUIRED = ("images", "labels", "groups", "clients", "split", "class_names", "group_names")


def synthetic_federation(spec: FairVLSpec, client_corrs: list[float], n_train: int, n_val: int, n_test_client: int,
                         n_test: int, seed: int, label_alpha: float | None = None) -> FairVLFederation:
    """The embedded FairVL federation of one seed (world patterns fixed by ``spec.seed``)."""
    rng = np.random.default_rng([seed, 2505])
    return make_federation(make_world(spec), client_corrs, n_train, n_val, n_test_client, n_test, rng, label_alpha)


def load_npz_federation(path: str | Path) -> tuple[FairVLFederation, tuple[str, ...], tuple[str, ...]]:
    """Read your own federation (format in the module docstring).

    Returns:
        The federation, the class names and the group names.

    Raises:
        UserError: missing file, missing keys, inconsistent lengths, bad label ranges or empty splits.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"data file {str(p)!r} does not exist", "pass data_path=<file.npz> (format: systems/fvlfp/data.py)")
    try:
        npz = np.load(p, allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(p)!r} is not a readable .npz without pickled objects ({exc})",
                        "save it with numpy.savez(path, images=..., labels=..., ...)") from exc
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise UserError(f"{str(p)!r} lacks keys {missing}", f"it must hold {', '.join(REQUIRED)}")
    n = len(arrays["labels"])
    for k in ("images", "groups", "clients", "split"):
        if len(arrays[k]) != n:
            raise UserError(f"{str(p)!r}: {k} has {len(arrays[k])} rows but labels has {n}", "give one row per image")
    classes = tuple(str(c) for c in arrays["class_names"])
    groups_ = tuple(str(g) for g in arrays["group_names"])
    y, a = arrays["labels"].astype(np.int64), arrays["groups"].astype(np.int64)
    cl, sp = arrays["clients"].astype(np.int64), arrays["split"].astype(np.int64)
    if y.min() < 0 or y.max() >= len(classes) or a.min() < 0 or a.max() >= len(groups_):
        raise UserError(f"{str(p)!r}: labels/groups out of range of class_names/group_names", "use ids 0..C-1 / 0..G-1")
    if len(classes) < 2 or len(groups_) < 2:
        raise UserError(f"{str(p)!r}: need at least two class names and two group names", "add them")
    x = torch.from_numpy(arrays["images"].astype(np.float32))

    def batch(mask: np.ndarray) -> FairVLBatch:
        idx = torch.from_numpy(np.flatnonzero(mask))
        return FairVLBatch(x[idx], torch.from_numpy(y[mask]), torch.from_numpy(a[mask]))

    clients = []
    for k in np.unique(cl):
        parts = [(cl == k) & (sp == s) for s in (0, 1, 2)]
        if not all(m.any() for m in parts):
            raise UserError(f"{str(p)!r}: client {k} lacks a train, val or test row", "give every client all three splits")
        corr = float(np.mean(a[parts[0]] == y[parts[0]] % len(groups_)))
        clients.append(ClientSplit(int(k), corr, batch(parts[0]), batch(parts[1]), batch(parts[2])))
    if not (sp == 2).any():
        raise UserError(f"{str(p)!r} has no test rows", "mark test rows with split=2")
    spec = FairVLSpec(class_names=classes, group_names=groups_)
    world = make_world(spec)
    fed = FairVLFederation(world, clients, batch(sp == 2), {"source": str(p)})
    return fed, classes, groups_
