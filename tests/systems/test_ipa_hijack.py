"""IP-Adapter hijacking: budget, a tiny diffusers StableDiffusionPipeline + IP-Adapter end to end, smoke run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trustlab.diffusion.ip_adapter import clip_preprocess, image_embeds, tiny_clip_vision
from trustlab.systems.ipa_hijack.baselines import gaussian_noise, jpeg_compress
from trustlab.systems.ipa_hijack.data import CONCEPTS, hue_rotate, render, sample
from trustlab.systems.ipa_hijack.method import HijackAttack


@pytest.mark.parametrize(("schedule", "restarts"), [("constant", 1), ("cosine", 2)])
def test_attack_budget_range_and_direction(schedule: str, restarts: int) -> None:
    enc = tiny_clip_vision(image_size=16, seed=0).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x, _ = sample(4, 16, g, exclude=0)
    target = render(torch.tensor([0]), 16, g)
    eps = 8 / 255
    adv = HijackAttack(eps, steps=10, schedule=schedule, restarts=restarts)(enc, x, target,
                                                                           torch.Generator().manual_seed(1))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        e_t = image_embeds(enc, target)
        before = torch.cosine_similarity(image_embeds(enc, x), e_t).mean()
        after = torch.cosine_similarity(image_embeds(enc, adv), e_t).mean()
    assert after > before


def test_hue_rotation_keeps_grey_and_cycles() -> None:
    g = torch.Generator().manual_seed(2)
    x, _ = sample(3, 16, g)
    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(hue_rotate(grey, torch.tensor([1.0])), grey, atol=1e-6)
    assert torch.allclose(hue_rotate(x, torch.zeros(3)), x, atol=1e-6)
    third = torch.full((3,), 2 * torch.pi / 3)
    # a third of a turn permutes the RGB channels (R->G->B)
    assert torch.allclose(hue_rotate(x, third), x[:, [2, 0, 1]], atol=1e-5)


def test_sample_excludes_target_and_defenses_keep_range() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = sample(32, 16, g, exclude=2)
    assert (y != 2).all() and set(y.tolist()) <= set(range(len(CONCEPTS)))
    for out in (jpeg_compress(x, 75), gaussian_noise(x, 0.06, g)):
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError):
        HijackAttack(eps=0.0)


def test_tiny_sd_pipeline_with_ip_adapter_end_to_end() -> None:
    """A diffusers StableDiffusionPipeline with an IP-Adapter built in code, attacked through our code."""
    from trustlab.diffusion.ip_adapter import tiny_sd_ip_pipeline

    pipe = tiny_sd_ip_pipeline(seed=0, image_size=32)
    assert pipe.unet.config.encoder_hid_dim_type == "ip_image_proj"
    enc = pipe.image_encoder
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    target = torch.rand(1, 3, 32, 32, generator=g)
    adv = HijackAttack(8 / 255, steps=5)(enc, x, target, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    pe = torch.randn(1, 4, 32, generator=g)

    def gen(img: torch.Tensor) -> torch.Tensor:
        return pipe(prompt_embeds=pe, negative_prompt_embeds=torch.zeros_like(pe),
                    ip_adapter_image=clip_preprocess(img, 32), num_inference_steps=2, height=32, width=32,
                    output_type="pt", generator=torch.Generator().manual_seed(0)).images

    out_clean, out_adv = gen(x), gen(adv)
    assert out_adv.shape == (1, 3, 32, 32) and torch.isfinite(out_adv).all()
    assert not torch.allclose(out_clean, out_adv)  # the image prompt path is live
    with torch.no_grad():
        e_t = image_embeds(enc, target)
        d0 = (image_embeds(enc, x) - e_t).norm()
        d1 = (image_embeds(enc, adv) - e_t).norm()
    assert d1 < d0


def test_smoke_run(tmp_path: Path) -> None:
    from trustlab.runner import run_system

    rec, out = run_system("ipa-hijack", "smoke", out=tmp_path / "run", device="cpu")
    assert (out / "results.json").is_file()
    methods = {r["method"] for r in rec.rows}
    assert methods == {"none", "jpeg", "noise", "adv_encoder", "jpeg_eot", "noise_eot", "adv_encoder_transfer",
                       "adv_encoder_strong"}
    s = "eps=8/255"
    claims = {c["id"]: c for c in rec.claims}
    assert claims["C3"]["holds"]
    # the paper's ordering at smoke scale: the attack moves embeddings towards the target, and the
    # robust encoder resists it better than the undefended one
    assert rec.mean("none", "target_cos", s) > rec.mean("none", "clean_target_cos", s)
    assert rec.mean("adv_encoder", "target_cos", s) < rec.mean("none", "target_cos", s)
    # adaptive attacks are attacks: BPDA through JPEG moves the JPEG'd embedding at least as far as the
    # transform-unaware attack, up to noise; the strong attack is never weaker than the plain one on the robust encoder
    assert rec.mean("jpeg_eot", "target_cos", s) > rec.mean("jpeg", "clean_target_cos", s)
    assert rec.mean("adv_encoder_strong", "target_cos", s) >= rec.mean("adv_encoder", "target_cos", s) - 0.02
    assert "C4" in claims and (out / "plots" / "success_vs_eps.png").is_file()
