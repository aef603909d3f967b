"""UAD-AT: uncertainty-aware distributional adversarial training (reconstructed from the abstract).

Dong, Qu, Wang & Ong, "Enhancing Adversarial Robustness via Uncertainty-Aware Distributional Adversarial
Training", arXiv:2411.02871 (2024). Only the abstract could be read; every equation below is our
reconstruction of one clause of it (see docs/dev/uadat.md, "UAD-AT as implemented"). With a model split as
``f = tail ∘ stem`` (first-stage feature map ``z = stem(x)``, shape ``B×C×H×W``):

1. **Uncertainty-aware adversary distribution** (switch ``uncertainty``). The adversarial features are
   resampled from Gaussians around their own channel statistics, with the batch spread of those
   statistics as the uncertainty (DSU, Li et al., ICLR 2022)::

       μ = mean_HW(z), σ = std_HW(z); s_μ = std_B(μ), s_σ = std_B(σ)
       z̃ = (σ + ε_σ·s_σ)·(z − μ)/σ + (μ + ε_μ·s_μ),  ε ~ N(0, I), with probability p per batch

2. **Refined alignment reference** (switch ``reference``). Sample ``i``'s reference is its own clean
   prediction ``p(x_i)`` when ``x_i`` is classified correctly; otherwise the clean prediction (and
   features) of the same-class, correctly classified clean example nearest to ``x_i`` in channel
   statistics ``(μ, σ)``; if there is none, its own prediction (TRADES' reference; a label-smoothed
   one-hot is available as ``fallback="onehot"``). ``ref_mode`` selects other readings for the
   misclassified samples: ``mask`` (not aligned at all; the experiment's default since the fifth session,
   chosen on a 600-point validation split with held-out seeds), ``inverse`` (the prediction on a UIAT-style
   inverse adversary, PGD *minimising* CE in the ε-ball), ``class_mean`` (mean of the correct clean
   same-class predictions), ``blend`` (half its own clean prediction, kept in the graph, half that class
   mean; the fourth session's default), ``swap`` (its
   own prediction with the predicted and true class probabilities exchanged) or ``proximity`` (their
   proximity-weighted mean); see docs/dev/uadat.md.
3. **Distribution-to-distribution matching** (switch ``d2d``). Besides the output-level
   ``KL(p_ref ‖ p(z̃_adv))`` averaged over ``M`` uncertainty draws, the per-channel feature Gaussians of
   the two domains are matched with the closed-form 2-Wasserstein distance
   ``W2² = ‖μ_adv − μ_ref‖² + ‖σ_adv − σ_ref‖²`` (mean over channels).
4. **Introspective gradient alignment** (switch ``iga``). The model's own input gradients are aligned
   across domains, ``1 − cos(∇_x CE(f(x), y), ∇_{x'} CE(f(x'), y))``, via double back-propagation
   (no teacher model).

Total: ``CE(f(x), y) + κ·E[CE(tail(z̃_adv), y)] + β·E[KL(p_ref ‖ p(z̃_adv))] + γ·W2² + λ·(1 − cos)``, the
expectations over the ``M`` uncertainty draws (the expected adversarial risk of distributional adversarial
training), with ``x'`` crafted by PGD maximising ``KL(p(x) ‖ p(x'))`` in eval mode (TRADES' inner
problem; ``attack`` selects a uniform start or CE-PGD instead). With every switch off and ``κ = 0`` the
loss is exactly TRADES.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.systems.uadat.baselines import TrainingMethod

COMPONENTS: tuple[str, ...] = ("uncertainty", "reference", "d2d", "iga")
REF_MODES: tuple[str, ...] = ("nearest", "proximity", "mask", "inverse", "class_mean", "swap", "blend")


# -- pure functions ---------------------------------------------------------------------------------
def channel_stats(z: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std of a feature map ``(B, C, H, W)`` -> two ``(B, C)`` tensors."""
    if z.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) feature map, got shape {tuple(z.shape)}")
    mu = z.mean(dim=(2, 3))
    sigma = (z.var(dim=(2, 3), unbiased=False) + eps).sqrt()
    return mu, sigma


