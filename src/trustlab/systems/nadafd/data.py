"""NADAFD data: SAR chips (simulated by default, or the user's MSTAR/OpenSARShip folder), client splits, triggers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trustlab.attacks.triggers import BadNetsTrigger, DBATrigger, SpeckleTrigger, Trigger
from trustlab.data.partition import dirichlet_partition
from trustlab.data.sar import SARChips, load_sar_folder, simulate_sar_chips
from trustlab.systems.nadafd.config import Config
from trustlab.utils.seed import derive_seed

__all__ = ["FedData", "build_data", "make_trigger_for"]


@dataclass
class FedData:
    """Everything a federated run needs.

    Attributes:
        train: Training chips (split among clients by ``parts``).
        test: Test chips.
        root: Small clean root set held by the server (FLTrust).
        parts: Indices of ``train`` per client.
        malicious: Ids of malicious clients.
        num_classes: Number of classes.
    """

    train: SARChips
    test: SARChips
    root: SARChips
    parts: list[np.ndarray]
    malicious: list[int]
    num_classes: int


def _subset(c: SARChips, idx: np.ndarray) -> SARChips:
    t = torch.as_tensor(idx, dtype=torch.long)
    return SARChips(c.x[t], c.y[t], c.classes)


def build_data(cfg: Config, seed: int) -> FedData:
    """Chips, a Dir(α) split over ``cfg.num_clients`` clients and the malicious ids, all from ``seed``."""
    if cfg.data_dir:
        full = load_sar_folder(cfg.data_dir, size=cfg.image_size)
        g = np.random.default_rng(derive_seed(seed, "split"))
        perm = g.permutation(full.y.numel())
        n_te = max(1, int(0.25 * perm.size))
        n_root = min(cfg.n_root, max(1, perm.size // 20))
        test, root, train = _subset(full, perm[:n_te]), _subset(full, perm[n_te:n_te + n_root]), _subset(
            full, perm[n_te + n_root:])
        num_classes = len(full.classes)
    else:
        kw = {"num_classes": cfg.num_classes, "size": cfg.image_size, "looks": cfg.looks, "scatterer_sigma": 0.1,
              "jitter": 0.03,
              "aspect_deg": cfg.aspect_deg}
        train = simulate_sar_chips(cfg.n_train, np.random.default_rng(derive_seed(seed, "train")), **kw)
        test = simulate_sar_chips(cfg.n_test, np.random.default_rng(derive_seed(seed, "test")), **kw)
        root = simulate_sar_chips(cfg.n_root, np.random.default_rng(derive_seed(seed, "root")), **kw)
        num_classes = cfg.num_classes
    parts = dirichlet_partition(train.y.numpy(), cfg.num_clients, cfg.alpha,
                                np.random.default_rng(derive_seed(seed, "partition")),
                                min_partition_size=min(10, train.y.numel() // cfg.num_clients))
    n_mal = int(round(cfg.malicious_fraction * cfg.num_clients))
    mal = sorted(np.random.default_rng(derive_seed(seed, "malicious")).choice(cfg.num_clients, n_mal, replace=False)
                 .tolist()) if n_mal else []
    return FedData(train, test, root, parts, [int(m) for m in mal], num_classes)


def make_trigger_for(attack: str, cfg: Config) -> Trigger:
    """The trigger of an attack setting (``speckle``, ``badnets`` or ``dba``)."""
    if attack == "speckle":
        return SpeckleTrigger(size=cfg.trigger_size, location="top_left")
    if attack == "badnets":
        return BadNetsTrigger(size=min(4, cfg.trigger_size), location="top_left")
    if attack == "dba":
        return DBATrigger(BadNetsTrigger(size=min(4, cfg.trigger_size), location="top_left"), parts=4)
    raise ValueError(f"unknown attack {attack!r}")
