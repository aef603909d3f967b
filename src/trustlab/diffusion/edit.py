"""A real image edit: diffusers' ``StableDiffusionImg2ImgPipeline`` assembled from our own small components.

The pipeline is diffusers' own img2img code path (``vae.encode(...).latent_dist.sample(generator)`` times
``vae.config.scaling_factor``, noise to ``strength``, DDIM denoising with the UNet, ``vae.decode``), with
the VAE and latent UNet trained by our code. Prompts are conditioning embeddings passed as
``prompt_embeds`` (no tokenizer files are available offline), so each "prompt" is a fixed tensor.
"""

from __future__ import annotations

from typing import Any

import torch


def img2img_pipeline(vae: Any, unet: Any, scaling: float) -> Any:
    """``StableDiffusionImg2ImgPipeline`` with our VAE (latent ``scaling``) and UNet; DDIM with SD's betas."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    vae.register_to_config(scaling_factor=float(scaling))
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def edit(pipe: Any, x01: torch.Tensor, cond: torch.Tensor, strength: float, steps: int, seed: int) -> torch.Tensor:
    """Edits ``(N, 3, H, W)`` in [0, 1] of images in [0, 1] under conditioning ``cond`` ``(1, L, D)``.

    The same ``seed`` gives the same encoder sample and diffusion noise, so edits of a clean and a
    protected image are paired.
    """
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    n = x01.shape[0]
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = pipe(prompt_embeds=cond.expand(n, -1, -1).to(x01.device), image=x01, strength=strength,
               num_inference_steps=steps, guidance_scale=1.0, generator=g, output_type="pt").images
    return out.float().clamp(0, 1)