def uncertainty_resample(z: torch.Tensor, generator: torch.Generator | None = None,
                         eps: float = 1e-6) -> torch.Tensor:
    """Draw features from the uncertainty-aware distribution of ``z`` (DSU-style re-styling).

    Each sample's channel statistics ``(μ, σ)`` are perturbed by Gaussian noise scaled by their spread
    across the batch, and the normalised features are re-scaled to the drawn statistics.

    Args:
        z: Feature map ``(B, C, H, W)`` (B >= 2 so that the batch spread is defined).
        generator: Torch generator for the draws.
        eps: Numerical floor under variances.

    Returns:
        ``z̃`` with the same shape; its per-channel mean/std equal the drawn ``μ̃``/``σ̃``.
    """
    mu, sigma = channel_stats(z, eps)
    s_mu = (mu.var(dim=0, keepdim=True) + eps).sqrt()
    s_sigma = (sigma.var(dim=0, keepdim=True) + eps).sqrt()
    e_mu = torch.randn(mu.shape, generator=generator, device=z.device, dtype=z.dtype)
    e_sigma = torch.randn(sigma.shape, generator=generator, device=z.device, dtype=z.dtype)
    mu_t = mu + e_mu * s_mu
    sigma_t = sigma + e_sigma * s_sigma
    zn = (z - mu[..., None, None]) / sigma[..., None, None]
    return zn * sigma_t[..., None, None] + mu_t[..., None, None]


def nearest_reference_index(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor,
                            correct: torch.Tensor, fallback: str = "self") -> torch.Tensor:
    """Index of each sample's alignment reference in the batch.

    A correctly classified sample is its own reference. A misclassified one takes the correctly
    classified sample of the same class whose channel statistics ``[μ, σ]`` are nearest (Euclidean).
    When the batch holds no such sample the result is the sample itself (``fallback="self"``, i.e.
    TRADES' reference) or ``-1`` (``fallback="onehot"``: :func:`refined_reference` then uses the
    label-smoothed one-hot vector).

    Args:
        mu: Clean channel means ``(B, C)``.
        sigma: Clean channel stds ``(B, C)``.
        y: Labels ``(B,)``.
        correct: Whether each clean sample is classified correctly ``(B,)``.
        fallback: ``"self"`` or ``"onehot"`` (see above).
    """
    if fallback not in ("self", "onehot"):
        raise ValueError(f"fallback must be 'self' or 'onehot', got {fallback!r}")
    stats = torch.cat([mu, sigma], dim=1).detach()
    d = torch.cdist(stats, stats)
    allowed = (y[:, None] == y[None, :]) & correct[None, :]
    d = d.masked_fill(~allowed, float("inf"))
    nearest = d.argmin(dim=1)
    has = torch.isfinite(d.gather(1, nearest[:, None]).squeeze(1))
    own = torch.arange(y.shape[0], device=y.device)
    idx = torch.where(has, nearest, own if fallback == "self" else torch.full_like(nearest, -1))
    return torch.where(correct, own, idx)


def refined_reference(p_clean: torch.Tensor, y: torch.Tensor, ref_idx: torch.Tensor,
                      smoothing: float = 0.1) -> torch.Tensor:
    """Reference distributions: own ``p(x_i)`` (kept in the graph, as TRADES), the neighbour's
    ``p(x_j)`` (detached: it is a target for sample ``i``), or the smoothed one-hot when ``ref_idx == -1``."""
    k = p_clean.shape[1]
    onehot = F.one_hot(y, k).to(p_clean.dtype) * (1 - smoothing) + smoothing / k
    own = torch.arange(y.shape[0], device=y.device)
    safe = ref_idx.clamp_min(0)
    borrowed = p_clean.detach()[safe]
    ref = torch.where((ref_idx == own)[:, None], p_clean, borrowed)
    return torch.where((ref_idx < 0)[:, None], onehot, ref)


