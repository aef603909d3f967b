"""Tiled encoder gradients (partition, equivalence, memory bound) and the best-iterate PGD option."""

from __future__ import annotations

import pytest
import torch

from trustlab.diffusion.pgd import linf_pgd
from trustlab.diffusion.profiling import Measure
from trustlab.diffusion.tiling import encoder_loss_and_grad, tile_boxes
from trustlab.diffusion.vae import TinyVAESpec, build_vae, posterior
from trustlab.systems.pca.method import PosteriorCollapseAttack, posterior_collapse_loss


@pytest.fixture(scope="module")
def vae():  # noqa: ANN201
    return build_vae(TinyVAESpec(block_out_channels=(8, 16, 16), image_size=32, steps=0)).eval().requires_grad_(False)


def _kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return posterior_collapse_loss(mean, logvar, 1.0).sum()


def test_tile_boxes_partition_the_image() -> None:
    cover = torch.zeros(40, 56, dtype=torch.int64)
    for (y0, y1, x0, x1), (cy0, cy1, cx0, cx1) in tile_boxes(40, 56, 16, 8, 4):
        cover[y0:y1, x0:x1] += 1
        assert cy0 <= y0 and cy1 >= y1 and cx0 <= x0 and cx1 >= x1
    assert bool((cover == 1).all())
    with pytest.raises(ValueError):
        tile_boxes(41, 56, 16, 8, 4)


def test_single_tile_equals_whole_image_gradient(vae) -> None:  # noqa: ANN001
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    l0, g0 = encoder_loss_and_grad(vae, x, _kl, tile=None)
    l1, g1 = encoder_loss_and_grad(vae, x, _kl, tile=32)
    assert torch.allclose(l0, l1) and torch.allclose(g0, g1)


def test_tiled_gradient_agrees_and_bounds_memory(vae) -> None:  # noqa: ANN001
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with Measure("cpu") as full:
        lf, gf = encoder_loss_and_grad(vae, x, _kl, tile=None)
    with Measure("cpu") as tiled:
        lt, gt = encoder_loss_and_grad(vae, x, _kl, tile=32, margin=16)
    with Measure("cpu") as one:
        encoder_loss_and_grad(vae, x[..., :64, :64], _kl, tile=None)  # one context-sized tile
    # the tiled loss is the whole-image loss up to per-tile GroupNorm statistics
    assert abs(float(lt) - float(lf)) / abs(float(lf)) < 0.2
    agree = float((gt.sign() == gf.sign()).float().mean())
    assert agree > 0.75, agree
    # memory: one context tile's worth (plus the image-sized gradient buffer), far below the whole image
    assert tiled.peak_mb < 0.5 * full.peak_mb
    assert tiled.peak_mb < 1.5 * one.peak_mb + 2 * x.numel() * 4 / 2**20


def test_tiled_pca_lowers_the_whole_image_loss(vae) -> None:  # noqa: ANN001
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    adv = PosteriorCollapseAttack(8 / 255, 2 / 255, 4, tile=32, margin=8)(vae, x)
    ref = PosteriorCollapseAttack(8 / 255, 2 / 255, 4)(vae, x)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        before, after, after_ref = (posterior_collapse_loss(*posterior(vae, z), 1e-8).sum() for z in (x, adv, ref))
    assert after < before
    assert before - after > 0.5 * (before - after_ref)


def test_best_iterate_is_never_worse_than_the_last() -> None:
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 4)
    x = torch.rand(2, 3, 4, 4)

    def score(xa: torch.Tensor) -> torch.Tensor:
        return ((xa - 0.5) * w).sum((1, 2, 3)) + torch.cos(20 * xa).sum((1, 2, 3))

    def loss(xa: torch.Tensor, step: int) -> torch.Tensor:
        return score(xa).sum()

    last = linf_pgd(x, loss, 8 / 255, 4 / 255, 10, maximize=True)
    best = linf_pgd(x, loss, 8 / 255, 4 / 255, 10, maximize=True, score_fn=score)
    assert bool((score(best) >= score(last) - 1e-6).all())
    assert bool((score(best) > score(x)).all())
    with pytest.raises(ValueError):
        linf_pgd(x, None, 8 / 255, 1 / 255, 1, maximize=True)
