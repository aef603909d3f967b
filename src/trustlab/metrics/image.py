"""Image quality metrics: PSNR and SSIM (pure functions on ``(N, C, H, W)`` tensors in [0, 1]).

SSIM follows Wang et al., "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 2004: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed per
channel and averaged; it matches ``skimage.metrics.structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)`` on interior pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, max_db: float = 100.0) -> torch.Tensor:
    """Per-image PSNR in dB between two batches ``(N, C, H, W)``; identical images give ``max_db``."""
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    val = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
    return val.clamp(max=max_db)


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).float()
    return w.expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image mean SSIM between two batches ``(N, C, H, W)`` (valid-window average).

    The window shrinks to the image side when images are smaller than ``win_size`` (odd sizes only).
    """
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    x, y = x.float(), y.float()
    c = x.shape[1]
    win = min(win_size, x.shape[-1], x.shape[-2])
    if win % 2 == 0:
        win -= 1
    w = _gaussian_window(win, sigma, c).to(x.device)
    mu_x = F.conv2d(x, w, groups=c)
    mu_y = F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