def proximity_weights(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor,
                      correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft alignment references by statistical proximity (an alternative to the hard nearest neighbour).

    A misclassified sample ``i`` borrows from every correctly classified same-class sample ``j`` with
    weight ``∝ exp(−d_ij/d̄)``, ``d`` the Euclidean distance in clean channel statistics ``[μ, σ]`` and ``d̄``
    its batch median (all detached). Correctly classified samples, and misclassified ones without such
    a neighbour, keep their own reference.

    Returns:
        ``(W, own)``: row-stochastic weights ``(B, B)`` (rows of ``own`` samples are unused) and the
        boolean mask of samples that keep their own reference.
    """
    stats = torch.cat([mu, sigma], dim=1).detach()
    d = torch.cdist(stats, stats)
    pos = d[d > 0]
    scale = pos.median().clamp_min(1e-6) if pos.numel() else d.new_ones(())
    allowed = (y[:, None] == y[None, :]) & correct[None, :]
    w = torch.exp(-d / scale) * allowed.to(d.dtype)
    has = w.sum(1) > 0
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    return w, correct | ~has


def class_mean_weights(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor,
                       correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional references: a misclassified sample borrows the *mean* clean prediction/statistics of
    the correctly classified samples of its true class in the batch (uniform weights; same return as
    :func:`proximity_weights`). ``mu``/``sigma`` are unused and kept for a common signature."""
    allowed = ((y[:, None] == y[None, :]) & correct[None, :]).to(mu.dtype)
    has = allowed.sum(1) > 0
    return allowed / allowed.sum(1, keepdim=True).clamp_min(1.0), correct | ~has


def swap_reference(p_clean: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Own clean prediction with the probabilities of the predicted and the true class exchanged.

    For a correctly classified sample this is ``p(x_i)`` itself; for a misclassified one it is the same
    distribution (same entropy and confidence, hence the same loss scale as TRADES' reference) whose arg-max
    is the true label, so the adversary is not aligned to the wrong clean prediction. Differentiable in
    ``p_clean`` (a gather), so the clean side keeps TRADES' gradient.
    """
    k = p_clean.shape[1]
    pred = p_clean.detach().argmax(dim=1)
    perm = torch.arange(k, device=y.device).expand(y.shape[0], k).clone()
    perm.scatter_(1, pred[:, None], y[:, None])
    perm.scatter_(1, y[:, None], pred[:, None])
    return p_clean.gather(1, perm)


def gaussian_w2(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor, sigma_b: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians, averaged over channels and samples."""
    return ((mu_a - mu_b) ** 2 + (sigma_a - sigma_b) ** 2).mean()


def gradient_alignment_loss(g_a: torch.Tensor, g_b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over samples of ``1 − cos(g_a, g_b)`` (0 when the gradients coincide; in ``[0, 2]``)."""
    a = g_a.reshape(g_a.shape[0], -1)
    b = g_b.reshape(g_b.shape[0], -1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)
    return (1.0 - cos).mean()


def kl_to_reference(ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``mean_i KL(ref_i ‖ softmax(logits_i))``."""
    return F.kl_div(F.log_softmax(logits, dim=1), ref, reduction="batchmean")


def kl_per_sample(ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(ref_i ‖ softmax(logits_i))`` for each sample ``(B,)``."""
    return F.kl_div(F.log_softmax(logits, dim=1), ref, reduction="none").sum(dim=1)


# -- the method -----------------------------------------------------------------------------------------
class UADAT(TrainingMethod):
    """UAD-AT (reconstructed); each component is switchable for the ablation.

    Args:
        eps: L∞ budget of the training adversaries.
        steps: PGD iterations of the inner (KL) maximisation.
        alpha: PGD step size (default ``eps/4``).
        beta: Weight of the output-level distribution matching (TRADES' β; 6).
        gamma: Weight of the feature-level Gaussian W2 matching (component ``d2d``).
        lam: Weight of the introspective gradient alignment (component ``iga``).
        p: Probability per batch of resampling the adversarial features (component ``uncertainty``).
        draws: Number ``M`` of uncertainty draws averaged in the matching term.
        smoothing: Label smoothing of the one-hot fallback reference.
        fallback: Reference of a misclassified sample without a correct same-class neighbour:
            ``"self"`` (its own clean prediction) or ``"onehot"``.
        uncertainty: Model adversaries as a distribution (DSU resampling of adversarial features).
        reference: Refine the alignment reference for misclassified clean examples.
        d2d: Add the feature-level distribution-to-distribution (W2) term.
        iga: Add introspective gradient alignment.
        adv_ce: Weight ``κ`` of the expected cross-entropy over the adversary distribution (0 = TRADES-shaped).
        ref_mode: Reference of a misclassified clean sample: ``"nearest"`` (hard nearest correct
            same-class neighbour), ``"proximity"`` (:func:`proximity_weights`), ``"class_mean"``
            (:func:`class_mean_weights`), ``"blend"`` (half own, half class mean), ``"swap"``
            (:func:`swap_reference`), ``"mask"`` (left out of the KL and W2 alignment terms) or
            ``"inverse"`` (prediction/statistics on the inverse adversary, :meth:`inverse_adversary`).
        attack: Inner maximisation: ``"kl"`` (TRADES), ``"kl_uniform"`` (KL-PGD from a uniform start) or
            ``"ce"`` (CE-PGD from a uniform start, as PGD-AT).

    The model must expose ``stem`` and ``tail`` with ``model(x) == tail(stem(x))`` (as
    :class:`~trustlab.models.small_cnn.SmallCNN` and :class:`~trustlab.models.resnet.PreActResNet` do).
    """

    name = "uadat"

    def __init__(self, eps: float = 0.1, steps: int = 10, alpha: float | None = None, beta: float = 6.0,
                 gamma: float = 1.0, lam: float = 1.0, p: float = 0.5, draws: int = 1, smoothing: float = 0.1,
                 fallback: str = "self", uncertainty: bool = True, reference: bool = True, d2d: bool = True, iga: bool = True,
                 adv_ce: float = 0.0, ref_mode: str = "nearest", attack: str = "kl") -> None:
        super().__init__(eps, steps, alpha)
        if attack not in ("kl", "ce", "kl_uniform"):
            raise ValueError(f"attack must be 'kl' or 'ce', got {attack!r}")
        self.attack = attack
        if ref_mode not in REF_MODES:
            raise ValueError(f"ref_mode must be one of {REF_MODES}, got {ref_mode!r}")
        self.ref_mode, self.adv_ce = ref_mode, float(adv_ce)
        for n, v in (("beta", beta), ("gamma", gamma), ("lam", lam), ("adv_ce", adv_ce)):
            if not v >= 0:
                raise ValueError(f"{n} must be >= 0, got {v!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        if not (isinstance(draws, int) and draws >= 1):
            raise ValueError(f"draws must be an int >= 1, got {draws!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        if fallback not in ("self", "onehot"):
            raise ValueError(f"fallback must be 'self' or 'onehot', got {fallback!r}")
        self.fallback = fallback
        self.beta, self.gamma, self.lam, self.p = float(beta), float(gamma), float(lam), float(p)
        self.draws, self.smoothing = draws, float(smoothing)
        self.uncertainty, self.reference, self.d2d, self.iga = uncertainty, reference, d2d, iga

    @classmethod
    def without(cls, component: str, **kwargs: object) -> UADAT:
        """UAD-AT with one component switched off (``uncertainty``, ``reference``, ``d2d`` or ``iga``)."""
        if component not in COMPONENTS:
            raise ValueError(f"unknown UAD-AT component {component!r}; use one of {COMPONENTS}")
        kwargs[component] = False
        return cls(**kwargs)  # type: ignore[arg-type]

    @staticmethod
    def _check_model(model: nn.Module) -> None:
        if not (hasattr(model, "stem") and hasattr(model, "tail")):
            raise ValueError("UAD-AT needs a model with .stem and .tail (model(x) == tail(stem(x)))")

    def _reference(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits_cl: torch.Tensor,
                   p_clean: torch.Tensor, mu_cl: torch.Tensor, sig_cl: torch.Tensor,
                   x_inv: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Alignment reference ``(p_ref, μ_ref, σ_ref)`` and per-sample weights ``(B,)`` of the KL and W2 terms.

        Correctly classified samples keep their own clean prediction/statistics (in the graph, as TRADES);
        misclassified ones are handled per ``ref_mode`` (borrowed references are detached targets).
        """
        b = y.shape[0]
        ones = torch.ones(b, dtype=mu_cl.dtype, device=y.device)
        if not self.reference:
            return p_clean, mu_cl, sig_cl, ones, ones
        correct = logits_cl.argmax(dim=1) == y
        if self.ref_mode == "mask":
            w = correct.to(mu_cl.dtype)
            return p_clean, mu_cl, sig_cl, w, w
        if self.ref_mode == "inverse":
            if x_inv is None:
                x_inv = self.inverse_adversary(model, x, y)
            with torch.no_grad():
                z_inv = model.stem(x_inv.detach())
                p_inv = F.softmax(model.tail(z_inv), dim=1)
                mu_inv, sig_inv = channel_stats(z_inv)
            keep = correct[:, None]
            return (torch.where(keep, p_clean, p_inv), torch.where(keep, mu_cl, mu_inv),
                    torch.where(keep, sig_cl, sig_inv), ones, ones)
        if self.ref_mode == "swap":
            return swap_reference(p_clean, y), mu_cl, sig_cl, ones, ones
        if self.ref_mode in ("proximity", "class_mean", "blend"):
            weights = proximity_weights if self.ref_mode == "proximity" else class_mean_weights
            w, own = weights(mu_cl, sig_cl, y, correct)
            blend = self.ref_mode == "blend"  # half own (in the graph), half the class mean

            def mix(v: torch.Tensor) -> torch.Tensor:
                borrowed = w @ v.detach()
                return torch.where(own[:, None], v, 0.5 * (v + borrowed) if blend else borrowed)

            return mix(p_clean), mix(mu_cl), mix(sig_cl), ones, ones
        ref_idx = nearest_reference_index(mu_cl, sig_cl, y, correct, self.fallback)
        ref = refined_reference(p_clean, y, ref_idx, self.smoothing)
        safe, own = ref_idx.clamp_min(0), ref_idx == torch.arange(b, device=y.device)
        mu_ref = torch.where(own[:, None], mu_cl, mu_cl.detach()[safe])
        sig_ref = torch.where(own[:, None], sig_cl, sig_cl.detach()[safe])
        return ref, mu_ref, sig_ref, ones, (ref_idx >= 0).to(mu_cl.dtype)  # one-hot: no feature reference

    def inverse_adversary(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """UIAT-style inverse adversary: PGD *minimising* ``CE(f(x̂), y)`` in the ε-ball around ``x``.

        Run with the model in eval mode from ``x`` itself (no random start), ``steps`` steps of size ``alpha``;
        the result stays within ε of ``x`` and in ``[0, 1]``.
        """
        was = model.training
        model.eval()
        x0 = x.detach()
        x_inv = x0.clone()
        for _ in range(self.steps):
            x_inv.requires_grad_(True)
            g = torch.autograd.grad(F.cross_entropy(model(x_inv), y), x_inv)[0]
            x_inv = x_inv.detach() - self.alpha * g.sign()
            x_inv = torch.min(torch.max(x_inv, x0 - self.eps), x0 + self.eps).clamp(0.0, 1.0)
        model.train(was)
        return x_inv.detach()

    def terms(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
              generator: torch.Generator | None = None, x_inv: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss terms for given adversaries (``ce``, ``ce_adv``, ``match``, ``w2``, ``iga``, ``total``).

        ``x_inv`` (``ref_mode="inverse"`` only) is the inverse adversary; computed here when not given.
        """
        self._check_model(model)
        stem, tail = model.stem, model.tail
        x = x.detach().requires_grad_(self.iga)
        x_adv = x_adv.detach().requires_grad_(self.iga)
        z_cl = stem(x)
        logits_cl = tail(z_cl)
        z_adv = stem(x_adv)
        p_clean = F.softmax(logits_cl, dim=1)
        mu_cl, sig_cl = channel_stats(z_cl)
        mu_adv, sig_adv = channel_stats(z_adv)
        ref, mu_ref, sig_ref, kl_w, w2_w = self._reference(model, x, y, logits_cl, p_clean, mu_cl, sig_cl, x_inv)
        use_u = self.uncertainty and self.p > 0 and x.shape[0] > 1 and bool(
            torch.rand((), generator=generator) < self.p)
        draws = self.draws if use_u else 1
        match = x.new_zeros(())
        ce_adv = x.new_zeros(())
        logits_adv_first = None
        for _ in range(draws):
            z_t = uncertainty_resample(z_adv, generator) if use_u else z_adv
            logits_adv = tail(z_t)
            logits_adv_first = logits_adv if logits_adv_first is None else logits_adv_first
            match = match + (kl_per_sample(ref, logits_adv) * kl_w).mean() / draws
            if self.adv_ce > 0:
                ce_adv = ce_adv + F.cross_entropy(logits_adv, y) / draws
        ce = F.cross_entropy(logits_cl, y)
        out = {"ce": ce, "match": match, "ce_adv": ce_adv}
        total = ce + self.adv_ce * ce_adv + self.beta * match
        if self.d2d:
            w2 = gaussian_w2(mu_adv * w2_w[:, None], sig_adv * w2_w[:, None], mu_ref * w2_w[:, None], sig_ref * w2_w[:, None])
            out["w2"] = w2
            total = total + self.gamma * w2
        if self.iga:
            assert logits_adv_first is not None
            g_cl = torch.autograd.grad(F.cross_entropy(logits_cl, y, reduction="sum"), x, create_graph=True)[0]
            g_adv = torch.autograd.grad(F.cross_entropy(logits_adv_first, y, reduction="sum"), x_adv,
                                        create_graph=True)[0]
            iga = gradient_alignment_loss(g_cl, g_adv)
            out["iga"] = iga
            total = total + self.lam * iga
        out["total"] = total
        return out

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Craft ``x'`` (PGD per ``attack``, eval mode, no resampling) and return the UAD-AT loss in train mode."""
        self._check_model(model)
        if self.attack == "ce":
            x_adv = self._ce_pgd(model, x, y, "uniform", generator)
        else:
            x_adv = self._kl_pgd(model, x, generator, "uniform" if self.attack == "kl_uniform" else "normal")
        x_inv = self.inverse_adversary(model, x, y) if self.reference and self.ref_mode == "inverse" else None
        return self.terms(model, x, y, x_adv, generator, x_inv)["total"]
