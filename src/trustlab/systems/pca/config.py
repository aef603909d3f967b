"""Configuration of the PCA experiment (defaults = ``default`` scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.config import SystemConfig
from trustlab.errors import UserError


@dataclass
class Config(SystemConfig):
    """PCA vs PhotoGuard / AdvDM / random noise at equal L-infinity budget.

    Attributes:
        eps: L-infinity budget in [0, 1] pixel units (16/255, the official code's default; the CLI
            defaults to the less visible 8/255).
        alpha: Sign-step size of every PGD attack.
        steps: PGD iterations of every attack.
        v: Prior variance of the PCA loss (1e-8: PCA-, the official default; 1.0 with ascent: PCA+).
        image_size: Side of the held-out photo crops.
        n_eval: Held-out crops attacked per seed.
        vae_channels: Block widths of the surrogate tiny VAE ("tiny-a").
        vae_steps: Training steps of the surrogate tiny VAE.
        vae_n_train: Distinct training crops of the tiny VAEs and UNet.
        vae_b_channels: Block widths of the transfer-target tiny VAE ("tiny-b": other architecture and seed).
        vae_b_steps: Training steps of the transfer-target VAE.
        unet_channels: Block widths of the tiny latent UNet.
        unet_steps: Training steps of the tiny latent UNet used by AdvDM.
        vae_path: Optional local diffusers AutoencoderKL folder (e.g. a Stable Diffusion vae/) used as
            surrogate instead of tiny-a; the AdvDM baseline is then skipped unless ``unet_path`` is set.
        unet_path: Optional local UNet2DConditionModel folder matching ``vae_path``.
        edit_strengths: img2img strengths of the edit evaluation (empty: no edit view).
        edit_prompts: Prompts of the edits (tokenised by the tiny text encoder's word vocabulary).
        edit_steps: DDIM steps of the img2img pipeline (at strength s, ``s * edit_steps`` are run).
        curve_eps: Budgets of the distance-vs-eps curve (key figure).
        curve_n: Images per seed of the curve.
    """

    eps: float = 16 / 255
    alpha: float = 2 / 255
    steps: int = 40
    v: float = 1e-8
    image_size: int = 32
    n_eval: int = 16
    vae_channels: list[int] = field(default_factory=lambda: [16, 32])
    vae_steps: int = 250
    vae_n_train: int = 2048
    vae_b_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    vae_b_steps: int = 150
    unet_steps: int = 100
    unet_channels: list[int] = field(default_factory=lambda: [16, 32])
    vae_path: str | None = None
    unet_path: str | None = None
    edit_strengths: list[float] = field(default_factory=lambda: [0.3, 0.6])
    edit_prompts: list[str] = field(default_factory=lambda: ["a photo of coins", "a photo of grass",
                                                             "a photo of astronaut"])
    edit_steps: int = 20
    curve_eps: list[float] = field(default_factory=lambda: [2 / 255, 4 / 255, 8 / 255, 16 / 255])
    curve_n: int = 8

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"seeds": [0], "image_size": 16, "n_eval": 4, "steps": 6, "alpha": 4 / 255,
                  "vae_steps": 25, "vae_b_steps": 20, "unet_steps": 5, "vae_n_train": 128, "edit_steps": 4,
                  "curve_eps": [8 / 255, 16 / 255], "curve_n": 2},
        "quick": {"seeds": [0], "image_size": 16, "n_eval": 4, "steps": 6, "alpha": 4 / 255,
                  "vae_steps": 25, "vae_b_steps": 20, "unet_steps": 10, "vae_n_train": 128, "edit_steps": 4,
                  "curve_eps": [4 / 255, 8 / 255, 16 / 255], "curve_n": 2},
        "paper": {"image_size": 64, "n_eval": 32,
                  "vae_steps": 2000, "vae_b_steps": 2000, "unet_steps": 2000},
    }

    def validate(self) -> None:
        """Check budgets and sizes."""
        super().validate()
        if not 0 < self.eps <= 1:
            raise UserError(f"eps={self.eps} is outside (0, 1]", "give eps in [0, 1] pixel units, e.g. 8/255 = 0.0314")
        if not 0 < self.alpha <= self.eps:
            raise UserError(f"alpha={self.alpha} must be in (0, eps]", "use e.g. alpha = eps / 8")
        if any(not 0 < st <= 1 for st in self.edit_strengths) or not self.edit_prompts or self.edit_steps < 1:
            raise UserError("edit_strengths must lie in (0, 1], edit_prompts non-empty, edit_steps >= 1",
                            "e.g. edit_strengths=[0.3, 0.6]")
        if any(not 0 < e <= 1 for e in self.curve_eps) or self.curve_n < 1:
            raise UserError("curve_eps must lie in (0, 1] and curve_n >= 1", "e.g. [0.0157, 0.0314]")
        if self.steps < 1 or self.n_eval < 1 or self.v <= 0:
            raise UserError("steps and n_eval must be >= 1 and v > 0", "fix the config")
        for name in ("vae_channels", "vae_b_channels"):
            chans = getattr(self, name)
            if not chans or any(c <= 0 or c % 8 for c in chans):
                raise UserError(f"{name}={chans} must list positive multiples of 8", "e.g. [16, 32]")
            if self.image_size % 2 ** (len(chans) - 1):
                raise UserError(f"image_size={self.image_size} is not divisible by {name}'s down-sampling",
                                "use a multiple of 8")
