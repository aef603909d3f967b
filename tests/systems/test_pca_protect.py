"""`trustlab protect`: the shipped default VAE (warning, no training), JPEG output within budget, tiled CLI runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trustlab.diffusion.vae import TinyVAESpec, build_vae


def _photo(h: int, w: int) -> np.ndarray:
    from trustlab.data.photos import load_photo

    return (load_photo("chelsea")[:h, :w] * 255).round().astype(np.uint8)


def test_default_vae_is_shipped_with_sd_topology() -> None:
    from trustlab.diffusion.default_vae import ASSET, default_vae_info, load_default_vae
    from trustlab.diffusion.vae import downsample_factor

    assert ASSET.is_file() and ASSET.stat().st_size < 8 * 2**20
    vae = load_default_vae()
    assert downsample_factor(vae) == 8 and vae.config.latent_channels == 4
    assert len(vae.config.block_out_channels) == 4
    info = default_vae_info()
    assert info["heldout_psnr_db"] > 12 and info["steps_run"] > 0  # a trained VAE (random ones give ~12 dB)


def test_jpeg_output_keeps_the_budget_after_decoding() -> None:
    from trustlab.systems.pca.cli import decode_jpeg, jpeg_within_budget

    x = torch.from_numpy(_photo(48, 64).copy()).permute(2, 0, 1).float() / 255
    eps = 8 / 255
    s = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    adv = (x + eps * s).clamp(0, 1)
    data, dec = jpeg_within_budget(x, adv, eps, quality=95)
    again = decode_jpeg(data)
    assert torch.equal(again, dec)
    assert float((again - x).abs().max()) <= eps + 1e-6
    assert float((again - x).abs().mean()) > 0.5 / 255  # the perturbation survives, it is not dropped
    # a naive JPEG of the perturbed image overshoots the budget, which is why the correction exists
    from trustlab.systems.pca.cli import jpeg_bytes

    assert float((decode_jpeg(jpeg_bytes(adv, 95)) - x).abs().max()) > eps


def test_protect_cli_default_vae_warns_tiles_and_writes_jpeg(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from trustlab.cli import main

    src = tmp_path / "photo.png"
    Image.fromarray(_photo(72, 88)).save(src)
    out = tmp_path / "out"
    assert main(["protect", str(src), "--out", str(out), "--steps", "2", "--tile", "64", "--margin", "8",
                 "--format", "jpeg", "--quality", "95", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "--vae" in err and "warning" in err.lower()
    o = Image.open(out / "photo.jpg")
    assert o.format == "JPEG" and o.size == (88, 72)
    diff = np.abs(np.asarray(o.convert("RGB"), dtype=np.int16) - _photo(72, 88).astype(np.int16))
    assert diff.max() <= 8 and diff.mean() > 0.3
    assert main(["protect", str(src), "--out", str(tmp_path / "o2"), "--tile", "60"]) == 2
    assert main(["protect", str(src), "--out", str(tmp_path / "o3"), "--format", "gif"]) == 2


def test_protect_cli_with_a_user_vae_does_not_warn(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from trustlab.cli import main

    vae = build_vae(TinyVAESpec(image_size=16, steps=0))
    vae.save_pretrained(str(tmp_path / "vae"))
    src = tmp_path / "p.png"
    Image.fromarray(_photo(24, 24)).save(src)
    assert main(["protect", str(src), "--out", str(tmp_path / "o"), "--steps", "1", "--vae", str(tmp_path / "vae"),
                 "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err.lower()


def test_default_vae_recipe_trains_saves_and_reloads(tmp_path: Path) -> None:
    from trustlab.diffusion.default_vae import (
        DefaultVAERecipe,
        load_default_vae,
        save_default_vae,
        train_default_vae,
    )

    vae, info = train_default_vae(DefaultVAERecipe(steps=2, n_train=32, batch_size=4), eval_every=1000)
    assert info["steps_run"] == 2 and info["scaling_factor"] > 0 and "heldout_psnr_db" in info
    path = save_default_vae(vae, info, tmp_path / "v.safetensors")
    again = load_default_vae(path=path)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(vae.encode(x).latent_dist.mean, again.encode(x).latent_dist.mean)
    assert again.config.scaling_factor == pytest.approx(info["scaling_factor"])


def test_protect_vae_is_channels_last_and_gives_the_same_gradient() -> None:
    """`protect` keeps the VAE channels-last for speed; the PGD step it drives is the same."""
    from trustlab.diffusion.default_vae import load_default_vae
    from trustlab.diffusion.tiling import encoder_loss_and_grad
    from trustlab.systems.pca.cli import load_vae
    from trustlab.systems.pca.method import posterior_collapse_loss

    cl = load_vae("default", torch.device("cpu"))
    conv = next(m for m in cl.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = load_default_vae(torch.device("cpu"))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return posterior_collapse_loss(mean, logvar, 1e-8).sum()

    _, g0 = encoder_loss_and_grad(plain, x, loss)
    _, g1 = encoder_loss_and_grad(cl, x.contiguous(memory_format=torch.channels_last), loss)
    assert float((g0 - g1).abs().max() / g0.abs().max()) < 1e-3
    assert float((g0.sign() == g1.sign()).float().mean()) > 0.999
