"""Shared diffusion pieces: image metrics vs scikit-image, PGD budget, quantisation, photo crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.diffusion.pgd import linf_pgd, project_linf, quantize_toward
from trustlab.metrics.image import psnr, ssim


def test_psnr_ssim_match_skimage() -> None:
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    for i in range(2):
        a, b = x[i].numpy(), y[i].numpy()
        ref_p = skm.peak_signal_noise_ratio(a, b, data_range=1.0)
        ref_s = skm.structural_similarity(a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
        assert float(psnr(x, y)[i]) == pytest.approx(ref_p, rel=1e-4)
        # skimage averages over the full (reflect-padded) image, we over valid windows: close, not equal
        assert float(ssim(x, y)[i]) == pytest.approx(ref_s, abs=0.03)
    assert float(ssim(x, x).min()) == pytest.approx(1.0, abs=1e-5)


def test_pgd_respects_budget_and_range() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 8, 8, generator=g)
    w = torch.randn(3, 3, 8, 8, generator=g)
    eps = 8 / 255
    adv = linf_pgd(x, lambda xa, s: (xa * w).sum(), eps, 2 / 255, 10, maximize=True, random_start=True, generator=g)
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    # the loss increased
    assert (adv * w).sum() > (x * w).sum()


def test_quantize_toward_keeps_budget() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.round(torch.rand(2, 3, 16, 16, generator=g) * 255) / 255
    eps = 8 / 255
    adv = project_linf(x, x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps * 1.2, eps)
    q = quantize_toward(x, adv, eps)
    assert torch.allclose(q * 255, torch.round(q * 255))
    assert (q - x).abs().max() * 255 <= 8 + 1e-4
    assert q.min() >= 0 and q.max() <= 1


def test_photo_crops_seeded_and_split() -> None:
    from trustlab.data.photos import HELDOUT_PHOTOS, TRAIN_PHOTOS, photo_crops

    assert not set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS)
    a = photo_crops(HELDOUT_PHOTOS, 4, 16, seed=3)
    b = photo_crops(HELDOUT_PHOTOS, 4, 16, seed=3)
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and float(a.std()) > 0.02
    assert not np.allclose(a.numpy(), photo_crops(HELDOUT_PHOTOS, 4, 16, seed=4).numpy())
