"""Memory budgets and the exact binary quadratic program (BQP) of two-level bit allocation.

Decision ``q_i = 1``: block ``i`` stays at the low bit width (2); ``q_i = 0``: it is upgraded to the
high one (4). Objective ``min aᵀq + qᵀKq`` subject to the memory budget
``Σ c_i (1 - q_i) <= B`` (``c_i``: extra bits of block ``i`` at high vs low precision) and, so that
every allocator spends the same memory, ``Σ c_i (1 - q_i) > B - min_i c_i`` (no further block fits).
With equal block sizes both constraints together fix the number of upgraded blocks exactly.

Solvers: exhaustive enumeration (exact, ``n <= 20``), SCIP through ``pyscipopt`` with the standard
``y_ij`` linearization (exact, the paper's solver), and a greedy + 1-swap local search fallback.

Reference: IMPQ / CoopQ (arXiv:2509.15455), Section "Interaction-aware allocation".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from trustlab.errors import UserError
from trustlab.utils.logging import get_logger

log = get_logger(__name__)


def upgrade_costs(n_params: Sequence[int], low: int = 2, high: int = 4) -> np.ndarray:
    """Extra bits of each block at ``high`` vs ``low`` bits (scale/zero overhead is equal and cancels)."""
    return np.asarray(n_params, dtype=float) * (high - low)


def budget_for_avg_bits(n_params: Sequence[int], avg_bits: float, low: int = 2, high: int = 4) -> float:
    """Budget ``B(b) = (b - low)/(high - low) * (B_high - B_low)`` in extra bits over all-``low``.

    Raises:
        UserError: ``avg_bits`` outside ``[low, high]``.
    """
    if not low - 1e-9 <= avg_bits <= high + 1e-9:
        raise UserError(f"average bits {avg_bits} outside [{low}, {high}]", f"pick a budget between {low} and {high}")
    total = float(upgrade_costs(n_params, low, high).sum())
    return (avg_bits - low) / (high - low) * total


def avg_bits(n_params: Sequence[int], bits: Sequence[int]) -> float:
    """Weight-count-weighted average bit width."""
    n = np.asarray(n_params, dtype=float)
    return float((n * np.asarray(bits, dtype=float)).sum() / n.sum())


def memory_bits(n_params: Sequence[int], bits: Sequence[int], group_size: int, overhead_bits: int = 32) -> float:
    """Total bits of the quantized weights including one float16 scale + zero per group."""
    n = np.asarray(n_params, dtype=float)
    return float((n * np.asarray(bits, dtype=float)).sum() + n.sum() / group_size * overhead_bits)


def objective(q: np.ndarray, a: np.ndarray, K: np.ndarray) -> float:
    """``aᵀq + qᵀKq``."""
    qf = q.astype(float)
    return float(a @ qf + qf @ K @ qf)


def _feasible(extra: np.ndarray, budget: float, cmin: float) -> np.ndarray:
    tol = 1e-9 * max(1.0, budget)
    return (extra <= budget + tol) & (extra > budget - cmin + tol)


def _check(a: np.ndarray, K: np.ndarray, c: np.ndarray, budget: float) -> None:
    n = a.shape[0]
    if K.shape != (n, n) or c.shape != (n,):
        raise ValueError(f"shapes disagree: a {a.shape}, K {K.shape}, costs {c.shape}")
    if np.any(c <= 0):
        raise ValueError("costs must be positive")
    if budget < -1e-9 or budget > c.sum() * (1 + 1e-9):
        raise UserError(f"memory budget {budget:.4g} outside [0, {c.sum():.4g}]", "pick an average bit width in [2, 4]")


def solve_brute(a: np.ndarray, K: np.ndarray, costs: np.ndarray, budget: float) -> np.ndarray:
    """Exact solution by enumerating all ``2^n`` assignments (``n <= 20``)."""
    n = a.shape[0]
    if n > 20:
        raise ValueError(f"brute force is limited to 20 blocks, got {n}")
    Q = np.array(list(itertools.product((0, 1), repeat=n)), dtype=float)
    extra = (1 - Q) @ costs
    ok = _feasible(extra, budget, float(costs.min()))
    if not ok.any():
        raise UserError("no bit assignment meets the memory budget", "pick another average bit width")
    vals = Q @ a + np.einsum("ki,ij,kj->k", Q, K, Q)
    vals[~ok] = np.inf
    return Q[int(np.argmin(vals))].astype(bool)


def solve_scip(a: np.ndarray, K: np.ndarray, costs: np.ndarray, budget: float, time_limit: float = 120.0) -> np.ndarray:
    """Exact solution with SCIP (``pyscipopt``): the BQP linearized with ``y_ij = q_i q_j``.

    ``y_ij <= q_i``, ``y_ij <= q_j``, ``y_ij >= q_i + q_j - 1``, ``y_ij >= 0``; the diagonal of ``K``
    joins the linear term because ``q_i² = q_i``.
    """
    from pyscipopt import Model, quicksum

    n = a.shape[0]
    m = Model("impq_bqp")
    m.hideOutput()
    m.setParam("limits/time", time_limit)
    q = [m.addVar(vtype="B", name=f"q{i}") for i in range(n)]
    terms = [(a[i] + K[i, i]) * q[i] for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            w = K[i, j] + K[j, i]
            if w == 0.0:
                continue
            y = m.addVar(vtype="C", lb=0.0, ub=1.0, name=f"y{i}_{j}")
            m.addCons(y <= q[i])
            m.addCons(y <= q[j])
            m.addCons(y >= q[i] + q[j] - 1)
            terms.append(w * y)
    extra = quicksum(float(costs[i]) * (1 - q[i]) for i in range(n))
    m.addCons(extra <= budget)
    # "no further block fits": scale-free strict inequality with a small margin
    m.addCons(extra >= budget - float(costs.min()) + 1e-6 * float(costs.min()))
    m.setObjective(quicksum(terms), "minimize")
    m.optimize()
    if m.getNSols() == 0:
        raise UserError("no bit assignment meets the memory budget", "pick another average bit width")
    if m.getStatus() != "optimal":
        log.warning("SCIP stopped with status %s; returning its best solution", m.getStatus())
    return np.array([m.getVal(v) > 0.5 for v in q])


def solve_greedy(a: np.ndarray, K: np.ndarray, costs: np.ndarray, budget: float, max_rounds: int = 100) -> np.ndarray:
    """Heuristic: greedily upgrade the block with the best objective gain per bit, then 1-swap local search."""
    n = a.shape[0]
    q = np.ones(n, dtype=bool)
    spent = 0.0
    while True:
        best, best_gain = -1, -math.inf
        for i in np.flatnonzero(q):
            if spent + costs[i] > budget + 1e-9 * max(1.0, budget):
                continue
            q2 = q.copy()
            q2[i] = False
            gain = (objective(q, a, K) - objective(q2, a, K)) / costs[i]
            if gain > best_gain:
                best, best_gain = int(i), gain
        if best < 0:
            break
        q[best] = False
        spent += costs[best]
    cur = objective(q, a, K)
    for _ in range(max_rounds):
        improved = False
        for i in np.flatnonzero(~q):
            for j in np.flatnonzero(q):
                q2 = q.copy()
                q2[i], q2[j] = True, False
                ext = float(((~q2) * costs).sum())
                if not _feasible(np.array([ext]), budget, float(costs.min()))[0]:
                    continue
                v = objective(q2, a, K)
                if v < cur - 1e-12:
                    q, cur, improved = q2, v, True
                    break
            if improved:
                break
        if not improved:
            break
    return q


def solve_bqp(a: Sequence[float], K: np.ndarray | None, costs: Sequence[float], budget: float,
              solver: str = "auto") -> np.ndarray:
    """Minimize ``aᵀq + qᵀKq`` under the memory budget; returns ``q`` (True = block at low bits).

    Args:
        a: Linear terms (length ``n``).
        K: Pairwise matrix ``(n, n)`` (``None``: purely linear).
        costs: Extra bits of each block at high precision.
        budget: Budget in extra bits (see :func:`budget_for_avg_bits`).
        solver: ``auto`` (brute force for ``n <= 16``, else SCIP, else greedy), ``brute``, ``scip``, ``greedy``.

    Raises:
        UserError: unknown solver or an infeasible budget.
    """
    av = np.asarray(a, dtype=float)
    c = np.asarray(costs, dtype=float)
    Km = np.zeros((av.size, av.size)) if K is None else np.asarray(K, dtype=float)
    _check(av, Km, c, budget)
    if solver == "auto":
        if av.size <= 16:
            solver = "brute"
        else:
            try:
                import pyscipopt  # noqa: F401

                solver = "scip"
            except ImportError:
                log.warning("pyscipopt is not installed: using the greedy + local-search heuristic")
                solver = "greedy"
    if solver == "brute":
        return solve_brute(av, Km, c, budget)
    if solver == "scip":
        return solve_scip(av, Km, c, budget)
    if solver == "greedy":
        return solve_greedy(av, Km, c, budget)
    raise UserError(f"unknown BQP solver {solver!r}", "use auto, brute, scip or greedy")
