"""The baselines NADAFD is compared against, as federated strategies (all from ``trustlab.federated``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trustlab.federated.simulation import get_parameters, set_parameters
from trustlab.federated.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedTrimmedMean,
    Flame,
    FLTrust,
    FoolsGold,
    Krum,
    MultiKrum,
    NDArrays,
    Strategy,
)
from trustlab.systems.nadafd.clients import local_train
from trustlab.systems.nadafd.config import Config
from trustlab.utils.seed import derive_seed

__all__ = ["make_baseline"]


def _fltrust_server(root_x: torch.Tensor, root_y: torch.Tensor, model_fn: Callable[[], torch.nn.Module], cfg: Config,
                    seed: int) -> Callable[[NDArrays, int], NDArrays]:
    def server_update(parameters: NDArrays, server_round: int) -> NDArrays:
        model = model_fn()
        set_parameters(model, parameters)
        g = torch.Generator().manual_seed(derive_seed(seed, "fltrust-root", server_round))
        local_train(model, root_x, root_y, cfg.local_epochs, cfg.batch_size, cfg.lr, cfg.momentum, g)
        return get_parameters(model)

    return server_update


def make_baseline(method: str, cfg: Config, num_malicious: int, model_fn: Callable[[], torch.nn.Module],
                  root_x: torch.Tensor, root_y: torch.Tensor, seed: int) -> Strategy:
    """Build a baseline strategy by name.

    ``num_malicious`` is the expected number ``f`` of attackers among the clients of one round
    (Krum, Multi-Krum and Bulyan assume it: the most favourable setting for them); the trimmed mean
    trims ``ceil(β K)`` per side with ``β = max(0.2, malicious_fraction)`` (Flower's default 0.2, raised
    to at least the attacker fraction); FLAME uses ``λ = 0.001``; FLTrust's server trains on
    ``cfg.n_root`` clean chips.
    """
    if method == "fedavg":
        return FedAvg()
    if method == "median":
        return FedMedian()
    if method == "trimmed_mean":
        return FedTrimmedMean(beta=min(max(0.2, cfg.malicious_fraction), 0.49), at_least=True)
    if method == "krum":
        return Krum(num_malicious=num_malicious)
    if method == "multikrum":
        return MultiKrum(num_malicious=num_malicious)
    if method == "bulyan":
        return Bulyan(num_malicious=num_malicious)
    if method == "flame":
        return Flame(noise_lambda=0.001, seed=derive_seed(seed, "flame"))
    if method == "fltrust":
        return FLTrust(_fltrust_server(root_x, root_y, model_fn, cfg, seed))
    if method == "foolsgold":
        return FoolsGold()
    raise ValueError(f"unknown baseline {method!r}")
