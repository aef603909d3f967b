"""Tiled encoder gradients: attack a large photo through a VAE encoder one tile at a time.

The image (padded to a multiple of the VAE's down-sampling factor ``f``) is partitioned into *core*
tiles of ``tile`` pixels; each core is encoded together with a ``margin`` of surrounding context
(clipped to the image), the latent loss is taken over the core's latents only, and the gradient of
that tile is added into the full-image gradient. Every pixel's gradient thus comes from the tiles whose
context holds it, and peak memory is that of one ``(tile + 2 * margin)``-sized forward/backward, not of
the whole image. The losses must be sums over latent positions (PCA's KL, PhotoGuard's squared
distance), so that the sum over cores equals the whole-image loss up to the encoder's receptive field
and its GroupNorm statistics (computed per tile, as diffusers' own ``vae.enable_tiling()`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trustlab.diffusion.vae import downsample_factor, posterior

LatentLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tile_boxes(h: int, w: int, tile: int, margin: int, f: int) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """``[(core, context), ...]`` boxes ``(y0, y1, x0, x1)`` covering an ``h x w`` image (both multiples of ``f``).

    Cores partition the image; contexts extend them by ``margin`` pixels on each side (clipped).
    """
    if h % f or w % f:
        raise ValueError(f"image {h}x{w} is not a multiple of the down-sampling factor {f}")
    if tile <= 0 or tile % f or margin < 0 or margin % f:
        raise ValueError(f"tile ({tile}) must be a positive and margin ({margin}) a non-negative multiple of {f}")
    boxes = []
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ctx = (max(y0 - margin, 0), min(y1 + margin, h), max(x0 - margin, 0), min(x1 + margin, w))
            boxes.append(((y0, y1, x0, x1), ctx))
    return boxes


def encoder_loss_and_grad(vae: Any, x: torch.Tensor, latent_loss: LatentLoss, tile: int | None = None,
                          margin: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, d loss / d x)`` of ``latent_loss(mean, logvar)`` summed over tiles of ``x`` ``(N, 3, H, W)``.

    Without ``tile`` (or when the image fits in one tile) this is the plain whole-image gradient.
    """
    f = downsample_factor(vae)
    h, w = x.shape[-2:]
    x = x.detach()
    if tile is None or (h <= tile and w <= tile):
        xr = x.clone().requires_grad_(True)
        loss = latent_loss(*posterior(vae, xr))
        (g,) = torch.autograd.grad(loss, xr)
        return loss.detach(), g
    grad = torch.zeros_like(x)
    total = torch.zeros((), device=x.device)
    for (cy0, cy1, cx0, cx1), (y0, y1, x0, x1) in tile_boxes(h, w, tile, margin, f):
        xt = x[..., y0:y1, x0:x1].clone().requires_grad_(True)
        mean, logvar = posterior(vae, xt)
        sl = (..., slice((cy0 - y0) // f, (cy1 - y0) // f), slice((cx0 - x0) // f, (cx1 - x0) // f))
        loss = latent_loss(mean[sl], logvar[sl])
        (g,) = torch.autograd.grad(loss, xt)
        grad[..., y0:y1, x0:x1] += g
        total = total + loss.detach()
    return total, grad
