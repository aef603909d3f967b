"""NADAFD (Hou et al., arXiv:2601.00900): the three modules and the server strategy.

The paper's full text and code are not public (only the abstract); every module is reconstructed
from the abstract and the nearest published method (see README "Design choices"):

1. **FDCI, frequency-domain collaborative inversion** (server). Neural-Cleanse/FLIP-style trigger
   inversion (mask ``m``, pattern ``p``, ``x' = (1 − m) x + m p``, loss ``CE + c·mean(m)``) of every
   received client model on *pure Gamma-speckle probes* (no client data needed), towards the class
   whose probability the client's update raised most. The log-amplitude spectrum of the inverted
   trigger ``m ⊙ p`` (radially averaged) and the mask size are compared across clients with robust
   z-scores: "cross-client spectral inconsistency". A FreqFed-style low-band DCT of each client's
   output-layer update adds a cheap spectral signature every round. Inverted triggers of suspicious
   clients are broadcast to benign clients ("collaborative") for module 2.
2. **NAAT, noise-aware adversarial training** (benign clients). Mask-guided adversarial samples with
   Gamma speckle inside the mask: ``x_adv = clip(x ⊙ ((1 − m) + m ⊙ n) + m ⊙ (p + δ))``,
   ``n ~ Gamma(L, 1/L)``, ``δ`` from PGD within ``‖δ‖∞ ≤ ε`` *maximising* the loss of the true label;
   loss ``CE(x) + β CE(x_adv)`` on a fraction of each batch (FLIP-style hardening, true labels kept).
   Masks come from the FDCI bank, else random squares.
3. **DHA, dynamic health assessment** (server). Per-round quality ``q_k = c_k · exp(−max(0, s_k − z₀))``
   (``c_k``: membership of the majority HDBSCAN cluster of cosine distances, FLAME's filter; ``s_k``:
   FDCI's spectral suspicion), health EMA ``h_k ← ρ h_k + (1 − ρ) q_k`` kept across rounds,
   weights ``w_k ∝ n_k h_k 1[h_k ≥ τ]``, updates clipped to the median norm over all clients.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy.fft import dctn

from trustlab.data.sar import gamma_speckle, normalise_chips
from trustlab.federated.aggregate import Aggregate, flame_filter
from trustlab.federated.simulation import set_parameters
from trustlab.federated.strategy import NDArrays, UpdateStrategy, unflatten

__all__ = [
    "NADAFDStrategy",
    "decode_bank",
    "dct_lowband",
    "encode_bank",
    "binarise_mask",
    "health_update",
    "invert_trigger",
    "naat_adversarial",
    "radial_spectrum",
    "robust_z",
    "speckle_probes",
]


# --------------------------------------------------------------------------------------------- maths
def robust_z(values: NDArray[np.floating]) -> NDArray[np.float64]:
    """``(v − median) / (1.4826 · MAD)``; 0 everywhere when the MAD vanishes and all values agree."""
    v = np.asarray(values, dtype=np.float64)
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    if mad <= 1e-12:
        scale = np.std(v)
        if scale <= 1e-12:
            return np.zeros_like(v)
        mad = scale
    return (v - med) / mad


def radial_spectrum(img: torch.Tensor, bins: int = 8) -> NDArray[np.float64]:
    """Radially averaged, L2-normalised log-amplitude spectrum ``log(1 + |FFT2(img)|)`` of a 2-D image."""
    a = torch.log1p(torch.fft.fftshift(torch.fft.fft2(img.double())).abs()).numpy()
    h, w = a.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h // 2, xx - w // 2)
    edges = np.linspace(0, r.max() + 1e-9, bins + 1)
    idx = np.clip(np.digitize(r, edges) - 1, 0, bins - 1)
    prof = np.bincount(idx.ravel(), weights=a.ravel(), minlength=bins) / np.maximum(np.bincount(idx.ravel(), minlength=bins), 1)
    n = np.linalg.norm(prof)
    return prof / n if n > 0 else prof


def dct_lowband(matrix: NDArray[np.floating], keep: float = 0.5) -> NDArray[np.float64]:
    """FreqFed's signature: 2-D DCT-II of a weight(-update) matrix, top-left ``keep`` fraction per axis."""
    m = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    d = dctn(m, type=2, norm="ortho")
    r, c = max(1, int(np.ceil(keep * m.shape[0]))), max(1, int(np.ceil(keep * m.shape[1])))
    return d[:r, :c].ravel()


