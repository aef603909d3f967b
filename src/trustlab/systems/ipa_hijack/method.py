"""The IP-Adapter hijacking attack (Chen, Dong and Xie, "Mind the Trojan Horse", CVPR 2025, arXiv:2504.05838).

An image-space adversarial example x' = x + delta, ||delta||_inf <= eps, is optimised against the
*image encoder* only (public, e.g. OpenCLIP), so that its feature phi(x') approaches the feature of
an attacker-chosen target image, e_t = phi(target):

    min_delta  L(x + delta) = -cos(phi(P(x + delta)), e_t)

with P the service's preprocessing, made differentiable (resize + CLIP normalisation). The feature is
the projected ``image_embeds`` that the base IP-Adapter consumes (``--fn global`` in the official
code; ``hidden_states[-2]`` would target IP-Adapter Plus). Optimiser: advertorch-style L-infinity PGD
with a uniform random start and sign steps, returning the last iterate (the official ``--opt pgd``).
Benign users who upload x' as an image prompt then get the target concept; neither the UNet nor the
adapter weights are needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from trustlab.diffusion.ip_adapter import image_embeds
from trustlab.diffusion.pgd import linf_pgd


def hijack_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image ``-cos(features, target)`` (cosine over the last dimension, averaged over tokens if any)."""
    cos = F.cosine_similarity(features, target.expand_as(features), dim=-1)
    return -(cos.reshape(cos.shape[0], -1).mean(1))


class HijackAttack:
    """Targeted feature-space PGD against an IP-Adapter image encoder.

    Args:
        eps: L-infinity budget in [0, 1] pixel units.
        steps: PGD iterations.
        alpha: Sign-step size (default ``2.5 * eps / steps``); the peak step under ``schedule="cosine"`` is
            ``2 * alpha``.
        schedule: ``"constant"`` (official) or ``"cosine"`` (decaying sign step).
        restarts: Random starts; the per-image best final iterate is returned.
        features: ``features(encoder, x01) -> (N, ..., D)`` attacked feature (default: ``image_embeds``
            through the encoder's default CLIP preprocessing; bind a service's ``ProcessorParams`` or use
            ``plus_features`` for IP-Adapter Plus).
        best_iterate: Return each image's best iterate over all steps (our change; the official
            optimiser returns the last one).
        transform: Upload transform the attacker expects (a defense); differentiable, or wrapped by
            :func:`straight_through` (BPDA) for JPEG.
        eot_samples: Samples of ``transform`` averaged per step (expectation over transformation).
    """

    def __init__(self, eps: float = 8 / 255, steps: int = 20, alpha: float | None = None,
                 schedule: str = "constant", restarts: int = 1,
                 features: Callable[[Any, torch.Tensor], torch.Tensor] = image_embeds,
                 best_iterate: bool = False, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 eot_samples: int = 1) -> None:
        if not 0 < eps <= 1 or steps < 1:
            raise ValueError(f"need 0 < eps <= 1 and steps >= 1, got {eps}, {steps}")
        if schedule not in ("constant", "cosine") or restarts < 1:
            raise ValueError(f"schedule must be 'constant' or 'cosine' and restarts >= 1, got {schedule!r}, {restarts}")
        self.eps, self.steps, self.schedule, self.restarts, self.features = eps, steps, schedule, restarts, features
        self.alpha = alpha if alpha is not None else 2.5 * eps / steps
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if eot_samples < 1:
            raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
        self.best_iterate, self.transform, self.eot_samples = best_iterate, transform, eot_samples

    def step_size(self, step: int) -> float:
        """Sign-step size at iteration ``step``."""
        if self.schedule == "constant":
            return self.alpha
        return self.alpha * (1 + math.cos(math.pi * step / self.steps))

    def __call__(self, encoder: Any, x: torch.Tensor, target_image: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Adversarial uploads ``(N, 3, H, W)`` in [0, 1] steering ``encoder`` towards ``target_image``."""
        with torch.no_grad():
            e_t = self.features(encoder, target_image[None] if target_image.dim() == 3 else target_image[:1])

        def per_image(x_adv: torch.Tensor) -> torch.Tensor:
            if self.transform is None:
                return hijack_loss(self.features(encoder, x_adv), e_t)
            return torch.stack([hijack_loss(self.features(encoder, self.transform(x_adv)), e_t)
                                for _ in range(self.eot_samples)]).mean(0)

        def loss(x_adv: torch.Tensor, step: int) -> torch.Tensor:
            return per_image(x_adv).sum()

        score = per_image if self.best_iterate else None
        best, best_loss = x, torch.full((x.shape[0],), float("inf"), device=x.device)
        for _ in range(self.restarts):
            x_adv = linf_pgd(x, loss, self.eps, self.step_size, self.steps, maximize=False, random_start=True,
                             generator=generator, score_fn=score)
            if self.restarts == 1:
                return x_adv
            with torch.no_grad():
                cur = per_image(x_adv)
            better = cur < best_loss
            best = torch.where(better[:, None, None, None], x_adv, best)
            best_loss = torch.minimum(cur, best_loss)
        return best


def straight_through(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """BPDA wrapper: forward ``fn(x)`` (e.g. JPEG), backward as the identity (Athalye et al., ICML 2018)."""

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = fn(x)
        return x + (y - x).detach()

    return wrapped
