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
        features: ``features(encoder, x01) -> (N, ..., D)`` attacked feature (default: ``image_embeds``).
    """

    def __init__(self, eps: float = 8 / 255, steps: int = 20, alpha: float | None = None,
                 schedule: str = "constant", restarts: int = 1,
                 features: Callable[[Any, torch.Tensor], torch.Tensor] = image_embeds) -> None:
        if not 0 < eps <= 1 or steps < 1:
            raise ValueError(f"need 0 < eps <= 1 and steps >= 1, got {eps}, {steps}")
        if schedule not in ("constant", "cosine") or restarts < 1:
            raise ValueError(f"schedule must be 'constant' or 'cosine' and restarts >= 1, got {schedule!r}, {restarts}")
        self.eps, self.steps, self.schedule, self.restarts, self.features = eps, steps, schedule, restarts, features
        self.alpha = alpha if alpha is not None else 2.5 * eps / steps
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

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

        def loss(x_adv: torch.Tensor, step: int) -> torch.Tensor:
            return hijack_loss(self.features(encoder, x_adv), e_t).sum()

        best, best_loss = x, torch.full((x.shape[0],), float("inf"), device=x.device)
        for _ in range(self.restarts):
            x_adv = linf_pgd(x, loss, self.eps, self.step_size, self.steps, maximize=False, random_start=True,
                             generator=generator)
            if self.restarts == 1:
                return x_adv
            with torch.no_grad():
                cur = hijack_loss(self.features(encoder, x_adv), e_t)
            better = cur < best_loss
            best = torch.where(better[:, None, None, None], x_adv, best)
            best_loss = torch.minimum(cur, best_loss)
        return best