def health_update(previous: float, quality: float, rho: float) -> float:
    """DHA's EMA: ``h ← ρ h + (1 − ρ) q`` (both in [0, 1])."""
    if not 0 <= rho < 1:
        raise ValueError(f"rho must be in [0, 1), got {rho}")
    return float(rho * previous + (1 - rho) * np.clip(quality, 0.0, 1.0))


def speckle_probes(n: int, size: int, looks: float, generator: np.random.Generator) -> torch.Tensor:
    """Data-free probe chips: pure clutter ``√(R₀ · n)``, ``n ~ Gamma(L, 1/L)``, normalised like chips."""
    amp = np.sqrt(0.05 * gamma_speckle((n, size, size), looks, generator))
    return torch.from_numpy(normalise_chips(amp)).unsqueeze(1)


# ------------------------------------------------------------------------------------------- FDCI
def invert_trigger(model: torch.nn.Module, probes: torch.Tensor, num_classes: int, steps: int, cost: float,
                   lr: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neural-Cleanse/FLIP trigger inversion towards *every* class at once, on ``probes``.

    For each class ``c`` a mask ``m_c = tanh(m̃_c)/2 + 1/2`` and pattern ``p_c`` are optimised so that
    ``(1 − m_c) x + m_c p_c`` is classified as ``c`` (loss ``CE + cost · mean(m_c)``, Adam with FLIP's
    betas (0.5, 0.9)); all classes share one batch. (FLIP/NC adapt ``cost`` over hundreds of steps; we
    use a fixed cost and few steps to fit the CPU budget.)

    Args:
        model: The client model (its parameters are frozen here).
        probes: ``(N, 1, H, W)`` probe inputs.
        num_classes: Number of classes ``C``.
        steps: Adam steps.
        cost: Weight of the mask's mean (L1) size.
        lr: Adam learning rate.

    Returns:
        ``(masks, patterns, success)``: ``(C, H, W)`` tensors in [0, 1] and the ``(C,)`` fraction of
        probes flipped to each class.
    """
    n, _, h, w = probes.shape
    m_raw = torch.full((num_classes, 1, h, w), -2.0, requires_grad=True)
    p_raw = torch.zeros((num_classes, 1, h, w), requires_grad=True)
    opt = torch.optim.Adam([m_raw, p_raw], lr=lr, betas=(0.5, 0.9))
    tgt = torch.arange(num_classes).repeat_interleave(n)
    for p in model.parameters():
        p.requires_grad_(False)

    def stamp() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, pat = torch.tanh(m_raw) / 2 + 0.5, torch.tanh(p_raw) / 2 + 0.5
        x = (1 - m[:, None]) * probes[None] + (m * pat)[:, None]  # (C, N, 1, H, W)
        return m, pat, x.reshape(num_classes * n, 1, h, w)

    for _ in range(steps):
        m, _, x = stamp()
        loss = F.cross_entropy(model(x), tgt) + cost * m.mean(dim=(1, 2, 3)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m, pat, x = stamp()
        success = (model(x).argmax(1) == tgt).float().reshape(num_classes, n).mean(1)
    return m[:, 0].detach(), pat[:, 0].detach(), success


def encode_bank(bank: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> bytes:
    """Serialise a (mask, pattern) bank to bytes (Flower configs carry scalars and bytes only)."""
    arr = np.stack([np.stack([m.numpy(), p.numpy()]) for m, p in bank]).astype(np.float32) if bank else np.zeros((0,))
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def decode_bank(blob: bytes | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inverse of :func:`encode_bank`."""
    if not blob:
        return []
    arr = np.load(io.BytesIO(blob), allow_pickle=False)
    return [(torch.from_numpy(a[0]), torch.from_numpy(a[1])) for a in arr] if arr.ndim == 4 else []


def binarise_mask(mask: torch.Tensor, area: float) -> torch.Tensor:
    """Keep the ``area`` fraction of pixels with the largest mask values (a compact 0/1 trigger mask)."""
    if not 0 < area <= 1:
        raise ValueError(f"area must be in (0, 1], got {area}")
    k = max(1, int(round(area * mask.numel())))
    thr = torch.topk(mask.flatten(), k).values[-1]
    return (mask >= thr).float()


# ------------------------------------------------------------------------------------------- NAAT
def naat_adversarial(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     bank: Sequence[tuple[torch.Tensor, torch.Tensor]], eps: float, steps: int,
                     looks: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """Mask-guided, Gamma-speckled adversarial samples (module 2).

    ``x_adv = clip(x ⊙ ((1 − m) + m ⊙ n) + m ⊙ (p + δ), 0, 1)`` with ``n ~ Gamma(L, 1/L)`` per pixel
    (``L`` drawn from ``looks``), ``(m, p)`` from ``bank`` (else a random square mask and ``p = 0``) and
    ``δ`` from ``steps`` PGD steps maximising ``CE(f(x_adv), y)`` within ``‖δ‖∞ ≤ eps``.
    """
    n, _, h, w = x.shape
    if bank:
        pick = torch.randint(len(bank), (n,), generator=generator)
        masks = torch.stack([bank[int(i)][0] for i in pick]).unsqueeze(1)
        pats = torch.stack([bank[int(i)][1] for i in pick]).unsqueeze(1)
    else:
        side = torch.randint(3, max(4, h // 4 + 1), (n, 1, 1, 1), generator=generator)
        r0 = (torch.rand((n, 1, 1, 1), generator=generator) * (h - side + 1)).long()
        c0 = (torch.rand((n, 1, 1, 1), generator=generator) * (w - side + 1)).long()
        rows = torch.arange(h).view(1, 1, h, 1)
        cols = torch.arange(w).view(1, 1, 1, w)
        masks = ((rows >= r0) & (rows < r0 + side) & (cols >= c0) & (cols < c0 + side)).float()
        pats = torch.zeros_like(masks)
    lk = torch.tensor(list(looks), dtype=torch.float32)[torch.randint(len(looks), (n,), generator=generator)]
    conc = lk.view(n, 1, 1, 1).expand(n, 1, h, w)
    speck = torch._standard_gamma(conc, generator=generator) / conc  # noqa: SLF001 - seeded Gamma sampler
    base = x * ((1 - masks) + masks * speck) + masks * pats
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps * masks
    was_training = model.training
    model.eval()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((base + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + eps * grad.sign() * masks).clamp(-eps, eps)
    model.train(was_training)
    return (base + delta.detach()).clamp(0, 1)


# ------------------------------------------------------------------------------------- the strategy
class NADAFDStrategy(UpdateStrategy):
    """Server side of NADAFD: FDCI + DHA aggregation, broadcasting the inverted-trigger bank.

    Args:
        model_fn: Builds an empty model of the federated architecture (for inversion).
        image_size: Chip side (probe size).
        num_classes: Number of classes (every class is a candidate target of the inversion).
        use_fdci: Module 1 on/off.
        use_dha: Module 3 on/off (off: health is this round's quality only, no memory).
        use_naat: Module 2 on/off (sent to clients in the round config).
        rho: Health EMA factor.
        tau: Health threshold.
        z0: Spectral suspicion tolerated before quality drops.
        fdci_every: Inversion frequency in rounds.
        fdci_steps: Inversion steps.
        fdci_probes: Number of speckle probes.
        fdci_cost: Mask cost.
        probe_looks: Looks of the probe speckle.
        outlier_quality: Behaviour quality of a client outside the majority cosine cluster (1 inside).
        bank_area: Fraction of pixels kept when an inverted mask is binarised for the NAAT bank.
        seed: Seed of the probes.
    """

    def __init__(self, model_fn: Callable[[], torch.nn.Module], image_size: int, num_classes: int,
                 use_fdci: bool = True,
                 use_dha: bool = True, use_naat: bool = True, rho: float = 0.6, tau: float = 0.6, z0: float = 1.5,
                 fdci_every: int = 2, fdci_steps: int = 12, fdci_probes: int = 16, fdci_cost: float = 2.0,
                 probe_looks: float = 1.0, bank_area: float = 0.08, outlier_quality: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__()
        if not 0 <= rho < 1 or not 0 <= tau <= 1:
            raise ValueError(f"need rho in [0, 1) and tau in [0, 1], got {rho}, {tau}")
        if min(fdci_every, fdci_steps, fdci_probes) < 1 or fdci_cost < 0:
            raise ValueError("fdci_every, fdci_steps, fdci_probes must be >= 1 and fdci_cost >= 0")
        self.model_fn, self.image_size, self.num_classes = model_fn, image_size, num_classes
        self.use_fdci, self.use_dha, self.use_naat = use_fdci, use_dha, use_naat
        self.rho, self.tau, self.z0 = rho, tau, z0
        self.fdci_every, self.fdci_steps, self.fdci_probes, self.fdci_cost = fdci_every, fdci_steps, fdci_probes, fdci_cost
        self.probe_looks = probe_looks
        self.bank_area = bank_area
        self.outlier_quality = outlier_quality
        self.rng_ = np.random.default_rng(seed)
        self.health_: dict[Any, float] = {}
        self.inv_score_: dict[Any, float] = {}
        self.bank_: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.quality_log_: list[dict[Any, float]] = []
        self.score_log_: list[dict[Any, float]] = []

    def configure_train(self, server_round, parameters, client_ids):  # noqa: D102
        blob = encode_bank(self.bank_) if (self.use_naat and self.use_fdci) else b""
        return {cid: {"server_round": server_round, "naat": int(self.use_naat), "naat_bank": blob}
                for cid in client_ids}

    # -- module 1 ---------------------------------------------------------------------------------
    def _client_model(self, parameters: NDArrays, theta: np.ndarray, update: np.ndarray) -> torch.nn.Module:
        model = self.model_fn()
        set_parameters(model, unflatten(theta + update, parameters))
        return model.eval()

    def fdci_scores(self, server_round: int, updates: np.ndarray, parameters: NDArrays,
                    client_ids: list[Any]) -> np.ndarray:
        """Spectral suspicion ``s_k`` (robust z; higher is more suspicious) of each client this round.

        Every ``fdci_every`` rounds each received model is inverted towards every class on the same
        speckle probes; for each class the inverted triggers are compared *across clients*: a mask
        much smaller than the other clients' (Neural Cleanse's signal) and a log-spectrum far from
        the clients' median spectrum both raise the robust z-score. ``s_k`` is the client's largest
        per-class mean of the two z-scores; between inversions the last score is reused.
        """
        if (server_round - 1) % self.fdci_every == 0:
            theta = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parameters])
            probes = speckle_probes(self.fdci_probes, self.image_size, self.probe_looks, self.rng_)
            sizes, specs, inv = [], [], []
            for u in updates:
                model = self._client_model(parameters, theta, u)
                m, pat, succ = invert_trigger(model, probes, self.num_classes, self.fdci_steps, self.fdci_cost)
                size = m.mean(dim=(1, 2)).numpy().astype(np.float64)
                size = np.where(succ.numpy() >= 0.5, size, 1.0)  # failed inversions count as huge masks
                sizes.append(size)
                specs.append(np.stack([radial_spectrum(m[c] * pat[c]) for c in range(self.num_classes)]))
                inv.append((m, pat))
            sizes_a, specs_a = np.stack(sizes), np.stack(specs)  # (K, C), (K, C, bins)
            z_mask = np.stack([robust_z(-sizes_a[:, c]) for c in range(self.num_classes)], axis=1)
            dev = np.linalg.norm(specs_a - np.median(specs_a, axis=0, keepdims=True), axis=2)
            z_spec = np.stack([robust_z(dev[:, c]) for c in range(self.num_classes)], axis=1)
            z = 0.5 * (z_mask + z_spec)
            z_k = z.max(axis=1)
            for cid, v in zip(client_ids, z_k, strict=True):
                self.inv_score_[cid] = float(v)
            order = np.argsort(-z_k)
            bank = []
            for i in order[:3]:
                if z_k[i] > self.z0:
                    c = int(z[i].argmax())
                    bank.append((binarise_mask(inv[i][0][c], self.bank_area), inv[i][1][c]))
            self.bank_ = bank
        z_inv = np.array([self.inv_score_.get(cid, 0.0) for cid in client_ids])
        self.score_log_.append({cid: float(v) for cid, v in zip(client_ids, z_inv, strict=True)})
        return z_inv

    # -- module 3 + aggregation --------------------------------------------------------------------
    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters) -> Aggregate:  # noqa: D102
        k = updates.shape[0]
        cluster = np.where(flame_filter(updates), 1.0, self.outlier_quality)
        if self.use_fdci:
            s = self.fdci_scores(server_round, updates, parameters, client_ids)
            freq_q = np.exp(-np.maximum(0.0, s - self.z0))
        else:
            freq_q = np.ones(k)
        q = cluster * freq_q
        h = np.empty(k)
        for i, cid in enumerate(client_ids):
            h[i] = health_update(self.health_.get(cid, 1.0), q[i], self.rho) if self.use_dha else q[i]
            if self.use_dha:
                self.health_[cid] = h[i]
        self.quality_log_.append({cid: float(v) for cid, v in zip(client_ids, h, strict=True)})
        keep = h >= self.tau
        if not keep.any():
            keep = h >= np.median(h)
        norms = np.linalg.norm(updates, axis=1)
        bound = float(np.median(norms))
        clipped = updates * np.minimum(1.0, bound / np.maximum(norms, 1e-12))[:, None]
        w = num_examples * h * keep
        if w.sum() <= 0:
            w = keep.astype(np.float64)
        w = w / w.sum()
        return Aggregate(w @ clipped, w, keep)
