"""A tiny ``diffusers.AutoencoderKL`` trained by our code on embedded photo crops, or a real one by path.

Images enter as [0, 1] tensors; :func:`posterior` maps them to the VAE's [-1, 1] convention, so every
attack budget stays in [0, 1] pixel units. A random VAE has a meaningless posterior (flat
sigma^2 ~ 0.74, ~10 dB reconstruction; see the research note), hence the short training run, cached
under ``trustlab.utils.cache`` keyed by the whole recipe.

Training loss: L1 reconstruction of a posterior sample + ``kl_weight`` * KL(q(z|x) || N(0, I)),
the Stable Diffusion VAE objective without its LPIPS and GAN terms (which need downloaded weights).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


@dataclass(frozen=True)
class TinyVAESpec:
    """Recipe of a tiny AutoencoderKL and its training run (the cache key).

    Attributes:
        block_out_channels: Channels per encoder/decoder block; the spatial down-sampling factor is
            ``2 ** (len(block_out_channels) - 1)``.
        layers_per_block: ResNet layers per block.
        latent_channels: Latent channels.
        image_size: Side of the training crops.
        steps: Optimiser steps.
        batch_size: Crops per step.
        lr: Adam learning rate.
        kl_weight: Weight of the KL term.
        n_train: Number of distinct training crops.
        seed: Seed of initialisation, crops and sampling.
        mid_attention: Self-attention in the mid block (Stable Diffusion has it; off by default for CPU speed).
    """

    block_out_channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    latent_channels: int = 4
    image_size: int = 32
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    kl_weight: float = 1e-4
    n_train: int = 2048
    seed: int = 0
    mid_attention: bool = False

    def __post_init__(self) -> None:
        if not self.block_out_channels or any(c <= 0 or c % 8 for c in self.block_out_channels):
            raise ValueError(f"block_out_channels must be positive multiples of 8, got {self.block_out_channels}")
        if self.steps < 0 or self.batch_size <= 0 or self.n_train <= 0 or self.lr <= 0 or self.kl_weight < 0:
            raise ValueError("steps >= 0, batch_size > 0, n_train > 0, lr > 0 and kl_weight >= 0 are required")
        if self.image_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError("image_size must be divisible by the down-sampling factor")

    def recipe(self) -> dict[str, Any]:
        """JSON-able recipe (cache key)."""
        return {"kind": "tiny-autoencoderkl", "v": 1, **asdict(self)}


def build_vae(spec: TinyVAESpec) -> Any:
    """An untrained AutoencoderKL with the spec's architecture, initialised from ``spec.seed``."""
    from diffusers import AutoencoderKL

    n = len(spec.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(spec.block_out_channels), layers_per_block=spec.layers_per_block,
            latent_channels=spec.latent_channels, norm_num_groups=8, sample_size=spec.image_size,
            mid_block_add_attention=spec.mid_attention,
        )
    return vae


def downsample_factor(vae: Any) -> int:
    """Spatial factor between image and latent (8 for Stable Diffusion)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def posterior(vae: Any, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and log-variance of ``x01`` (images in [0, 1]); logvar is clamped to [-30, 20] by diffusers."""
    dist = vae.encode(x01 * 2 - 1).latent_dist
    return dist.mean, dist.logvar


def sample_latent(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mean + std * n, as diffusers' ``latent_dist.sample(generator)`` (used by img2img pipelines)."""
    n = torch.randn(mean.shape, generator=generator, device=mean.device if generator is None else generator.device)
    return mean + torch.exp(0.5 * logvar) * n.to(mean.device)


def decode(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """Decode latents to images in [0, 1]."""
    return ((vae.decode(z).sample + 1) / 2).clamp(0, 1)


def train_vae(spec: TinyVAESpec, images: torch.Tensor, device: str | torch.device = "cpu") -> Any:
    """Train a tiny VAE on ``images`` (``(n, 3, s, s)`` in [0, 1]) and return it in eval mode."""
    vae = build_vae(spec).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(spec.steps, 1))
    g = torch.Generator().manual_seed(spec.seed)
    vae.train()
    t0 = time.time()
    for _ in progress(range(spec.steps), desc="train tiny VAE"):
        idx = torch.randint(0, images.shape[0], (spec.batch_size,), generator=g)
        x = images[idx].to(device)
        mean, logvar = posterior(vae, x)
        z = sample_latent(mean, logvar, g)
        rec = decode(vae, z)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
        loss = (rec - x).abs().mean() + spec.kl_weight * kl / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    log.info("trained tiny VAE %s in %.1f s (final loss %.4f)", spec.block_out_channels, time.time() - t0,
             float(loss.detach()) if spec.steps else float("nan"))
    vae.eval().requires_grad_(False)
    return vae


def load_or_train_vae(spec: TinyVAESpec, device: str | torch.device = "cpu") -> Any:
    """The tiny VAE of ``spec``: loaded from the cache, or trained on photo crops and cached."""
    from trustlab.data.photos import TRAIN_PHOTOS, photo_crops
    from trustlab.utils.cache import cache_path
    from trustlab.utils.io import load_tensors, save_tensors

    path = cache_path("diffusion-vae", spec.recipe())
    if path.is_file():
        vae = build_vae(spec)
        state, _ = load_tensors(path)
        vae.load_state_dict(state)
        log.info("loaded cached tiny VAE %s", path)
        return vae.to(device).eval().requires_grad_(False)
    images = photo_crops(TRAIN_PHOTOS, spec.n_train, spec.image_size, seed=spec.seed)
    vae = train_vae(spec, images, device)
    save_tensors(path, {k: v.clone() for k, v in vae.state_dict().items()}, {"recipe": spec.recipe()})
    return vae


def load_pretrained_vae(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """A diffusers ``AutoencoderKL`` from a local folder (a VAE folder, or a pipeline folder with ``vae/``).

    Raises:
        UserError: the folder is missing or holds no AutoencoderKL.
    """
    from diffusers import AutoencoderKL

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"VAE folder {str(p)!r} does not exist",
                        "pass a local diffusers folder (e.g. a Stable Diffusion checkout or its vae/ subfolder)")
    sub = "vae" if (p / "vae" / "config.json").is_file() else None
    if sub is None and not (p / "config.json").is_file():
        raise UserError(f"{str(p)!r} holds no AutoencoderKL (no config.json or vae/config.json)",
                        "pass the vae/ folder of a diffusers pipeline")
    try:
        vae = AutoencoderKL.from_pretrained(str(p), subfolder=sub)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load AutoencoderKL from {str(p)!r} ({exc})", "check the folder's files") from exc
    return vae.to(device).float().eval().requires_grad_(False)
