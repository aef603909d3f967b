"""IP-Adapter pieces built in code from diffusers/transformers components (no downloads).

* :func:`tiny_clip_vision` - a tiny ``CLIPVisionModelWithProjection`` (the image encoder).
* :class:`ProcessorParams` / :func:`processor_preprocess` - differentiable ``CLIPImageProcessor``:
  shortest-edge bicubic resize (antialiased), centre crop, normalisation, read from the service's
  processor, so attacks optimise through the same preprocessing the service applies to the uploaded PIL image.
* :func:`image_embeds` / :func:`plus_features` - the base IP-Adapter feature (projected ``image_embeds``)
  and the IP-Adapter Plus feature (``hidden_states[-2]``).
* :func:`ip_adapter_state_dict` - a base IP-Adapter state dict (``image_proj`` = ``ImageProjection`` with
  4 tokens, ``ip_adapter`` = ``to_k_ip``/``to_v_ip`` per cross-attention layer) laid out exactly as
  ``h94/IP-Adapter`` files, so ``pipe.load_ip_adapter(state_dict)`` or ``unet._load_ip_adapter_weights``
  install decoupled cross-attention (Ye et al., "IP-Adapter", arXiv:2308.06721).
* :func:`tiny_sd_ip_pipeline` - a tiny ``StableDiffusionPipeline`` with that IP-Adapter loaded.
* :class:`TinyIPGenerator` - the default scale's image-prompt generator: a pixel-space
  ``UNet2DConditionModel`` with the IP-Adapter installed and a DDIM sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_vision(image_size: int = 16, patch_size: int = 4, hidden: int = 32, layers: int = 2,
                     projection_dim: int = 32, seed: int = 0) -> Any:
    """A tiny ``CLIPVisionModelWithProjection`` initialised from ``seed``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                           projection_dim=projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(cfg)


@dataclass(frozen=True)
class ProcessorParams:
    """What ``CLIPImageProcessor`` does to an upload: resize the shortest edge, centre-crop, normalise.

    Attributes:
        shortest_edge: Target of the shortest edge (``None``: no resize).
        crop: ``(height, width)`` of the centre crop (``None``: no crop).
        mean: Normalisation mean per channel.
        std: Normalisation std per channel.
    """

    shortest_edge: int | None
    crop: tuple[int, int] | None
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_processor(cls, proc: Any) -> ProcessorParams:
        """Parameters of a ``CLIPImageProcessor`` (shortest-edge resize only; fixed-size resizes are squashed)."""
        size = getattr(proc, "size", None) or {}
        if not getattr(proc, "do_resize", True):
            edge = None
        elif "shortest_edge" in size:
            edge = int(size["shortest_edge"])
        else:
            raise ValueError(f"only shortest-edge resizing is supported, got size={size}")
        crop_size = getattr(proc, "crop_size", None) or {}
        crop = (int(crop_size["height"]), int(crop_size["width"])) if getattr(proc, "do_center_crop", False) else None
        mean = tuple(proc.image_mean) if getattr(proc, "do_normalize", True) else (0.0, 0.0, 0.0)
        std = tuple(proc.image_std) if getattr(proc, "do_normalize", True) else (1.0, 1.0, 1.0)
        return cls(edge, crop, mean, std)

    @classmethod
    def for_encoder(cls, encoder: Any) -> ProcessorParams:
        """The CLIP default for ``encoder``: shortest edge and crop = its ``image_size``."""
        s = int(encoder.config.image_size)
        return cls(s, (s, s))


def resized_size(h: int, w: int, shortest_edge: int) -> tuple[int, int]:
    """Output ``(h, w)`` of a shortest-edge resize, as transformers' ``get_resize_output_image_size``."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def processor_preprocess(x01: torch.Tensor, params: ProcessorParams) -> torch.Tensor:
    """Differentiable ``CLIPImageProcessor`` on ``(N, 3, H, W)`` images in [0, 1] -> ``pixel_values``."""
    h, w = x01.shape[-2:]
    if params.shortest_edge is not None:
        nh, nw = resized_size(h, w, params.shortest_edge)
        if (nh, nw) != (h, w):
            x01 = F.interpolate(x01, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    if params.crop is not None:
        ch, cw = params.crop
        h, w = x01.shape[-2:]
        if ch > h or cw > w:
            x01 = F.pad(x01, ((max(cw - w, 0) + 1) // 2, max(cw - w, 0) // 2, (max(ch - h, 0) + 1) // 2,
                              max(ch - h, 0) // 2))
            h, w = x01.shape[-2:]
        top, left = (h - ch) // 2, (w - cw) // 2
        x01 = x01[..., top:top + ch, left:left + cw]
    mean = torch.tensor(params.mean, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(params.std, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    return (x01 - mean) / std


def clip_preprocess(x01: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP preprocessing with shortest edge and crop ``size`` (square inputs: bicubic resize + normalise)."""
    return processor_preprocess(x01, ProcessorParams(size, (size, size)))


def image_embeds(encoder: Any, x01: torch.Tensor, params: ProcessorParams | None = None) -> torch.Tensor:
    """Base IP-Adapter feature: the projected ``image_embeds`` of images in [0, 1] (through ``params``)."""
    params = params or ProcessorParams.for_encoder(encoder)
    return encoder(pixel_values=processor_preprocess(x01, params)).image_embeds


def plus_features(encoder: Any, x01: torch.Tensor, params: ProcessorParams | None = None) -> torch.Tensor:
    """IP-Adapter Plus feature: the penultimate hidden states ``(N, tokens, hidden)``."""
    params = params or ProcessorParams.for_encoder(encoder)
    return encoder(pixel_values=processor_preprocess(x01, params), output_hidden_states=True).hidden_states[-2]


