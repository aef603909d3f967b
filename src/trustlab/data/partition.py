"""Seeded client partitions of a labelled data set: IID, Dirichlet (non-IID) and pathological.

The Dirichlet algorithm follows flwr-datasets' ``DirichletPartitioner`` (per class, client shares
``p ~ Dir(α·1)``; resample until every client holds at least ``min_partition_size`` samples), the
pathological one McMahan et al.'s "each client sees only ``c`` classes". Each function returns a
list of sorted index arrays, one per client, that together cover every sample exactly once.

Example:
    >>> import numpy as np
    >>> parts = dirichlet_partition(np.repeat(np.arange(4), 50), 5, alpha=0.5, generator=np.random.default_rng(0))
    >>> sum(len(p) for p in parts), min(len(p) for p in parts) >= 10
    (200, True)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["dirichlet_partition", "iid_partition", "pathological_partition"]


def _check_labels(labels: NDArray[np.integer], num_clients: int) -> NDArray[np.int64]:
    y = np.asarray(labels).astype(np.int64).ravel()
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if y.size < num_clients:
        raise ValueError(f"{y.size} samples cannot be split over {num_clients} clients")
    return y


def iid_partition(labels: NDArray[np.integer], num_clients: int, generator: np.random.Generator) -> list[NDArray[np.int64]]:
    """Shuffle and split into ``num_clients`` near-equal shards."""
    y = _check_labels(labels, num_clients)
    perm = generator.permutation(y.size)
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(labels: NDArray[np.integer], num_clients: int, alpha: float, generator: np.random.Generator,
                        min_partition_size: int = 10, max_tries: int = 100) -> list[NDArray[np.int64]]:
    """Label-skewed non-IID split: each class is divided among clients by ``Dir(α)`` shares.

    Args:
        labels: Integer labels ``(N,)``.
        num_clients: Number of clients.
        alpha: Concentration ``α > 0`` (small: more skew; ``α → ∞``: IID).
        generator: NumPy generator (the only source of randomness).
        min_partition_size: Resample until every client has at least this many samples.
        max_tries: Give up (``ValueError``) after this many resamplings.
    """
    y = _check_labels(labels, num_clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_partition_size * num_clients > y.size:
        raise ValueError(f"cannot give {num_clients} clients >= {min_partition_size} samples out of {y.size}")
    classes = np.unique(y)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = np.flatnonzero(y == c)
            idx = idx[generator.permutation(idx.size)]
            p = generator.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p) * idx.size).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_partition_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"no Dirichlet(α={alpha}) split gave every client >= {min_partition_size} samples "
                     f"in {max_tries} tries; raise alpha or lower min_partition_size")


def pathological_partition(labels: NDArray[np.integer], num_clients: int, classes_per_client: int,
                           generator: np.random.Generator) -> list[NDArray[np.int64]]:
    """Each client gets samples of only ``classes_per_client`` classes (shards of sorted labels).

    Classes are assigned round-robin over a shuffled class order so every class is used; a class's
    samples are split evenly among the clients that hold it.
    """
    y = _check_labels(labels, num_clients)
    classes = np.unique(y)
    if not 1 <= classes_per_client <= classes.size:
        raise ValueError(f"classes_per_client must be in [1, {classes.size}], got {classes_per_client}")
    order = generator.permutation(classes)
    owned = [[order[(k * classes_per_client + j) % classes.size] for j in range(classes_per_client)]
             for k in range(num_clients)]
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for k, cs in enumerate(owned):
        for c in cs:
            holders[int(c)].append(k)
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for c, ks in holders.items():
        idx = np.flatnonzero(y == c)
        idx = idx[generator.permutation(idx.size)]
        if not ks:  # more classes than slots: give the class to the smallest client
            ks = [int(np.argmin([len(p) for p in parts]))]
        for k, chunk in zip(ks, np.array_split(idx, len(ks)), strict=True):
            parts[k].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
