"""Every PCA-experiment attack moves its own objective (fails if an attack returns its input)."""

from __future__ import annotations

import pytest
import torch

from trustlab.diffusion.unet import TinyUNetSpec, build_unet, diffusion_loss, make_scheduler, prompt_embedding
from trustlab.diffusion.vae import TinyVAESpec, build_vae, posterior
from trustlab.systems.pca.baselines import AdvDMAttack, PhotoGuardEncoderAttack, RandomNoise
from trustlab.systems.pca.method import PosteriorCollapseAttack, posterior_collapse_loss


@pytest.fixture(scope="module")
def vae():  # noqa: ANN201
    return build_vae(TinyVAESpec(image_size=16, steps=0)).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def x():  # noqa: ANN201
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _stats(vae, z):  # noqa: ANN001, ANN202
    with torch.no_grad():
        return posterior(vae, z)


def test_pca_plus_raises_the_kl(vae, x) -> None:  # noqa: ANN001
    adv = PosteriorCollapseAttack(8 / 255, 2 / 255, 5, v=1.0, ascend=True)(vae, x)
    k0 = posterior_collapse_loss(*_stats(vae, x), 1.0)
    k1 = posterior_collapse_loss(*_stats(vae, adv), 1.0)
    assert bool((k1 > k0 * 1.01).all())


@pytest.mark.parametrize("target", ["zero", "grey"])
def test_photoguard_moves_the_latent_to_its_target(vae, x, target: str) -> None:  # noqa: ANN001
    with torch.no_grad():
        z_t = 0.0 if target == "zero" else posterior(vae, torch.full_like(x, 0.5))[0]
    adv = PhotoGuardEncoderAttack(8 / 255, 2 / 255, 6, target=target)(vae, x, torch.Generator().manual_seed(1))
    d0 = (_stats(vae, x)[0] - z_t).flatten(1).norm(dim=1)
    d1 = (_stats(vae, adv)[0] - z_t).flatten(1).norm(dim=1)
    assert bool((d1 < 0.99 * d0).all())
    with pytest.raises(ValueError):
        PhotoGuardEncoderAttack(target="image")


def test_advdm_raises_the_diffusion_loss(vae, x) -> None:  # noqa: ANN001
    spec = TinyUNetSpec(block_out_channels=(16, 32))
    with torch.no_grad():
        lat = posterior(vae, x)[0]
    unet = build_unet(spec, lat.shape[1], lat.shape[-1]).eval().requires_grad_(False)
    sched, cond = make_scheduler(), prompt_embedding(spec)
    adv = AdvDMAttack(unet, sched, cond, 1.0, 8 / 255, 2 / 255, 6)(vae, x, torch.Generator().manual_seed(2))

    def expected_loss(z: torch.Tensor) -> float:
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            m = posterior(vae, z)[0]
            return float(torch.stack([diffusion_loss(unet, sched, m, cond, g).mean() for _ in range(16)]).mean())

    assert expected_loss(adv) > expected_loss(x)


def test_random_noise_moves_every_pixel(x) -> None:  # noqa: ANN001
    adv = RandomNoise(8 / 255)(None, x, torch.Generator().manual_seed(3))
    moved = (adv - x).abs()
    assert float(moved.max()) == pytest.approx(8 / 255, abs=1e-6)
    assert float((moved > 0).float().mean()) > 0.9
