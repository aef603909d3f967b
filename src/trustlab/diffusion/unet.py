"""A tiny latent ``UNet2DConditionModel`` trained on a VAE's latents (the LDM's denoiser).

It exists for the diffusion-loss baselines (AdvDM, Mist) and the image-prompt pipeline: their
objectives need the UNet in the graph. Conditioning is a fixed "prompt" embedding (a seeded random
``(1, tokens, dim)`` tensor standing in for CLIP("a photo")), so no text encoder or tokenizer files
are needed. Training is the standard epsilon-prediction loss with a DDPM scaled-linear schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


@dataclass(frozen=True)
class TinyUNetSpec:
    """Recipe of the tiny latent UNet and its training run (the cache key).

    Attributes:
        block_out_channels: UNet block widths (multiples of 8).
        cross_attention_dim: Width of the conditioning tokens.
        prompt_tokens: Number of conditioning tokens.
        steps: Optimiser steps.
        batch_size: Latents per step.
        lr: AdamW learning rate.
        seed: Seed of initialisation, prompt embedding and noise.
    """

    block_out_channels: tuple[int, ...] = (32, 64)
    cross_attention_dim: int = 32
    prompt_tokens: int = 4
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if any(c <= 0 or c % 8 for c in self.block_out_channels):
            raise ValueError(f"block_out_channels must be positive multiples of 8, got {self.block_out_channels}")
        if self.steps < 0 or self.batch_size <= 0 or self.lr <= 0 or self.prompt_tokens <= 0:
            raise ValueError("steps >= 0 and positive batch_size, lr, prompt_tokens are required")

    def recipe(self) -> dict[str, Any]:
        """JSON-able recipe (cache key)."""
        return {"kind": "tiny-unet2dcondition", "v": 1, **asdict(self)}


def build_unet(spec: TinyUNetSpec, latent_channels: int, sample_size: int) -> Any:
    """An untrained tiny UNet2DConditionModel (one cross-attention down/up block, as diffusers' tests)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return UNet2DConditionModel(
            sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
            block_out_channels=tuple(spec.block_out_channels), layers_per_block=1,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(spec.block_out_channels) - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (len(spec.block_out_channels) - 1) + ("UpBlock2D",),
            cross_attention_dim=spec.cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
        )


def prompt_embedding(spec: TinyUNetSpec) -> torch.Tensor:
    """The fixed conditioning ``(1, prompt_tokens, cross_attention_dim)`` (stands in for a text prompt)."""
    g = torch.Generator().manual_seed(spec.seed + 7919)
    return torch.randn(1, spec.prompt_tokens, spec.cross_attention_dim, generator=g)


def make_scheduler() -> Any:
    """The DDPM noise schedule of Stable Diffusion (scaled-linear betas 0.00085..0.012, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def diffusion_loss(unet: Any, scheduler: Any, z0: torch.Tensor, cond: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample LDM loss ``||eps_theta(z_t, t, c) - n||^2`` with one Monte-Carlo (t, n) per sample."""
    b = z0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(z0.device)
    n = torch.randn(z0.shape, generator=generator).to(z0.device)
    zt = scheduler.add_noise(z0, n, t)
    pred = unet(zt, t, encoder_hidden_states=cond.expand(b, -1, -1).to(z0.device)).sample
    return (pred - n).pow(2).flatten(1).mean(1)


def train_unet(spec: TinyUNetSpec, latents: torch.Tensor, device: str | torch.device = "cpu") -> Any:
    """Train the tiny UNet on scaled latents ``(n, c, h, w)`` and return it in eval mode."""
    unet = build_unet(spec, latents.shape[1], latents.shape[-1]).to(device)
    sched = make_scheduler()
    cond = prompt_embedding(spec)
    opt = torch.optim.AdamW(unet.parameters(), lr=spec.lr)
    g = torch.Generator().manual_seed(spec.seed)
    unet.train()
    for _ in progress(range(spec.steps), desc="train tiny UNet"):
        idx = torch.randint(0, latents.shape[0], (spec.batch_size,), generator=g)
        loss = diffusion_loss(unet, sched, latents[idx].to(device), cond, g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if spec.steps:
        log.info("trained tiny UNet: final loss %.4f", float(loss.detach()))
    return unet.eval().requires_grad_(False)


def load_or_train_unet(spec: TinyUNetSpec, vae: Any, vae_recipe: dict[str, Any], images: torch.Tensor,
                       scaling: float, device: str | torch.device = "cpu") -> Any:
    """The tiny UNet for ``vae``: from the cache (keyed by both recipes) or trained on ``images``' latents."""
    from trustlab.diffusion.vae import posterior
    from trustlab.utils.cache import cache_path
    from trustlab.utils.io import load_tensors, save_tensors

    path = cache_path("diffusion-unet", {"unet": spec.recipe(), "vae": vae_recipe, "scaling": scaling,
                                         "n_images": int(images.shape[0])})
    with torch.no_grad():
        mean, _ = posterior(vae, images[:1].to(device))
    if path.is_file():
        unet = build_unet(spec, mean.shape[1], mean.shape[-1])
        unet.load_state_dict(load_tensors(path)[0])
        return unet.to(device).eval().requires_grad_(False)
    with torch.no_grad():
        lat = torch.cat([posterior(vae, images[i:i + 64].to(device))[0] for i in range(0, images.shape[0], 64)])
    unet = train_unet(spec, lat * scaling, device)
    save_tensors(path, {k: v.clone() for k, v in unet.state_dict().items()}, {"recipe": spec.recipe()})
    return unet
