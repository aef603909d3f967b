"""Baselines for SepPrune: L1-magnitude and random channel selection, and training the pruned
architecture from scratch.

All selection baselines are applied at *the same per-group channel counts* as the SepPrune mask, so
every pruned model has identical MACs, parameters and latency and only the choice of channels
differs (the paper compares at matched parameters/FLOPs). The paper compares against Random, HRank
(Lin et al., CVPR 2020: keep the channels whose feature maps have the highest rank on a calibration
batch; :func:`hrank_keep`, 1-D adaptation in :func:`~trustlab.systems.sepprune.generic.feature_map_ranks`)
and UDSP (not built); it has no L1 baseline. We add L1 (Li et al., *Pruning Filters for Efficient ConvNets*,
ICLR 2017) because it is the standard cheap alternative users will ask about.
"""

from __future__ import annotations

import torch
from torch import nn

from trustlab.systems.sepprune.artifacts import build_model


def l1_keep(model: nn.Module, counts: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per group, keep the ``counts[g]`` channels whose producing filter has the largest L1 norm."""
    scores = model.l1_scores()  # type: ignore[operator]
    return {g: torch.argsort(scores[g], descending=True, stable=True)[: counts[g]].sort().values for g in counts}


@torch.no_grad()
def hrank_scores(model: nn.Module, mix: torch.Tensor) -> dict[str, torch.Tensor]:
    """HRank score per channel: mean rank of its feature map over the calibration mixtures ``mix`` [B, T]."""
    from trustlab.systems.sepprune.generic import feature_map_ranks

    mods = model.feature_modules()  # type: ignore[operator]
    maps: dict[str, list[torch.Tensor]] = {g: [] for g in mods}
    handles = [m.register_forward_hook(lambda mod, i, o, g=g: maps[g].append(o.detach())) for g, m in mods.items()]
    try:
        model.eval()
        model(mix)
    finally:
        for h in handles:
            h.remove()
    return {g: feature_map_ranks(torch.cat(v, 0)) for g, v in maps.items()}


def hrank_keep(model: nn.Module, counts: dict[str, int], mix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per group, keep the ``counts[g]`` channels of highest feature-map rank (ties: lower index first)."""
    scores = hrank_scores(model, mix)
    return {g: torch.argsort(scores[g], descending=True, stable=True)[: counts[g]].sort().values for g in counts}


def random_keep(model: nn.Module, counts: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    """Per group, keep ``counts[g]`` channels chosen uniformly at random (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = model.mask_groups()  # type: ignore[operator]
    return {g: torch.randperm(sizes[g], generator=gen)[: counts[g]].sort().values for g in counts}


def scratch_model(model: nn.Module, counts: dict[str, int], seed: int) -> nn.Module:
    """The pruned architecture (same widths as ``counts``) with a fresh random initialization."""
    spec = model.with_sizes(counts)  # type: ignore[operator]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(spec)
