"""NADAFD (Hou et al., arXiv:2601.00900): the three modules and the server strategy.

The paper's full text and code are not public (only the abstract); every module is reconstructed
from the abstract and the nearest published method (see README "Design choices"):

1. **FDCI, frequency-domain collaborative inversion** (server). Neural-Cleanse/FLIP-style trigger
   inversion (mask ``m``, pattern ``p``, ``x' = (1 − m) x + m p``, loss ``CE + c·mean(m)``) of every
   received client model towards every class, batched over clients (``torch.func.vmap``), on
   *data-free physics probes* (random point-scatterer layouts under Gamma speckle, no client data).
   Per class, each client's inverted trigger is compared *across clients* with robust z-scores: a
   log-mask size much smaller than the other clients' (Neural Cleanse's signal) and a high-frequency
   power share of ``m ⊙ p`` larger than theirs (a speckle-like spectrum): "cross-client spectral
   inconsistency". Inverted triggers of clients that FDCI *and* DHA both distrust are broadcast to
   benign clients ("collaborative") for module 2.
2. **NAAT, noise-aware adversarial training** (benign clients). Mask-guided adversarial samples with
   Gamma speckle inside the mask: ``x_adv = clip(x ⊙ ((1 − m) + m ⊙ n) + m ⊙ (p + δ))``,
   ``n ~ Gamma(L, 1/L)``, ``p`` an additive Gamma texture (random masks) or an inverted trigger (FDCI
   bank), ``δ`` from PGD within ``‖δ‖∞ ≤ ε`` *maximising* the loss of the true label; loss
   ``CE(x) + β CE(x_adv)`` on a fraction of each batch (FLIP-style hardening, true labels kept).
3. **DHA, dynamic health assessment** (server). Per-round quality ``q_k = c_k · exp(−max(0, s_k − z₀))``
   (``c_k``: agreement of the update with the coordinate-wise median update relative to the typical
   client's, times a collusion term that lowers it when the client's deviation from that median is
   shared by two peers, see :func:`collusion_scores`; ``s_k``: FDCI's suspicion), health EMA ``h_k ← ρ h_k + (1 − ρ) q_k`` kept across rounds,
   clients with ``h_k < τ`` dropped, updates clipped to the median norm over all clients, and the
   health-weighted coordinate-wise median of the clipped updates applied (robust statistics inside
   DHA: the health decides *how much say* a client has in the median).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from trustlab.data.sar import gamma_speckle, normalise_chips, simulate_sar_chips
from trustlab.federated.aggregate import Aggregate, flame_filter, weighted_median, weighted_trimmed_mean
from trustlab.federated.simulation import set_parameters
from trustlab.federated.strategy import NDArrays, UpdateStrategy, unflatten

__all__ = [
    "NADAFDStrategy",
    "decode_bank",
    "encode_bank",
    "binarise_mask",
    "collusion_scores",
    "consensus_target",
    "transfer_asymmetry",
    "transfer_matrix",
    "health_update",
    "highfreq_fraction",
    "invert_triggers",
    "physics_probes",
    "naat_adversarial",
    "robust_z",
    "speckle_probes",
]


# --------------------------------------------------------------------------------------------- maths
def robust_z(values: NDArray[np.floating], floor: float = 0.0) -> NDArray[np.float64]:
    """``(v − median) / max(1.4826 · MAD, floor)``; 0 everywhere when the scale vanishes and all values agree.

    ``floor`` (in the units of ``values``) keeps near-tied values from producing huge z-scores.
    """
    v = np.asarray(values, dtype=np.float64)
    med = np.median(v)
    mad = max(1.4826 * float(np.median(np.abs(v - med))), floor)
    if mad <= 1e-12:
        scale = np.std(v)
        if scale <= 1e-12:
            return np.zeros_like(v)
        mad = scale
    return (v - med) / mad


def highfreq_fraction(img: torch.Tensor, cutoff: float = 0.25) -> float:
    """Share of the (mean-removed) power spectrum ``|FFT2(img)|²`` beyond radius ``cutoff · side``.

    Speckle-like textures put most of their power at high spatial frequencies; the smooth blobs of
    point scatterers (natural class evidence) put it at low ones.
    """
    a = torch.fft.fftshift(torch.fft.fft2((img - img.mean()).double())).abs().pow(2).numpy()
    h, w = a.shape
    yy, xx = np.mgrid[:h, :w]
    total = float(a.sum())
    return float(a[np.hypot(yy - h // 2, xx - w // 2) > cutoff * min(h, w)].sum() / total) if total > 0 else 0.0


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
def physics_probes(n: int, size: int, looks: float, generator: np.random.Generator) -> torch.Tensor:
    """Data-free probe chips from SAR physics alone: random point-scatterer layouts under Gamma speckle.

    The layouts come from a template seed drawn from ``generator`` (not the classes of any client), at
    random aspect (360°), so the probes look like generic SAR target chips without carrying a single
    client sample. (Pure-speckle probes, :func:`speckle_probes`, are degenerate: most models map them
    all to one "background" class, which makes that class trivially easy to invert.)
    """
    chips = simulate_sar_chips(n, generator, num_classes=max(2, min(n, 16)), size=size, looks=looks,
                               template_seed=int(generator.integers(1 << 30)), scatterer_sigma=0.1, jitter=0.03,
                               aspect_deg=360.0)
    return chips.x


def invert_triggers(models: Sequence[torch.nn.Module], probes: torch.Tensor, num_classes: int, steps: int,
                    cost: float, lr: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neural-Cleanse/FLIP trigger inversion of *every* client model towards *every* class at once.

    For client ``k`` and class ``c`` a mask ``m_kc = tanh(m̃)/2 + 1/2`` and pattern ``p_kc`` are optimised
    so that ``(1 − m_kc) x + m_kc p_kc`` is classified as ``c`` by model ``k`` (loss ``CE + cost ·
    mean(m_kc)``, Adam with FLIP's betas (0.5, 0.9)). The ``K`` models share one architecture and run
    batched (``torch.func.vmap`` over their stacked parameters), which is what makes a per-client
    inversion affordable every few rounds. (FLIP/NC adapt ``cost`` over hundreds of steps; we use a
    fixed cost and tens of steps to fit the CPU budget.)

    Args:
        models: ``K`` client models of one architecture (not modified).
        probes: ``(N, 1, H, W)`` probe inputs.
        num_classes: Number of classes ``C``.
        steps: Adam steps.
        cost: Weight of the mask's mean (L1) size.
        lr: Adam learning rate.

    Returns:
        ``(masks, patterns, success)``: ``(K, C, H, W)`` tensors in [0, 1] and the ``(K, C)`` fraction
        of probes flipped to each class.
    """
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state([m.eval() for m in models])
    params = {k: v.detach() for k, v in params.items()}
    base = models[0]
    fwd = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))
    k = len(models)
    n, _, h, w = probes.shape
    m_raw = torch.full((k, num_classes, 1, h, w), -2.0, requires_grad=True)
    p_raw = torch.zeros((k, num_classes, 1, h, w), requires_grad=True)
    opt = torch.optim.Adam([m_raw, p_raw], lr=lr, betas=(0.5, 0.9))
    tgt = torch.arange(num_classes).repeat_interleave(n).repeat(k)

    def stamp() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, pat = torch.tanh(m_raw) / 2 + 0.5, torch.tanh(p_raw) / 2 + 0.5
        x = (1 - m[:, :, None]) * probes[None, None] + (m * pat)[:, :, None]  # (K, C, N, 1, H, W)
        return m, pat, x.reshape(k, num_classes * n, 1, h, w)

    for _ in range(steps):
        m, _, x = stamp()
        logits = fwd(params, buffers, x).reshape(-1, num_classes)
        loss = F.cross_entropy(logits, tgt, reduction="sum") / (num_classes * n) + cost * m.mean(dim=(2, 3, 4)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m, pat, x = stamp()
        hit = fwd(params, buffers, x).reshape(-1, num_classes).argmax(1) == tgt
        success = hit.float().reshape(k, num_classes, n).mean(2)
    return m[:, :, 0].detach(), pat[:, :, 0].detach(), success


def collusion_scores(updates: NDArray[np.floating], group: int = 2) -> NDArray[np.float64]:
    """How much each client's deviation from the consensus is shared by ``group`` other clients.

    Residuals ``r_k = Δ_k − med Δ`` (the coordinate-wise median update: what the majority agrees on);
    ``g_k`` is the ``group``-th largest cosine between ``r_k`` and the other clients' residuals. Backdoor
    attackers deviate from the consensus in the *same* direction (shared trigger and target), so each
    of them has ``group`` close peers; a label-skewed benign client deviates in its own direction.
    (FoolsGold's sybil intuition, measured on consensus residuals of the current round rather than on
    raw accumulated updates, whose common learning direction dominates the cosine.)
    """
    u = np.asarray(updates, dtype=np.float64)
    k = u.shape[0]
    if k < 2:
        return np.zeros(k)
    r = u - np.median(u, axis=0)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    cs = r @ r.T
    np.fill_diagonal(cs, -np.inf)
    g = min(max(1, group), k - 1)
    return np.sort(cs, axis=1)[:, -g]


def transfer_matrix(models: Sequence[torch.nn.Module], masks: torch.Tensor, patterns: torch.Tensor,
                    probes: torch.Tensor) -> NDArray[np.float64]:
    """How far each client's inverted trigger transfers to every client's model.

    ``T[k, c, j]`` is the fraction of probes stamped with client ``k``'s class-``c`` trigger
    ``(masks[k, c], patterns[k, c])`` that model ``j`` assigns to class ``c``. A backdoor trigger is
    shared by the attackers, so their inverted target-class triggers flip each other's models; a benign
    client's trigger is its own model's class evidence.
    """
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state([m.eval() for m in models])
    base = models[0]
    k, c, h, w = masks.shape
    n = probes.shape[0]
    with torch.no_grad():
        x = ((1 - masks[:, :, None, None]) * probes[None, None] + (masks * patterns)[:, :, None, None])
        x = x.reshape(k * c * n, 1, h, w)
        pred = vmap(lambda p, b: functional_call(base, (p, b), (x,)).argmax(1))(params, buffers)  # (K_model, KCN)
    hit = pred.reshape(len(models), k, c, n) == torch.arange(c).view(1, 1, c, 1)
    return hit.float().mean(3).permute(1, 2, 0).numpy().astype(np.float64)


def transfer_asymmetry(t: NDArray[np.floating]) -> NDArray[np.float64]:
    """``a[k, c]`` = susceptibility − reach of client ``k`` for class ``c`` (in [−1, 1]).

    From :func:`transfer_matrix` ``T[k, c, j]``: *susceptibility* is the mean over the other clients'
    class-``c`` triggers of how often they flip ``k``'s model to ``c`` (a backdoored model goes to its
    target class under almost any stamped texture); *reach* is the mean over the other models of how
    often ``k``'s own trigger flips them (a backdoor trigger flips only the attackers' models, while a
    benign client's trigger is class evidence that transfers widely). Attackers: high − low.
    """
    tt = np.asarray(t, dtype=np.float64)
    k = tt.shape[0]
    if k < 2:
        return np.zeros(tt.shape[:2])
    off = 1.0 - np.eye(k)  # (trigger owner, model)
    reach = np.einsum("kcj,kj->kc", tt, off) / (k - 1)
    susc = np.einsum("jck,jk->kc", tt, off) / (k - 1)
    return susc - reach


def consensus_target(z: NDArray[np.floating], group: int = 2) -> int:
    """The class on which a *group* of clients is anomalous together: argmax of the ``group``-th largest z.

    A backdoor is shared by its attackers, so on the target class several clients' inverted triggers
    stand out at once; a label-skewed benign client stands out alone, on its own dominant class. With
    ``group = 2`` a class needs at least two anomalous clients to become the suspected target.
    """
    zz = np.asarray(z, dtype=np.float64)
    g = min(max(1, group), zz.shape[0])
    return int(np.argmax(np.sort(zz, axis=0)[-g]))


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
                     looks: Sequence[float], generator: torch.Generator, offset: float = 0.0) -> torch.Tensor:
    """Mask-guided, Gamma-speckled adversarial samples (module 2).

    ``x_adv = clip(x ⊙ ((1 − m) + m ⊙ n) + m ⊙ (p + δ), 0, 1)`` with ``n ~ Gamma(L, 1/L)`` per pixel
    (``L`` drawn from ``looks``); ``(m, p)`` is a random 3–h/4 px square with an additive Gamma texture
    ``p = a·g``, ``g ~ Gamma(1, 1)``, ``a ~ U(0, offset)`` (a speckle-concealed trigger candidate), or, for
    half of the samples when FDCI's ``bank`` is not empty, an inverted trigger from the bank; and
    ``δ`` from ``steps`` PGD steps maximising ``CE(f(x_adv), y)`` within ``‖δ‖∞ ≤ eps``.
    """
    n, _, h, w = x.shape
    side = torch.randint(3, max(4, h // 4 + 1), (n, 1, 1, 1), generator=generator)
    r0 = (torch.rand((n, 1, 1, 1), generator=generator) * (h - side + 1)).long()
    c0 = (torch.rand((n, 1, 1, 1), generator=generator) * (w - side + 1)).long()
    rows = torch.arange(h).view(1, 1, h, 1)
    cols = torch.arange(w).view(1, 1, 1, w)
    masks = ((rows >= r0) & (rows < r0 + side) & (cols >= c0) & (cols < c0 + side)).float()
    amp = torch.rand((n, 1, 1, 1), generator=generator) * offset
    pats = amp * torch._standard_gamma(torch.ones(n, 1, h, w), generator=generator)  # noqa: SLF001
    if bank:  # half of the samples use an inverted trigger from the FDCI bank instead of a random square
        use = torch.rand(n, generator=generator) < 0.5
        pick = torch.randint(len(bank), (n,), generator=generator)
        for i in torch.nonzero(use).ravel().tolist():
            masks[i, 0], pats[i, 0] = bank[int(pick[i])]
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
        collusion: Multiply the behaviour quality by the collusion term (see :meth:`behaviour_quality`);
            not in the abstract, off in the ``nadafd`` row, on in ``nadafd_collusion``.
        collusion_group: Number of peers a client's consensus residual must share (``group`` of
            :func:`collusion_scores`).
        collusion_z: Robust z of the collusion score tolerated before quality drops.
        seed: Seed of the probes.
    """

    def __init__(self, model_fn: Callable[[], torch.nn.Module], image_size: int, num_classes: int,
                 use_fdci: bool = True,
                 use_dha: bool = True, use_naat: bool = True, rho: float = 0.6, tau: float = 0.6, z0: float = 1.5,
                 fdci_every: int = 3, fdci_steps: int = 30, fdci_probes: int = 16, fdci_cost: float = 2.0,
                 probe_looks: float = 1.0, bank_area: float = 0.08, outlier_quality: float = 0.0,
                 rule: str = "median", behaviour: str = "consensus", fdci_target: str = "max",
                 fdci_group: int = 2, fdci_score: str = "spectral", collusion: bool = False,
                 collusion_group: int = 2, collusion_z: float = 0.5, seed: int = 0) -> None:
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
        if rule not in ("mean", "median", "trimmed"):
            raise ValueError(f"rule must be 'mean', 'median' or 'trimmed', got {rule!r}")
        self.rule = rule
        if behaviour not in ("consensus", "cluster"):
            raise ValueError(f"behaviour must be 'consensus' or 'cluster', got {behaviour!r}")
        self.behaviour = behaviour
        if fdci_target not in ("consensus", "max") or fdci_group < 1:
            raise ValueError(f"need fdci_target 'consensus' or 'max' and fdci_group >= 1, got {fdci_target!r}, "
                             f"{fdci_group}")
        if fdci_score not in ("transfer", "spectral"):
            raise ValueError(f"fdci_score must be 'transfer' or 'spectral', got {fdci_score!r}")
        self.fdci_target, self.fdci_group, self.fdci_score = fdci_target, fdci_group, fdci_score
        if collusion_group < 1:
            raise ValueError(f"collusion_group must be >= 1, got {collusion_group}")
        self.collusion, self.collusion_group, self.collusion_z = collusion, collusion_group, collusion_z
        # suspicion above which a client is "flagged" (bank; spectral: robust z, transfer: asymmetry)
        self.flag_ = z0 if fdci_score == "spectral" else 0.5
        self.rng_ = np.random.default_rng(seed)
        self.health_: dict[Any, float] = {}
        self.inv_score_: dict[Any, float] = {}
        self.bank_: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.inv_last_: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        self.z_last_: dict[Any, float] = {}
        self.quality_log_: list[dict[Any, float]] = []
        self.score_log_: list[dict[Any, float]] = []
        self.z_log_: list[tuple[int, list[Any], NDArray[np.float64], int]] = []
        self.collusion_log_: list[dict[Any, float]] = []

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

        Every ``fdci_every`` rounds (after a warm-up of that many rounds) all received models are
        inverted towards every class on the same physics probes; for each class the inverted triggers
        are compared *across clients*: a log-mask much smaller than the other clients' (Neural
        Cleanse's signal) and a high-frequency power share of ``m ⊙ p`` larger than theirs (speckle-like
        spectrum) both raise a robust z-score. ``s_k`` is the client's largest per-class mean of the
        two z-scores; between inversions the last score is reused.
        """
        if server_round % self.fdci_every == 0:
            theta = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parameters])
            probes = physics_probes(self.fdci_probes, self.image_size, self.probe_looks, self.rng_)
            models = [self._client_model(parameters, theta, u) for u in updates]
            masks, pats, succ = invert_triggers(models, probes, self.num_classes, self.fdci_steps, self.fdci_cost)
            sizes = np.where(succ.numpy() >= 0.5, masks.mean(dim=(2, 3)).numpy().astype(np.float64), 1.0)
            hf = np.array([[highfreq_fraction(masks[i, c] * pats[i, c]) for c in range(self.num_classes)]
                           for i in range(len(models))])  # (K, C)
            hf = np.where(succ.numpy() >= 0.5, hf, 0.0)  # a failed inversion is no evidence
            inv = [(masks[i], pats[i]) for i in range(len(models))]
            z_mask = np.stack([robust_z(-np.log(sizes[:, c] + 1e-3)) for c in range(self.num_classes)], axis=1)
            z_spec = np.stack([robust_z(hf[:, c]) for c in range(self.num_classes)], axis=1)
            z = 0.5 * (z_mask + z_spec)
            if self.fdci_score == "transfer":
                z = transfer_asymmetry(transfer_matrix(models, masks, pats, probes))
            target = consensus_target(z, self.fdci_group)
            z_k = z[:, target] if self.fdci_target == "consensus" else z.max(axis=1)
            cls = [target if self.fdci_target == "consensus" else int(z[i].argmax()) for i in range(len(models))]
            self.z_log_.append((server_round, list(client_ids), z, target))
            for cid, v in zip(client_ids, z_k, strict=True):
                self.inv_score_[cid] = float(v)
            self.inv_last_ = {cid: (inv[i][0][cls[i]], inv[i][1][cls[i]]) for i, cid in enumerate(client_ids)}
            self.z_last_ = {cid: float(z_k[i]) for i, cid in enumerate(client_ids)}
        z_inv = np.array([self.inv_score_.get(cid, 0.0) for cid in client_ids])
        self.score_log_.append({cid: float(v) for cid, v in zip(client_ids, z_inv, strict=True)})
        return z_inv

    def behaviour_quality(self, updates: np.ndarray) -> np.ndarray:
        """This round's behaviour quality ``c_k ∈ [0, 1]`` of each update.

        ``consensus`` (default): ``clip(cos_k / median_j cos_j, 0, 1)`` with ``cos_k = cos(Δ_k, median Δ)``,
        agreement with the coordinate-wise median update (a robust consensus the attackers cannot move
        while they are a minority), relative to the typical client's agreement (raw cosines of
        non-IID updates are ≈ 0.5 for everyone, which a fixed threshold cannot use);
        ``cluster``: FLAME's HDBSCAN majority-cluster membership (1 inside, ``outlier_quality`` outside).
        With ``collusion`` on, this is multiplied by ``exp(−max(0, z_k − collusion_z))``, ``z_k`` the robust
        z (across this round's clients, scale floored at 0.05) of :func:`collusion_scores`: a client
        whose deviation from the consensus is shared by ``collusion_group`` peers loses quality.
        """
        if self.behaviour == "cluster":
            q = np.where(flame_filter(updates), 1.0, self.outlier_quality)
        else:
            med = np.median(updates, axis=0)
            cos = updates @ med / np.maximum(np.linalg.norm(updates, axis=1) * np.linalg.norm(med), 1e-12)
            ref = float(np.median(cos))
            q = np.clip(cos / ref, 0.0, 1.0) if ref > 1e-12 else np.ones(len(cos))
        if self.collusion:
            z = robust_z(collusion_scores(updates, self.collusion_group), floor=0.05)
            self.collusion_log_.append(dict(enumerate(z.tolist())))
            q = q * np.exp(-np.maximum(0.0, z - self.collusion_z))
        return q

    def _bank(self, client_ids: list[Any], health: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Inverted triggers (binarised mask, pattern) of the (at most 3) clients both modules distrust.

        A client's latest inverted trigger enters the bank broadcast to benign clients only when its
        FDCI suspicion exceeds ``z0`` *and* its health is below ``tau``: with FDCI alone, triggers of
        label-skewed benign clients (natural class evidence) entered the bank and NAAT then taught the
        clients to ignore real class evidence (measured: clean accuracy −4 points on seed 0).
        """
        cand = [(self.z_last_[c], c) for c, h in zip(client_ids, health, strict=True)
                if c in self.inv_last_ and self.z_last_[c] > self.flag_ and h < self.tau]
        return [(binarise_mask(self.inv_last_[c][0], self.bank_area), self.inv_last_[c][1])
                for _, c in sorted(cand, key=lambda t: -t[0])[:3]]

    # -- module 3 + aggregation --------------------------------------------------------------------
    def aggregate_updates(self, server_round, updates, num_examples, client_ids, parameters) -> Aggregate:  # noqa: D102
        k = updates.shape[0]
        cluster = self.behaviour_quality(updates)
        if self.use_fdci:
            s = self.fdci_scores(server_round, updates, parameters, client_ids)
            freq_q = (np.exp(-np.maximum(0.0, s - self.z0)) if self.fdci_score == "spectral"
                      else 1.0 - np.clip(s, 0.0, 1.0))
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
        if self.use_fdci:
            self.bank_ = self._bank(client_ids, h)
        if not keep.any():
            keep = h >= np.median(h)
        norms = np.linalg.norm(updates, axis=1)
        bound = float(np.median(norms))
        clipped = updates * np.minimum(1.0, bound / np.maximum(norms, 1e-12))[:, None]
        w = num_examples * h * keep
        if w.sum() <= 0:
            w = keep.astype(np.float64)
        w = w / w.sum()
        if self.rule == "median":
            return Aggregate(weighted_median(clipped, w).update, w, keep)
        if self.rule == "trimmed":
            return Aggregate(weighted_trimmed_mean(clipped, w, 0.25).update, w, keep)
        return Aggregate(w @ clipped, w, keep)
