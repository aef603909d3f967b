"""Defenses compared in the hijacking experiment.

* ``none``: the IP-Adapter pipeline as shipped.
* ``jpeg``: JPEG re-compression (quality 75) of every uploaded image before the encoder.
* ``noise``: Gaussian input noise (std 16/255), a purification-style randomised defense.
* ``adv_encoder`` (the paper's proposal): IP-Adapter with an adversarially fine-tuned image encoder.
  We use FARE (Schlarmann et al., ICML 2024): min_phi E_x max_{||delta||_inf <= eps}
  ||phi(x + delta) - phi_orig(x)||_2^2, unsupervised and anchored to the original encoder's
  embeddings so the adapter (trained on phi_orig) keeps working on clean uploads.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trustlab.diffusion.ip_adapter import image_embeds
from trustlab.diffusion.pgd import linf_pgd
from trustlab.utils.progress import progress


def jpeg_compress(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG round trip (PIL) of ``(N, 3, H, W)`` images in [0, 1]."""
    from PIL import Image

    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    out = []
    for img in x.detach().cpu():
        arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(dec.copy()).permute(2, 0, 1))
    return torch.stack(out).to(x.device)


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``clip(x + N(0, sigma^2))`` with an explicit generator."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return (x + sigma * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0, 1)


def make_defense(name: str, jpeg_quality: int, noise_sigma: float,
                 generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The upload transform of defense ``name`` (identity for ``none`` and ``adv_encoder``)."""
    if name == "jpeg":
        return lambda x: jpeg_compress(x, jpeg_quality)
    if name == "noise":
        return lambda x: gaussian_noise(x, noise_sigma, generator)
    if name in ("none", "adv_encoder"):
        return lambda x: x
    raise KeyError(f"unknown defense {name!r}")


def fare_finetune(encoder: Any, sampler: Callable[[int], torch.Tensor], steps: int, eps: float,
                  inner_steps: int = 5, batch_size: int = 32, lr: float = 5e-4, seed: int = 0) -> Any:
    """FARE fine-tuning of a copy of ``encoder`` (the original stays frozen as the anchor).

    Args:
        encoder: The original CLIP vision encoder (``image_embeds`` are anchored).
        sampler: ``sampler(n)`` -> ``n`` clean training images in [0, 1].
        steps: Outer AdamW steps.
        eps: Inner L-infinity budget.
        inner_steps: Inner PGD iterations (step ``2.5 * eps / inner_steps``, random start).
        batch_size: Images per step.
        lr: AdamW learning rate (weight decay 1e-4, as the FARE recipe).
        seed: Seed of the inner random starts.
    """
    if steps < 0 or inner_steps < 1 or not 0 < eps <= 1:
        raise ValueError("need steps >= 0, inner_steps >= 1 and 0 < eps <= 1")
    robust = copy.deepcopy(encoder).train().requires_grad_(True)
    anchor = encoder.eval().requires_grad_(False)
    opt = torch.optim.AdamW(robust.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in progress(range(steps), desc="FARE"):
        x = sampler(batch_size)
        with torch.no_grad():
            e0 = image_embeds(anchor, x)
        robust.eval().requires_grad_(False)
        x_adv = linf_pgd(x, lambda xa, s, e0=e0: (image_embeds(robust, xa) - e0).pow(2).sum(), eps, 2.5 * eps / inner_steps,
                         inner_steps, maximize=True, random_start=True, generator=g)
        robust.train().requires_grad_(True)
        loss = (image_embeds(robust, x_adv) - e0).pow(2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return robust.eval().requires_grad_(False)
