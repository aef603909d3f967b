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
        alpha: Sign-step size (default ``2.5 * eps / steps``).
    """

    def __init__(self, eps: float = 8 / 255, steps: int = 20, alpha: float | None = None) -> None:
        if not 0 < eps <= 1 or steps < 1:
            raise ValueError(f"need 0 < eps <= 1 and steps >= 1, got {eps}, {steps}")
        self.eps, self.steps = eps, steps
        self.alpha = alpha if alpha is not None else 2.5 * eps / steps
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    def __call__(self, encoder: Any, x: torch.Tensor, target_image: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Adversarial uploads ``(N, 3, H, W)`` in [0, 1] steering ``encoder`` towards ``target_image``."""
        with torch.no_grad():
            e_t = image_embeds(encoder, target_image[None] if target_image.dim() == 3 else target_image[:1])

        def loss(x_adv: torch.Tensor, step: int) -> torch.Tensor:
            return hijack_loss(image_embeds(encoder, x_adv), e_t).sum()

        return linf_pgd(x, loss, self.eps, self.alpha, self.steps, maximize=False, random_start=True,
                        generator=generator)
