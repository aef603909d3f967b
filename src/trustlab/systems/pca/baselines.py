"""Baselines at equal L-infinity budget: PhotoGuard encoder attack, AdvDM, random noise.

* PhotoGuard encoder attack (Salman et al., "Raising the Cost of Malicious AI-Powered Image Editing",
  ICML 2023; official notebooks): minimise ||E_mu(x + delta) - z_tgt||_2 with random start and a
  step size decayed linearly to 1/100 of its start, with the official img2img target z_tgt = 0
  (``target="zero"``). ``target="grey"`` (the posterior mean of a flat mid-grey image, our earlier
  choice) is kept as the separately named variant ``photoguard_grey``. Sign steps of ||.||_2 and of
  ||.||_2^2 are identical per image, so the (tileable) squared distance is descended.
* AdvDM (Liang et al., "Adversarial Example Does Good", ICML 2023): maximise the LDM training loss
  E_{t,n} ||eps_theta(z_t(s * z), t, c) - n||^2 with z a posterior sample, one Monte-Carlo (t, n) per
  step, through the VAE encoder *and* the UNet.
* Random: uniform +-eps sign noise (a visibility-matched control).
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.diffusion.pgd import linf_pgd, project_linf
from trustlab.diffusion.tiling import encoder_loss_and_grad
from trustlab.diffusion.unet import diffusion_loss
from trustlab.diffusion.vae import posterior, sample_latent


class PhotoGuardEncoderAttack:
    """PhotoGuard's encoder attack towards a target latent.

    Args:
        eps: Budget in [0, 1] pixel units.
        alpha: Mean step size; the schedule decays linearly from ``2 * alpha`` to ``2 * alpha / 100``
            (the official shape, scaled so the mean step equals the other attacks' ``alpha``).
        steps: Iterations.
        target: ``"zero"`` (official img2img target z = 0) or ``"grey"`` (latent of a flat grey image).
        target_value: Grey level of the flat target image (``target="grey"``).
        tile: Encode images larger than ``tile`` pixels tile by tile.
        margin: Context pixels around each tile.
    """

    def __init__(self, eps: float = 8 / 255, alpha: float = 1 / 255, steps: int = 40, target: str = "zero",
                 target_value: float = 0.5, tile: int | None = None, margin: int = 32) -> None:
        if not 0 < eps <= 1 or not 0 < alpha <= 1 or steps < 1 or not 0 <= target_value <= 1:
            raise ValueError("need 0 < eps, alpha <= 1, steps >= 1 and target_value in [0, 1]")
        if target not in ("zero", "grey"):
            raise ValueError(f"target must be 'zero' or 'grey', got {target!r}")
        self.eps, self.alpha, self.steps, self.target_value = eps, alpha, steps, target_value
        self.target, self.tile, self.margin = target, tile, margin

    def step_size(self, step: int) -> float:
        """Linearly decayed step size at iteration ``step``."""
        a0 = 2 * self.alpha
        return a0 - (a0 - a0 / 100) * step / max(self.steps - 1, 1)

    def __call__(self, vae: Any, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Protected images."""
        if self.target == "grey":
            with torch.no_grad():
                z_tgt: float | torch.Tensor = posterior(vae, torch.full_like(x, self.target_value))[0]
        else:
            z_tgt = 0.0

        def latent_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
            return (mean - z_tgt).pow(2).sum()

        def grad(x_adv: torch.Tensor, step: int) -> torch.Tensor:
            return encoder_loss_and_grad(vae, x_adv, latent_loss, self.tile, self.margin)[1]

        return linf_pgd(x, None, self.eps, self.step_size, self.steps, maximize=False, random_start=True,
                        generator=generator, grad_fn=grad)


class AdvDMAttack:
    """AdvDM: maximise the latent diffusion loss through encoder and UNet.

    Args:
        unet: The LDM's UNet2DConditionModel.
        scheduler: Its DDPM noise scheduler.
        cond: Conditioning tokens ``(1, L, D)`` (the generic prompt).
        scaling: Latent scaling factor (0.18215 for SD1.x).
        eps: Budget in [0, 1] pixel units.
        alpha: Sign-step size.
        steps: Iterations.
    """

    def __init__(self, unet: Any, scheduler: Any, cond: torch.Tensor, scaling: float, eps: float = 8 / 255,
                 alpha: float = 1 / 255, steps: int = 40) -> None:
        if not 0 < eps <= 1 or not 0 < alpha <= 1 or steps < 1 or scaling <= 0:
            raise ValueError("need 0 < eps, alpha <= 1, steps >= 1 and scaling > 0")
        self.unet, self.scheduler, self.cond, self.scaling = unet, scheduler, cond, scaling
        self.eps, self.alpha, self.steps = eps, alpha, steps

    def __call__(self, vae: Any, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Protected images."""

        def loss(x_adv: torch.Tensor, step: int) -> torch.Tensor:
            mean, logvar = posterior(vae, x_adv)
            z = sample_latent(mean, logvar, generator) * self.scaling
            return diffusion_loss(self.unet, self.scheduler, z, self.cond, generator).sum()

        return linf_pgd(x, loss, self.eps, self.alpha, self.steps, maximize=True, random_start=False)


class RandomNoise:
    """Uniform random sign noise of magnitude ``eps`` (every pixel moved by exactly +-eps before clipping).

    Args:
        eps: Budget in [0, 1] pixel units.
    """

    def __init__(self, eps: float = 8 / 255) -> None:
        if not 0 < eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {eps}")
        self.eps = eps

    def __call__(self, vae: Any, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy images."""
        s = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
        return project_linf(x, x + self.eps * s, self.eps)
