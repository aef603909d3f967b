"""FVL-FP data: the embedded synthetic FairVL federation, or your own data from an ``.npz`` file.

Embedded default: :mod:`trustlab.data.fair_vl` (documented there): non-IID clients whose
label-attribute correlation ``corr_k`` differs, a (label, group)-balanced global test set, and a biased
captioned corpus for pretraining the tiny CLIP.

Your own precomputed features (``features_path=manifest.json``, or ``trustlab fed fvlfp --features``): one
``.npy`` of image features per client, see :func:`load_feature_manifest`.

Your own data (``data_path=my.npz``), one row per image:

* ``images``: float array ``(N, ...)`` already preprocessed for your backbone (e.g. ``(N, 3, 224, 224)``
  CLIP-normalised pixels for a transformers ``CLIPModel``);
* ``labels``: int ``(N,)`` task labels ``0..C-1``; ``groups``: int ``(N,)`` attribute ``0..G-1``;
* ``clients``: int ``(N,)`` client id ``0..K-1``; ``split``: int ``(N,)`` with 0 = train, 1 = val, 2 = test
  (the global test set is the union of all test rows);
* ``class_names`` and ``group_names``: string arrays (words used in the prompts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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

__all__ = ["export_feature_manifest", "load_feature_manifest", "load_npz_federation", "synthetic_federation"]

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


def _manifest_array(value: object, base: Path, what: str, dtype: type) -> np.ndarray:
    """A manifest entry: a path to a ``.npy`` (relative to the manifest) or an inline list."""
    if isinstance(value, str):
        p = base / value
        if not p.is_file():
            raise UserError(f"manifest entry {what} points to {str(p)!r}, which does not exist",
                            "paths in the manifest are relative to the manifest file")
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{str(p)!r} is not a readable .npy ({exc})", "save it with numpy.save") from exc
    elif isinstance(value, list):
        arr = np.asarray(value)
    else:
        raise UserError(f"manifest entry {what} is missing or not a path/list", "give a .npy path or a list")
    return arr.astype(dtype)


def load_feature_manifest(path: str | Path, embed_dim: int | None = None) -> tuple[dict, tuple[str, ...], tuple[str, ...]]:
    """Read precomputed per-client image features (the frozen image tower already applied).

    ``manifest.json``::

        {"class_names": ["smiling", "frowning"], "group_names": ["young", "old"],
         "clients": [{"features": "client_0.npy", "labels": "client_0_labels.npy",
                      "groups": [0, 1, ...], "split": [0, 0, 1, 2, ...]}, ...],
         "test": {"features": "test.npy", "labels": [...], "groups": [...]}}

    ``features``: one ``.npy`` per client, float ``(n, E)`` with ``E`` the backbone's embedding size;
    ``labels``/``groups``/``split`` (0 train, 1 val, 2 test) a ``.npy`` path or an inline list with one
    entry per row. ``test`` is optional (default: the union of the clients' test rows). Features are
    L2-normalised on load.

    Returns:
        ``({"test": (z, y, a), "clients": [{"train"|"val"|"test": (z, y, a)}]}, class_names, group_names)``.

    Raises:
        UserError: missing file/keys, row counts that disagree, ids out of range, a wrong feature size,
            a client without train/val/test rows.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"feature manifest {str(p)!r} does not exist", "pass --features <manifest.json>")
    try:
        man = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{str(p)!r} is not valid JSON ({exc.msg})", "fix the manifest") from exc
    missing = [k for k in ("class_names", "group_names", "clients") if k not in man]
    if missing or not man.get("clients"):
        raise UserError(f"manifest {str(p)!r} lacks {missing or ['clients']}", "give class_names, group_names, clients")
    classes = tuple(str(c) for c in man["class_names"])
    groups_ = tuple(str(g) for g in man["group_names"])
    if len(classes) < 2 or len(groups_) < 2:
        raise UserError("the manifest needs at least two class names and two group names", "add them")
    base = p.parent

    def part(entry: dict, name: str, with_split: bool) -> tuple[np.ndarray, ...]:
        z = _manifest_array(entry.get("features"), base, f"{name}.features", np.float32)
        if z.ndim != 2:
            raise UserError(f"{name}.features has shape {z.shape}", "save features as a 2-D (n, E) array")
        if embed_dim is not None and z.shape[1] != embed_dim:
            raise UserError(f"{name}.features have {z.shape[1]} dimensions, the backbone embeds in {embed_dim}",
                            "compute the features with the image tower of the same CLIP as --set backbone")
        if not np.all(np.isfinite(z)):
            raise UserError(f"{name}.features contain NaN or inf", "recompute the features")
        cols = [_manifest_array(entry.get(k), base, f"{name}.{k}", np.int64)
                for k in (("labels", "groups", "split") if with_split else ("labels", "groups"))]
        for k, c in zip(("labels", "groups", "split"), cols, strict=False):
            if c.shape != (z.shape[0],):
                raise UserError(f"{name}.{k} has {c.size} entries for {z.shape[0]} feature rows", "one entry per row")
        y, a = cols[0], cols[1]
        if y.min() < 0 or y.max() >= len(classes) or a.min() < 0 or a.max() >= len(groups_):
            raise UserError(f"{name}: labels/groups out of range of class_names/group_names", "use ids 0..C-1 / 0..G-1")
        return (z, *cols)

    def feats(z: np.ndarray, y: np.ndarray, a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zt = torch.nn.functional.normalize(torch.from_numpy(z), dim=-1)
        return zt, torch.from_numpy(y), torch.from_numpy(a)

    clients, tests = [], []
    for k, entry in enumerate(man["clients"]):
        z, y, a, sp = part(entry, f"clients[{k}]", True)
        if not all((sp == s).any() for s in (0, 1, 2)):
            raise UserError(f"clients[{k}] lacks a train, val or test row", "mark rows with split 0, 1 and 2")
        clients.append({name: feats(z[sp == s], y[sp == s], a[sp == s]) for s, name in enumerate(("train", "val", "test"))})
        tests.append((z[sp == 2], y[sp == 2], a[sp == 2]))
    if "test" in man:
        test = feats(*part(man["test"], "test", False))
    else:
        test = feats(*(np.concatenate([t[i] for t in tests]) for i in range(3)))
    return {"test": test, "clients": clients}, classes, groups_


def export_feature_manifest(out: str | Path, feats: dict, class_names: Sequence[str], group_names: Sequence[str]) -> Path:
    """Write features in the :func:`load_feature_manifest` format (one ``.npy`` per client); returns the manifest."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    clients = []
    for k, c in enumerate(feats["clients"]):
        z = torch.cat([c[s][0] for s in ("train", "val", "test")]).numpy()
        np.save(d / f"client_{k}.npy", z.astype(np.float32))
        clients.append({"features": f"client_{k}.npy",
                        "labels": torch.cat([c[s][1] for s in ("train", "val", "test")]).tolist(),
                        "groups": torch.cat([c[s][2] for s in ("train", "val", "test")]).tolist(),
                        "split": sum(([i] * len(c[s][1]) for i, s in enumerate(("train", "val", "test"))), [])})
    np.save(d / "test.npy", feats["test"][0].numpy().astype(np.float32))
    man = {"class_names": list(class_names), "group_names": list(group_names), "clients": clients,
           "test": {"features": "test.npy", "labels": feats["test"][1].tolist(), "groups": feats["test"][2].tolist()}}
    (d / "manifest.json").write_text(json.dumps(man))
    return d / "manifest.json"