def ip_adapter_state_dict(unet: Any, image_embed_dim: int, num_tokens: int = 4, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A freshly initialised base IP-Adapter state dict for ``unet`` in the ``h94/IP-Adapter`` layout.

    Keys: ``image_proj.{proj,norm}.{weight,bias}`` and ``ip_adapter.{k}.to_{k,v}_ip.weight`` with
    k = 1, 3, 5, ... over the UNet's cross-attention processors in ``attn_processors`` order.
    """
    from diffusers.models.embeddings import ImageProjection

    if num_tokens != 4:
        raise ValueError("diffusers infers 4 tokens for the base ImageProjection layout")
    cad = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        proj = ImageProjection(cross_attention_dim=cad, image_embed_dim=image_embed_dim, num_image_text_embeds=num_tokens)
    image_proj = {k.replace("image_embeds.", "proj."): v.detach().clone() for k, v in proj.state_dict().items()}
    ip: dict[str, torch.Tensor] = {}
    key_id = 1
    boc = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = boc[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(boc))[int(name[len("up_blocks.")])]
        else:
            hidden = boc[int(name[len("down_blocks.")])]
        bound = 1.0 / cad**0.5
        ip[f"{key_id}.to_k_ip.weight"] = (torch.rand(hidden, cad, generator=g) * 2 - 1) * bound
        ip[f"{key_id}.to_v_ip.weight"] = (torch.rand(hidden, cad, generator=g) * 2 - 1) * bound
        key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip}


def tiny_sd_ip_pipeline(seed: int = 0, image_size: int = 32) -> Any:
    """A tiny ``StableDiffusionPipeline`` (random weights) with a base IP-Adapter loaded through ``load_ip_adapter``.

    Components follow diffusers' own tests (CLIP text encoder of width 32, 2-block VAE and UNet) and
    need no tokenizer files: call it with ``prompt_embeds``/``negative_prompt_embeds`` of width 32.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=image_size // 2,
                                    in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                    norm_num_groups=8, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            latent_channels=4, norm_num_groups=8, sample_size=image_size)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                            num_hidden_layers=2, vocab_size=1000, bos_token_id=0, eos_token_id=2,
                                            pad_token_id=1))
    encoder = tiny_clip_vision(image_size=image_size, patch_size=8, projection_dim=32, seed=seed + 1)
    fe = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                            image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=fe, image_encoder=encoder,
                                   requires_safety_checker=False)
    pipe.load_ip_adapter(ip_adapter_state_dict(unet, 32, seed=seed + 2), subfolder="", weight_name="")
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TinyIPGenerator(torch.nn.Module):
    """Pixel-space image-prompt generator: UNet2DConditionModel + installed IP-Adapter + DDIM sampling.

    The text branch gets a fixed benign "prompt" embedding; the image branch gets the IP-Adapter
    tokens of the uploaded image's ``image_embeds`` (decoupled cross-attention, scale 1).

    Args:
        image_size: Side of the generated images.
        embed_dim: Width of the image encoder's ``image_embeds``.
        channels: UNet block widths.
        prompt_tokens: Length of the text conditioning.
        prediction: ``"sample"`` (the UNet predicts x0; converges to recognisable images in a few hundred
            CPU steps) or ``"epsilon"`` (Stable Diffusion's noise prediction).
        seed: Initialisation seed.
    """

    def __init__(self, image_size: int = 16, embed_dim: int = 32, channels: tuple[int, ...] = (32, 64),
                 prompt_tokens: int = 4, prediction: str = "sample", seed: int = 0) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        if prediction not in ("sample", "epsilon"):
            raise ValueError(f"prediction must be 'sample' or 'epsilon', got {prediction!r}")
        self.prediction = prediction
        if image_size % 2 ** (len(channels) - 1):
            raise ValueError("image_size must be divisible by the UNet's down-sampling")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.unet = UNet2DConditionModel(
                sample_size=image_size, in_channels=3, out_channels=3, block_out_channels=tuple(channels),
                layers_per_block=1, down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1),
                up_block_types=("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",),
                cross_attention_dim=32, norm_num_groups=8, attention_head_dim=8)
            self.prompt = torch.nn.Parameter(torch.randn(1, prompt_tokens, 32) * 0.5, requires_grad=False)
        self.unet._load_ip_adapter_weights(ip_adapter_state_dict(self.unet, embed_dim, seed=seed + 1))
        self.image_size = image_size

    def scheduler(self) -> Any:
        """The DDIM scheduler (cosine schedule) matching the prediction type."""
        from diffusers import DDIMScheduler

        return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                             set_alpha_to_one=True, prediction_type=self.prediction)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """UNet output (x0 or noise, see ``prediction``) given image embeddings ``(B, D)``."""
        b = x_t.shape[0]
        return self.unet(x_t, t, encoder_hidden_states=self.prompt.expand(b, -1, -1),
                         added_cond_kwargs={"image_embeds": [embeds[:, None, :]]}).sample

    def ip_tokens(self, embeds: torch.Tensor) -> torch.Tensor:
        """The IP-Adapter's projected image tokens ``(B, 4, 32)`` for image embeddings ``(B, D)``."""
        return self.unet.encoder_hid_proj([embeds[:, None, :]])[0][:, 0]

    @torch.no_grad()
    def generate(self, embeds: torch.Tensor, steps: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM (eta 0) samples in [0, 1] for image embeddings ``(B, D)``."""
        sched = self.scheduler()
        sched.set_timesteps(steps)
        x = torch.randn(embeds.shape[0], 3, self.image_size, self.image_size, generator=generator).to(embeds.device)
        for t in sched.timesteps:
            x = sched.step(self.eps(x, t.expand(x.shape[0]).to(x.device), embeds), t, x).prev_sample
        return ((x + 1) / 2).clamp(0, 1)
