"""Stage 1 of SepPrune: computational-structure analysis (MACs and parameters per module), the
linear MAC cost of every prunable channel, and wall-clock CPU latency.

SepPrune (Ji et al., AAAI 2026, arXiv:2505.12079) counts MACs with ``ptflops`` for 1 s of audio and
finds that the separation module dominates. We count multiply-accumulates of the layers that hold
nearly all of them, with forward hooks on the model actually run:

- ``Conv1d``: ``out_elems * (C_in / groups) * k`` (bias adds are not MACs);
- ``ConvTranspose1d``: ``in_elems * (C_out / groups) * k``;
- ``Linear``: ``out_elems * in_features``;
- ``MultiheadAttention`` (``batch_first``): Q/K/V/out projections ``4 * L * E^2`` plus the two
  attention products ``2 * L^2 * E`` per example.

Element-wise work (norms, activations, masks) is not counted; ptflops counts some of it, so absolute
figures differ slightly from ptflops (ratios are what we report).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


def conv1d_macs(module: nn.Conv1d, out: torch.Tensor) -> int:
    """MACs of a Conv1d producing ``out`` (pure function of shapes)."""
    k = module.kernel_size[0]
    return int(out.numel() * (module.in_channels // module.groups) * k)


def conv_transpose1d_macs(module: nn.ConvTranspose1d, inp: torch.Tensor) -> int:
    """MACs of a ConvTranspose1d fed ``inp``."""
    k = module.kernel_size[0]
    return int(inp.numel() * (module.out_channels // module.groups) * k)


def linear_macs(module: nn.Linear, out: torch.Tensor) -> int:
    """MACs of a Linear producing ``out``."""
    return int(out.numel() * module.in_features)


def mha_macs(module: nn.MultiheadAttention, query: torch.Tensor) -> int:
    """MACs of self-attention on ``query`` ``[B, L, E]`` (batch_first)."""
    b, length, e = query.shape if module.batch_first else (query.shape[1], query.shape[0], query.shape[2])
    return int(b * (4 * length * e * e + 2 * length * length * e))


def count_macs(model: nn.Module, example: torch.Tensor, **forward_kwargs: object) -> dict[str, int]:
    """MACs per leaf module name for one forward pass on ``example`` (summed over the batch).

    Weight-shared modules called several times are counted every time they run.
    """
    counts: dict[str, int] = defaultdict(int)
    handles = []

    def hook_for(name: str, fn: Callable[[nn.Module, tuple, torch.Tensor], int]):  # noqa: ANN202
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            counts[name] += fn(mod, inp, out)
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, nn.MultiheadAttention):
            handles.append(mod.register_forward_hook(hook_for(name, lambda m, i, o: mha_macs(m, i[0]))))
        elif isinstance(mod, nn.Conv1d):
            handles.append(mod.register_forward_hook(hook_for(name, lambda m, i, o: conv1d_macs(m, o))))
        elif isinstance(mod, nn.ConvTranspose1d):
            handles.append(mod.register_forward_hook(hook_for(name, lambda m, i, o: conv_transpose1d_macs(m, i[0]))))
        elif isinstance(mod, nn.Linear) and not _inside_mha(model, name):
            handles.append(mod.register_forward_hook(hook_for(name, lambda m, i, o: linear_macs(m, o))))
    try:
        with torch.no_grad():
            model(example, **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    return dict(counts)


def _inside_mha(model: nn.Module, name: str) -> bool:
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return bool(parent) and isinstance(model.get_submodule(parent), nn.MultiheadAttention)


def total_macs(model: nn.Module, n_samples: int) -> int:
    """MACs of separating one mixture of ``n_samples`` samples."""
    return sum(count_macs(model, torch.zeros(1, n_samples)).values())


def n_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def module_breakdown(model: nn.Module, n_samples: int, depth: int = 1) -> list[dict[str, float]]:
    """MACs and parameters per top-level part (``depth`` name components), with shares of the total.

    This is SepPrune's Stage-1 table: which blocks carry the computation.
    """
    macs = count_macs(model, torch.zeros(1, n_samples))
    total = sum(macs.values())
    agg: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, v in macs.items():
        agg[".".join(name.split(".")[:depth])][0] += v
    for name, p in model.named_parameters():
        agg[".".join(name.split(".")[:depth])][1] += p.numel()
    n_par = n_params(model)
    rows = [{"part": k, "macs": v[0], "macs_share": v[0] / max(total, 1), "params": v[1],
             "params_share": v[1] / max(n_par, 1)} for k, v in agg.items()]
    return sorted(rows, key=lambda r: -r["macs"])


@dataclass(frozen=True)
class CostModel:
    """MACs of an architecture as ``base + sum_g cost[g] * kept[g]`` (exact for our models).

    Attributes:
        base: MACs that no prunable channel touches.
        cost: MACs per kept channel of each group.
        dense: MACs of the unpruned model.
    """

    base: float
    cost: dict[str, float]
    dense: float

    def macs(self, kept: dict[str, float]) -> float:
        """MACs for ``kept[g]`` channels per group (numbers or 0-dim tensors; differentiable)."""
        return self.base + sum(self.cost[g] * kept[g] for g in self.cost)

    def ratio(self, kept: dict[str, float]) -> float:
        """MACs relative to the dense model."""
        return self.macs(kept) / self.dense


def linear_cost_model(model: nn.Module, n_samples: int, build: Callable[[dict], nn.Module]) -> CostModel:
    """Measure the per-channel MAC cost of each group by counting a model with one channel fewer.

    Args:
        model: A model with ``mask_groups()`` and ``with_sizes(sizes) -> spec``.
        n_samples: Input length the MACs refer to.
        build: ``spec -> model`` (e.g. :func:`trustlab.systems.sepprune.artifacts.build_model`).

    Raises:
        AssertionError: the MACs are not linear in the group sizes (checked on a second point).
    """
    groups = model.mask_groups()
    dense = float(total_macs(model, n_samples))
    cost = {}
    for g, size in groups.items():
        if size < 2:
            cost[g] = 0.0
            continue
        fewer = float(total_macs(build(model.with_sizes({g: size - 1})), n_samples))
        cost[g] = dense - fewer
    base = dense - sum(cost[g] * groups[g] for g in groups)
    cm = CostModel(base=base, cost=cost, dense=dense)
    half = {g: max(1, s // 2) for g, s in groups.items()}
    check = float(total_macs(build(model.with_sizes(half)), n_samples))
    assert abs(check - cm.macs(half)) <= 1e-6 * dense + 1, "MACs are not linear in the channel counts"
    return cm


def measure_latency(models: dict[str, nn.Module], n_samples: int, repeats: int = 15, warmup: int = 3,
                    threads: int | None = 1) -> dict[str, float]:
    """Median CPU wall time (s) of one forward pass per model, measured interleaved in one run.

    Interleaving (A, B, A, B, ...) makes ratios robust to load changes on a shared machine.

    Args:
        models: Name -> model (put in eval mode here).
        n_samples: Input length (batch 1).
        repeats: Timed rounds.
        warmup: Untimed rounds first.
        threads: ``torch.set_num_threads`` during timing (restored after); None keeps the setting.
    """
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    x = torch.randn(1, n_samples, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {k: [] for k in models}
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            for r in range(warmup + repeats):
                for name, m in models.items():
                    t0 = time.perf_counter()
                    m(x)
                    dt = time.perf_counter() - t0
                    if r >= warmup:
                        times[name].append(dt)
    finally:
        torch.set_num_threads(old)
    return {k: statistics.median(v) for k, v in times.items()}
