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

__all__ = ["FedData", "PatternTrigger", "attacker_triggers", "build_data", "eval_triggers", "make_trigger_for"]


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


class PatternTrigger(BadNetsTrigger):
    """A BadNets patch whose binary pattern is drawn from ``seed`` (one attacker's own patch).

    Each pixel of the ``size × size`` patch is ``high`` or 0 with probability 1/2 (at least one bright
    and one dark pixel), stamped in the same corner as :class:`BadNetsTrigger`.
    """

    def __init__(self, size: int = 4, location: str = "top_left", margin: int = 1, high: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__(size=size, location=location, margin=margin, high=high)
        g = np.random.default_rng(seed)
        while True:
            bits = g.random((size, size)) < 0.5
            if size == 1 or 0 < bits.sum() < size * size:
                break
        self.seed = seed
        self.pattern_ = torch.from_numpy(bits.astype(np.float32) * high)

    def pattern(self) -> torch.Tensor:  # noqa: D102
        return self.pattern_.clone()


def attacker_triggers(attack: str, cfg: Config, n_attackers: int, seed: int) -> list[Trigger]:
    """One trigger per attacker (attacker ``k`` = the ``k``-th smallest malicious client id).

    ``distinct_triggers=false``: every attacker shares :func:`make_trigger_for`'s trigger. ``true``:
    ``speckle`` attacker ``k`` gets its own Gamma texture and ``badnets`` attacker ``k`` its own
    binary patch (:class:`PatternTrigger`), both drawn from ``derive_seed(seed, "trigger", attack, k)``,
    in the same corner. ``dba`` always gives every attacker the same global trigger object; the
    clients then stamp local part ``k mod 4`` (DBA's design), so up to 4 attackers hold distinct parts.
    """
    if not cfg.distinct_triggers or attack == "dba":
        return [make_trigger_for(attack, cfg)] * n_attackers
    out: list[Trigger] = []
    for k in range(n_attackers):
        s = derive_seed(seed, "trigger", attack, k)
        if attack == "speckle":
            out.append(SpeckleTrigger(size=cfg.trigger_size, location="top_left", seed=s))
        elif attack == "badnets":
            out.append(PatternTrigger(size=min(4, cfg.trigger_size), location="top_left", seed=s))
        else:
            raise ValueError(f"unknown attack {attack!r}")
    return out


def eval_triggers(attack: str | None, cfg: Config, n_attackers: int, seed: int) -> list[Trigger]:
    """The triggers ASR is measured with: each attacker's own trigger (``speckle``/``badnets``;
    ASR is their mean, ``asr_max`` the max), DBA's assembled global trigger (``dba``, as in the DBA
    paper), or the shared speckle trigger when there is no attack (then only clean accuracy matters)."""
    if attack is None or n_attackers == 0:
        return [make_trigger_for(attack or "speckle", cfg)]
    if attack == "dba" or not cfg.distinct_triggers:
        return [make_trigger_for(attack, cfg)]
    return attacker_triggers(attack, cfg, n_attackers, seed)


def make_trigger_for(attack: str, cfg: Config) -> Trigger:
    """The shared trigger of an attack setting (``speckle``, ``badnets`` or ``dba``)."""
    if attack == "speckle":
        return SpeckleTrigger(size=cfg.trigger_size, location="top_left")
    if attack == "badnets":
        return BadNetsTrigger(size=min(4, cfg.trigger_size), location="top_left")
    if attack == "dba":
        return DBATrigger(BadNetsTrigger(size=min(4, cfg.trigger_size), location="top_left"), parts=4)
    raise ValueError(f"unknown attack {attack!r}")
