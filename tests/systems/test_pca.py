"""PCA system: loss identity, budgets of every method, the protect CLI, and the smoke-scale run."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trustlab.diffusion.vae import TinyVAESpec, build_vae
from trustlab.systems.pca.baselines import PhotoGuardEncoderAttack, RandomNoise
from trustlab.systems.pca.method import PosteriorCollapseAttack, posterior_collapse_loss


@pytest.fixture(scope="module")
def vae():  # noqa: ANN201
    return build_vae(TinyVAESpec(image_size=16, steps=0)).eval().requires_grad_(False)


def test_pca_loss_is_kl_to_scaled_prior() -> None:
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    for v in (1.0, 1e-2):
        q = torch.distributions.Normal(mean.reshape(2, -1), (0.5 * logvar).exp().reshape(2, -1))
        p = torch.distributions.Normal(torch.zeros(2, 36), math.sqrt(v) * torch.ones(2, 36))
        kl = torch.distributions.kl_divergence(q, p).sum(1)
        assert torch.allclose(posterior_collapse_loss(mean, logvar, v) - 0.5 * 36 * math.log(v) * -1, kl, rtol=1e-4)


@pytest.mark.parametrize("attack", [
    PosteriorCollapseAttack(8 / 255, 1 / 255, 3),
    PosteriorCollapseAttack(8 / 255, 1 / 255, 3, v=1.0, ascend=True),
    PhotoGuardEncoderAttack(8 / 255, 1 / 255, 3),
    RandomNoise(8 / 255),
])
def test_budget_and_range(vae, attack) -> None:  # noqa: ANN001
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    adv = attack(vae, x, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_pca_minus_collapses_posterior(vae) -> None:  # noqa: ANN001
    from trustlab.diffusion.vae import posterior

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    adv = PosteriorCollapseAttack(8 / 255, 1 / 255, 5)(vae, x)
    with torch.no_grad():
        l0 = posterior_collapse_loss(*posterior(vae, x), 1e-8).mean()
        l1 = posterior_collapse_loss(*posterior(vae, adv), 1e-8).mean()
    assert l1 < l0


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        PosteriorCollapseAttack(eps=0.0)
    with pytest.raises(ValueError):
        PhotoGuardEncoderAttack(steps=0)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_protect_cli_roundtrip_and_refusals(tmp_path: Path, vae) -> None:  # noqa: ANN001
    from PIL import Image

    from trustlab.cli import main

    vae_dir = tmp_path / "vae"
    vae.save_pretrained(str(vae_dir))
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(src / "b.jpg", quality=95)
    before = {p.name: _sha(p) for p in src.iterdir()}
    out = tmp_path / "out"
    args = ["protect", str(src), "--out", str(out), "--eps", "8/255", "--steps", "2", "--vae", str(vae_dir),
            "--device", "cpu"]
    assert main(args) == 0
    for name, size in (("a.png", (37, 23)), ("b.png", (20, 20))):
        o = Image.open(out / name)
        assert o.format == "PNG" and o.size == size
        orig = np.asarray(Image.open(src / (name if name == "a.png" else "b.jpg")).convert("RGB"), dtype=np.int16)
        assert np.abs(np.asarray(o.convert("RGB"), dtype=np.int16) - orig).max() <= 8
    assert (out / "protect_report.json").is_file()
    assert {p.name: _sha(p) for p in src.iterdir()} == before
    # refuses: existing outputs without --force; writing onto the inputs; unreadable images; bad eps
    assert main(args) == 2
    assert main(["protect", str(src / "a.png"), "--out", str(src), "--vae", str(vae_dir), "--steps", "1"]) == 2
    assert {p.name: _sha(p) for p in src.iterdir()} == before
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["protect", str(bad), "--out", str(tmp_path / "o2"), "--vae", str(vae_dir)]) == 2
    assert main(["protect", str(src / "a.png"), "--out", str(tmp_path / "o3"), "--eps", "8/0"]) == 2
    assert main(["protect", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o4")]) == 2


def test_smoke_run(tmp_path: Path) -> None:
    from trustlab.runner import run_system

    rec, out = run_system("pca", "smoke", out=tmp_path / "run", device="cpu")
    assert (out / "results.json").is_file() and (out / "plots" / "grid.png").is_file()
    assert {"pca", "photoguard", "advdm", "random"} <= {r["method"] for r in rec.rows}
    claims = {c["id"]: c for c in rec.claims}
    assert claims["C2"]["holds"]  # encoder-only PCA is faster than the diffusion-loss attack
    assert claims["C4"]["holds"]  # saved budgets
    s = "vae=tiny-a"
    # PCA moves the posterior far more than visibility-matched random noise, on both VAEs
    assert rec.mean("pca", "latent_dist", s) > 2 * rec.mean("random", "latent_dist", s)
    assert rec.mean("pca", "latent_dist", "vae=tiny-b") > rec.mean("random", "latent_dist", "vae=tiny-b")
    assert rec.mean("pca", "kl", s) < rec.mean("none", "kl", s) < rec.mean("pca_plus", "kl", s)
