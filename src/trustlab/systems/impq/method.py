"""IMPQ: Shapley-based Progressive Quantization Estimation (SPQE) and interaction-aware allocation.

Game: the players are the ``n`` transformer blocks; ``v(S)`` is the calibration NLL when the blocks
in ``S`` are at 2 bits and all others at 4 bits. SPQE walks random permutations, lowering one block
at a time from 4 to 2 bits; each step's NLL increase is that block's marginal contribution. Shapley
values are the mean marginals; the covariance of the marginals across permutations, shrunk towards
its diagonal, gives the interaction matrix ``K``; ``a = φ - Σ_{j≠i} K_ij`` separates first-order
sensitivity; the allocation solves ``min aᵀq + qᵀKq`` under the memory budget
(:mod:`trustlab.compression.allocate`).

Exact references for small ``n`` (all ``2^n`` subsets): Shapley values and the pairwise Shapley
interaction index (Grabisch & Roubens 1999), offered as an option (``interactions="sii"``).

Reference:
    IMPQ: Interaction-Aware Layerwise Mixed Precision Quantization for LLMs (arXiv:2509.15455;
    ACL 2026 Findings version "CoopQ").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trustlab.compression.allocate import solve_bqp
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)

#: ``v(mask)``: ``mask[i]`` is True when block ``i`` is at the low bit width.
ValueFn = Callable[[np.ndarray], float]


class MemoValue:
    """Memoize a deterministic value function on its mask; counts distinct evaluations.

    Args:
        fn: The value function.
    """

    def __init__(self, fn: ValueFn) -> None:
        self.fn = fn
        self.cache_: dict[bytes, float] = {}

    def __call__(self, mask: np.ndarray) -> float:
        key = np.asarray(mask, dtype=bool).tobytes()
        if key not in self.cache_:
            self.cache_[key] = float(self.fn(np.asarray(mask, dtype=bool)))
        return self.cache_[key]

    @property
    def n_evals(self) -> int:
        """Distinct masks evaluated so far."""
        return len(self.cache_)


@dataclass
class SPQEResult:
    """Trajectories of SPQE.

    Attributes:
        perms: ``(M, n)`` permutations walked.
        marginals: ``(M, n)`` marginal contribution of each *player* (column = block) per permutation.
        v_empty: ``v(∅)`` (all blocks at 4 bits).
        v_full: ``v(N)`` (all blocks at 2 bits).
        sii_sum: ``(n, n)`` sums of discrete second derivatives at adjacent pairs (``None`` if not asked).
        sii_count: ``(n, n)`` how many times each pair was sampled.
    """

    perms: np.ndarray
    marginals: np.ndarray
    v_empty: float
    v_full: float
    sii_sum: np.ndarray | None = None
    sii_count: np.ndarray | None = None

    @property
    def phi(self) -> np.ndarray:
        """Shapley estimates (mean marginals)."""
        return self.marginals.mean(axis=0)

    @property
    def se(self) -> np.ndarray:
        """Standard errors of the Shapley estimates (``std / sqrt(M)``; 0 for ``M = 1``)."""
        m = self.marginals.shape[0]
        return self.marginals.std(axis=0, ddof=1) / math.sqrt(m) if m > 1 else np.zeros(self.marginals.shape[1])

    @property
    def rel_se(self) -> float:
        """Median standard error of φ̂ over median ``|φ̂|`` (SPQE's convergence statistic)."""
        return float(np.median(self.se) / max(float(np.median(np.abs(self.phi))), 1e-12))

    def sii(self) -> np.ndarray:
        """Estimated pairwise Shapley interaction index (unsampled pairs: 0)."""
        if self.sii_sum is None or self.sii_count is None:
            raise ValueError("run spqe(..., sii=True) to estimate interaction indices")
        out = np.divide(self.sii_sum, self.sii_count, out=np.zeros_like(self.sii_sum), where=self.sii_count > 0)
        np.fill_diagonal(out, 0.0)
        return out

    def head(self, m: int) -> SPQEResult:
        """The result restricted to the first ``m`` permutations."""
        return SPQEResult(self.perms[:m], self.marginals[:m], self.v_empty, self.v_full)


def converged(marginals: np.ndarray, rel_se: float) -> bool:
    """Convergence rule: median standard error of φ̂ at most ``rel_se`` × median ``|φ̂|``."""
    if marginals.shape[0] < 2:
        return False
    return SPQEResult(np.empty((0, marginals.shape[1])), marginals, 0.0, 0.0).rel_se <= rel_se


def spqe(value: ValueFn, n: int, n_perms: int, rng: np.random.Generator, sii: bool = False,
         desc: str = "SPQE", rel_se: float = 0.0, min_perms: int = 16, check_every: int = 8) -> SPQEResult:
    """Shapley-based Progressive Quantization Estimation (permutation sampling).

    For each of ``n_perms`` random permutations ``π``, start from all blocks at 4 bits and lower
    ``π(1), π(2), ...`` to 2 bits one at a time; ``Δv_{π(k)} = v(S_k) - v(S_{k-1})``. With a
    deterministic ``value`` the marginals of every permutation sum exactly to ``v(N) - v(∅)``.

    Args:
        value: Value function (memoize it with :class:`MemoValue` to share evaluations).
        n: Number of blocks.
        n_perms: Permutations ``M``.
        rng: NumPy generator (the only source of randomness).
        sii: Also estimate the pairwise Shapley interaction index from adjacent pairs
            (one extra evaluation per step).
        desc: Progress-bar label.
        rel_se: If > 0, stop early (at ``M >= min_perms``, checked every ``check_every`` permutations)
            once :func:`converged` holds; ``n_perms`` is then the cap. The permutations are drawn
            up front, so a stopped run is the head of the capped one.
        min_perms: Fewest permutations before the rule is checked.
        check_every: Check interval of the rule.
    """
    if n < 1 or n_perms < 1:
        raise ValueError(f"need n >= 1 and n_perms >= 1, got {n}, {n_perms}")
    empty = np.zeros(n, dtype=bool)
    v_empty = value(empty)
    perms = np.stack([rng.permutation(n) for _ in range(n_perms)])
    marg = np.zeros((n_perms, n))
    ssum = np.zeros((n, n)) if sii else None
    scnt = np.zeros((n, n)) if sii else None
    v_full = float("nan")
    done = n_perms
    for m in progress(range(n_perms), desc=desc, total=n_perms):
        if rel_se > 0 and m >= min_perms and m % check_every == 0 and converged(marg[:m], rel_se):
            done = m
            break
        mask = empty.copy()
        prev = v_empty
        vals = [v_empty]
        for k in range(n):
            i = perms[m, k]
            mask[i] = True
            cur = value(mask)
            marg[m, i] = cur - prev
            prev = cur
            vals.append(cur)
        v_full = prev
        if sii:
            assert ssum is not None and scnt is not None
            base = empty.copy()
            for k in range(n - 1):
                i, j = perms[m, k], perms[m, k + 1]
                only_j = base.copy()
                only_j[j] = True
                d = vals[k + 2] - vals[k + 1] - value(only_j) + vals[k]
                ssum[i, j] += d
                ssum[j, i] += d
                scnt[i, j] += 1
                scnt[j, i] += 1
                base[i] = True
    if done < n_perms:
        log.info("SPQE converged at M=%d (median SE <= %.2f x median |phi|)", done, rel_se)
    return SPQEResult(perms[:done], marg[:done], float(v_empty), float(v_full), ssum, scnt)


def value_table(value: ValueFn, n: int, desc: str = "exact v(S)") -> np.ndarray:
    """``v`` on all ``2^n`` subsets; entry ``s`` is the subset whose bit ``i`` is set (``n <= 16``)."""
    if n > 16:
        raise ValueError(f"exact enumeration is limited to 16 blocks, got {n}")
    out = np.zeros(2**n)
    for s in progress(range(2**n), desc=desc, total=2**n):
        out[s] = value(np.array([(s >> i) & 1 for i in range(n)], dtype=bool))
    return out


def exact_shapley(table: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values from a full value table: ``φ_i = Σ_S |S|!(n-|S|-1)!/n! [v(S∪i) - v(S)]``."""
    sizes = np.array([bin(s).count("1") for s in range(2**n)])
    w = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)])
    phi = np.zeros(n)
    for i in range(n):
        bit = 1 << i
        s = np.array([s for s in range(2**n) if not s & bit])
        phi[i] = float((w[sizes[s]] * (table[s | bit] - table[s])).sum())
    return phi


def exact_sii(table: np.ndarray, n: int) -> np.ndarray:
    """Exact pairwise Shapley interaction index (Grabisch & Roubens) from a full value table.

    ``I_ij = Σ_{S⊆N∖{i,j}} |S|!(n-|S|-2)!/(n-1)! [v(S∪ij) - v(S∪i) - v(S∪j) + v(S)]``.
    """
    sizes = np.array([bin(s).count("1") for s in range(2**n)])
    w = np.array([math.factorial(k) * math.factorial(n - k - 2) / math.factorial(n - 1) for k in range(max(n - 1, 1))])
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            bi, bj = 1 << i, 1 << j
            s = np.array([s for s in range(2**n) if not s & (bi | bj)])
            d = table[s | bi | bj] - table[s | bi] - table[s | bj] + table[s]
            out[i, j] = out[j, i] = float((w[sizes[s]] * d).sum())
    return out


def covariance_interactions(marginals: np.ndarray) -> np.ndarray:
    """Empirical covariance ``C_ij = cov_m(Δv_i^(m), Δv_j^(m))`` across permutations (ddof=1)."""
    if marginals.shape[0] < 2:
        return np.zeros((marginals.shape[1], marginals.shape[1]))
    return np.cov(marginals, rowvar=False, ddof=1)


def shrink(C: np.ndarray, alpha: float) -> np.ndarray:
    """Diagonal shrinkage ``K = (1 - α) C + α diag(C)``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return (1.0 - alpha) * C + alpha * np.diag(np.diag(C))


def linear_terms(phi: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``a_i = φ_i - Σ_{j≠i} K_ij`` (inverts the Shapley value of the pairwise game ``a, K``)."""
    return phi - (K.sum(axis=1) - np.diag(K))


def pairwise_from_sii(phi: np.ndarray, sii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, K)`` of the pairwise game with interaction index ``I``: ``K = I/2`` (zero diagonal),
    ``a_i = φ_i - ½ Σ_j I_ij``; then ``aᵀq + qᵀKq = Σ_{i∈S} a_i + Σ_{i<j∈S} I_ij``."""
    K = sii / 2.0
    np.fill_diagonal(K, 0.0)
    return phi - K.sum(axis=1), K


class IMPQ:
    """Interaction-aware mixed-precision allocation (SPQE + covariance interactions + exact BQP).

    Args:
        n_permutations: SPQE permutations ``M`` (the paper saturates around 50 on 32-block models).
        alpha: Diagonal shrinkage of the covariance (paper: 0.5).
        interactions: ``"cov"`` (paper) or ``"sii"`` (pairwise Shapley interaction index, ablation).
        solver: BQP solver (``auto``, ``brute``, ``scip``, ``greedy``).

    Attributes:
        spqe_: The SPQE trajectories.
        phi_: Shapley values; ``se_``: their standard errors.
        C_: Covariance of marginals (``cov``); ``K_``: pairwise matrix; ``a_``: linear terms.
    """

    def __init__(self, n_permutations: int = 16, alpha: float = 0.5, interactions: str = "cov",
                 solver: str = "auto") -> None:
        if n_permutations < 2:
            raise ValueError(f"n_permutations must be >= 2 (covariance needs two), got {n_permutations}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if interactions not in ("cov", "sii"):
            raise ValueError(f"interactions must be 'cov' or 'sii', got {interactions!r}")
        self.n_permutations = n_permutations
        self.alpha = alpha
        self.interactions = interactions
        self.solver = solver

    def fit(self, value: ValueFn, n: int, rng: np.random.Generator) -> IMPQ:
        """Run SPQE and build ``a_`` and ``K_``."""
        self.spqe_ = spqe(value, n, self.n_permutations, rng, sii=self.interactions == "sii")
        return self.fit_from(self.spqe_)

    def fit_from(self, res: SPQEResult) -> IMPQ:
        """Build ``a_``/``K_`` from existing SPQE trajectories."""
        self.spqe_ = res
        self.phi_ = res.phi
        self.se_ = res.se
        self.C_ = covariance_interactions(res.marginals)
        if self.interactions == "cov":
            self.K_ = shrink(self.C_, self.alpha)
            self.a_ = linear_terms(self.phi_, self.K_)
        else:
            self.a_, self.K_ = pairwise_from_sii(self.phi_, res.sii())
        return self

    def allocate(self, costs: Sequence[float], budget: float) -> np.ndarray:
        """``q`` (True = block at 2 bits) minimizing ``aᵀq + qᵀKq`` within ``budget``."""
        if not hasattr(self, "a_"):
            raise RuntimeError("call fit() first")
        return solve_bqp(self.a_, self.K_, costs, budget, self.solver)
