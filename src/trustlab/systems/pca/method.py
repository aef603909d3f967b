"""The Posterior Collapse Attack (PCA): sign-PGD on the VAE encoder's posterior statistics only.

Guo et al., "A Gray-box Attack against Latent Diffusion Model-based Image Editing by Posterior
Collapse", IEEE TIFS 2025 (arXiv:2408.10901).

With the encoder posterior q(z|x) = N(mu(x), diag sigma^2(x)) over d latent dimensions, the unified loss is

    L_PCA(x) = 1/2 sum_i ( -ln sigma_i^2 - 1 + (mu_i^2 + sigma_i^2) / v )

which equals KL(q || N(0, v I)) - d/2 ln v. Two settings (official code and README):

* **PCA-** (default, ``v = 1e-8``, gradient *descent*): concentrate the posterior on an almost-point
  prior at 0 (mu -> 0, sigma^2 -> v), so the latent the LDM edits loses the image's content.
* **PCA+** (``v = 1``, gradient *ascent*): push the posterior away from the standard prior
  (larger |mu| and variance blow-up), so posterior samples are dominated by noise.

Only the encoder is in the graph (no decoder, no UNet, no text), which is why the attack is cheap and
prompt-invariant.
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.diffusion.pgd import linf_pgd
from trustlab.diffusion.tiling import encoder_loss_and_grad


def posterior_collapse_loss(mean: torch.Tensor, logvar: torch.Tensor, v: float) -> torch.Tensor:
    """Per-image L_PCA (summed over latent dimensions); uses ``reshape`` (posterior views are non-contiguous).

    Args:
        mean: Posterior means ``(N, C, h, w)``.
        logvar: Posterior log-variances, same shape.
        v: Prior variance of the target Gaussian N(0, v I).
    """
    if v <= 0:
        raise ValueError(f"v must be positive, got {v}")
    m = mean.reshape(mean.shape[0], -1)
    lv = logvar.reshape(logvar.shape[0], -1)
    return 0.5 * (-lv - 1 + (m.pow(2) + lv.exp()) / v).sum(1)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-image KL(q || N(0, I)) (= L_PCA with v = 1)."""
    return posterior_collapse_loss(mean, logvar, 1.0)


class PosteriorCollapseAttack:
    """PCA: L-infinity sign-PGD on L_PCA through the VAE encoder only.

    Args:
        eps: Budget in [0, 1] pixel units.
        alpha: Sign-step size.
        steps: Iterations (the official code uses 40, zero init, last iterate).
        v: Prior variance (1e-8 for PCA-, 1 for PCA+).
        ascend: Gradient ascent on L_PCA (PCA+) instead of descent (PCA-).
        tile: Encode images larger than ``tile`` pixels tile by tile (see :mod:`trustlab.diffusion.tiling`).
        margin: Context pixels around each tile.
    """

    def __init__(self, eps: float = 8 / 255, alpha: float = 1 / 255, steps: int = 40, v: float = 1e-8,
                 ascend: bool = False, tile: int | None = None, margin: int = 32) -> None:
        if not 0 < eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {eps}")
        if not 0 < alpha <= 1 or steps < 1 or v <= 0:
            raise ValueError(f"need 0 < alpha <= 1, steps >= 1, v > 0; got {alpha}, {steps}, {v}")
        self.eps, self.alpha, self.steps, self.v, self.ascend = eps, alpha, steps, v, ascend
        self.tile, self.margin = tile, margin

    def __call__(self, vae: Any, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Protected images ``x + delta`` with ``||delta||_inf <= eps`` and values in [0, 1]."""

        def latent_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
            return posterior_collapse_loss(mean, logvar, self.v).sum()

        def grad(x_adv: torch.Tensor, step: int) -> torch.Tensor:
            return encoder_loss_and_grad(vae, x_adv, latent_loss, self.tile, self.margin)[1]

        return linf_pgd(x, None, self.eps, self.alpha, self.steps, maximize=self.ascend, random_start=False,
                        grad_fn=grad)
