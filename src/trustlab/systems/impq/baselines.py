"""Baseline 2/4-bit allocators placed under the same memory budget as IMPQ.

Each baseline produces one importance score per block (higher = keep at 4 bits); the allocation then
maximizes the total importance of the upgraded blocks under the budget (the BQP with a linear
objective and no interactions, i.e. top-k for equal-sized blocks).

- ``sensitivity``: isolated 4→2-bit NLL increase of each block with every other block at 4 bits,
  measured directly (the zeroth-order version of LLM-MQ's first-order Taylor sensitivity).
- ``lim``: Layer Input Modification, ``-cos(x_in, x_out)`` of a block's input and output hidden
  states, averaged over calibration tokens (Dumitru et al. 2024, arXiv:2406.17415).
- ``zd``: z-score distribution, the fraction of a block's weights with z-score above 1 (same paper),
  data-free.
- ``act_norm``: mean L2 norm of the block's output activations per token.
- ``random``: uniformly random block priorities (a fresh draw per seed).
- ``uniform``: every block at the same bit width, where the budget is an integer (2, 3, 4 bits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trustlab.compression.allocate import solve_bqp
from trustlab.compression.model import all_block_linears, find_blocks
from trustlab.systems.impq.method import ValueFn

SCORE_BASELINES = ("sensitivity", "lim", "zd", "act_norm", "random")


def sensitivity_scores(value: ValueFn, n: int) -> np.ndarray:
    """``v({i}) - v(∅)`` for every block (isolated 4→2-bit NLL increase)."""
    empty = np.zeros(n, dtype=bool)
    base = value(empty)
    out = np.zeros(n)
    for i in range(n):
        m = empty.copy()
        m[i] = True
        out[i] = value(m) - base
    return out


@torch.no_grad()
def block_io_stats(model: nn.Module, tokens: torch.Tensor, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per block: mean ``-cos(x_in, x_out)`` (LIM) and mean ``||x_out||_2`` (activation norm) over tokens."""
    blocks = find_blocks(model)
    n = len(blocks)
    lim = np.zeros(n)
    norm = np.zeros(n)
    count = 0
    cur: dict[int, torch.Tensor] = {}

    def make_hook(i: int):  # noqa: ANN202
        def hook(_m: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            x_in = args[0] if args else kwargs["hidden_states"]
            x_out = out[0] if isinstance(out, tuple) else out
            x_in = x_in.reshape(-1, x_in.shape[-1]).float()
            x_out = x_out.reshape(-1, x_out.shape[-1]).float()  # type: ignore[union-attr]
            cur[i] = torch.stack([
                -torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1).sum(),
                x_out.norm(dim=-1).sum(),
            ])
        return hook

    hooks = [blk.register_forward_hook(make_hook(i), with_kwargs=True) for i, (_, blk) in enumerate(blocks)]
    try:
        device = next(model.parameters()).device
        for s in range(0, tokens.shape[0], batch_size):
            x = tokens[s : s + batch_size].to(device)
            model(input_ids=x)
            for i in range(n):
                lim[i] += float(cur[i][0])
                norm[i] += float(cur[i][1])
            count += x.numel()
    finally:
        for h in hooks:
            h.remove()
    return lim / count, norm / count


@torch.no_grad()
def zd_scores(model: nn.Module) -> np.ndarray:
    """Fraction of each block's linear weights whose z-score (within the block) exceeds 1."""
    out = []
    for lins in all_block_linears(model):
        w = torch.cat([m.weight.detach().float().reshape(-1) for m in lins.values()])
        z = (w - w.mean()) / w.std().clamp(min=1e-12)
        out.append(float((z > 1.0).float().mean()))
    return np.asarray(out)


def random_scores(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random priorities."""
    return rng.random(n)


def allocate_by_score(scores: Sequence[float], costs: Sequence[float], budget: float, solver: str = "auto") -> np.ndarray:
    """``q`` (True = 2 bits) keeping the highest-score blocks at 4 bits within the budget."""
    return solve_bqp(np.asarray(scores, dtype=float), None, costs, budget, solver)
