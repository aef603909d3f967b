"""The tiny text encoder (word vocabulary, joint training) and the img2img edit built from our components."""

from __future__ import annotations

import torch

from trustlab.diffusion.edit import edit, img2img_pipeline
from trustlab.diffusion.text import TextUNetSpec, embed, tokenize, train_text_unet
from trustlab.diffusion.vae import TinyVAESpec, build_vae


def test_tokenize_is_word_level_with_bos_eos() -> None:
    ids = tokenize(["a photo of coins", "A PHOTO", "unknownword"])
    assert ids.shape == (3, 8)
    assert ids[0, 0] == 1 and ids[0, 5] == 2 and ids[1, 3] == 2
    assert ids[2, 1] == 3  # <unk>
    assert torch.equal(tokenize(["a photo of coins"]), ids[:1])


def test_joint_training_conditions_on_the_prompt_and_edits_are_paired() -> None:
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(32, 4, 8, 8, generator=g)
    lat[16:] += 2.0  # two "photos" with different latent statistics
    caps = ["a photo of coins"] * 16 + ["a photo of grass"] * 16
    unet, text, final = train_text_unet(TextUNetSpec(block_out_channels=(16, 32), steps=30, batch_size=8), lat, caps)
    assert final < 1.5
    with torch.no_grad():
        e1, e2 = embed(text, ["a photo of coins"]), embed(text, ["a photo of grass"])
    assert float((e1 - e2).abs().max()) > 1e-3
    vae = build_vae(TinyVAESpec(image_size=16, steps=0)).eval()
    pipe = img2img_pipeline(vae, unet, 1.0)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a, b = edit(pipe, x, e1, 0.5, 6, seed=3), edit(pipe, x, e1, 0.5, 6, seed=3)
    assert torch.equal(a, b)  # same seed: the same sample and noise (clean/protected edits are paired)
    assert float((edit(pipe, x, e2, 0.5, 6, seed=3) - a).abs().mean()) > 0  # the prompt changes the edit
