"""A user's diffusers IP-Adapter pipeline: load it from a folder, attack its encoder, score real generations.

Everything the service does to an upload is taken from the pipeline itself: its ``feature_extractor``
(``CLIPImageProcessor``: shortest-edge resize, centre crop, normalisation, made differentiable by
:func:`trustlab.diffusion.ip_adapter.processor_preprocess`), its ``image_encoder`` and the IP-Adapter's
projection type (``ImageProjection``: base adapter, projected ``image_embeds``; anything else: Plus,
``hidden_states[-2]``). Adversarial images are saved as 8-bit PNG, read back with PIL and passed to
``pipe(ip_adapter_image=PIL.Image)``, so the scores are those of the real upload path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trustlab.diffusion.ip_adapter import ProcessorParams, image_embeds, plus_features
from trustlab.errors import UserError


def read_ip_adapter(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter weight file (h94 layout: ``image_proj.*`` and ``ip_adapter.*``; .safetensors or .bin)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"IP-Adapter file {str(p)!r} does not exist", "pass e.g. ip-adapter_sd15.safetensors")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(p))
            sd: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
            for k, v in flat.items():
                head, _, rest = k.partition(".")
                if head in sd:
                    sd[head][rest] = v
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise UserError(f"cannot read IP-Adapter weights {str(p)!r} ({exc})", "pass a .safetensors or .bin file") from exc
    if not sd.get("image_proj") or not sd.get("ip_adapter"):
        raise UserError(f"{str(p)!r} holds no image_proj/ip_adapter weights", "pass an IP-Adapter weight file")
    return sd


def save_ip_adapter(path: str | Path, state_dict: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write an IP-Adapter state dict as one safetensors file in the h94 layout."""
    from trustlab.utils.io import save_tensors

    flat = {f"{head}.{k}": v for head, part in state_dict.items() for k, v in part.items()}
    return save_tensors(path, flat)


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, Path]:
    """A ``CLIPVisionModelWithProjection`` from a folder (or its ``image_encoder/`` subfolder)."""
    from transformers import CLIPVisionModelWithProjection

    p = Path(path)
    if (p / "image_encoder" / "config.json").is_file():
        p = p / "image_encoder"
    if not (p / "config.json").is_file():
        raise UserError(f"{str(path)!r} holds no image encoder (no config.json or image_encoder/config.json)",
                        "pass a CLIPVisionModelWithProjection folder")
    try:
        enc = CLIPVisionModelWithProjection.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load CLIPVisionModelWithProjection from {str(p)!r} ({exc})", "check the folder") from exc
    return enc.to(device).float().eval().requires_grad_(False), p


def load_pipeline(path: str | Path, ip_adapter: str | Path | None = None, image_encoder: str | Path | None = None,
                  device: torch.device | str = "cpu") -> Any:
    """A diffusers pipeline from a local folder, with an image encoder, a processor and an IP-Adapter.

    Raises:
        UserError: the folder is not a pipeline, or no encoder/IP-Adapter can be found.
    """
    from diffusers import DiffusionPipeline

    p = Path(path)
    if not (p / "model_index.json").is_file():
        raise UserError(f"{str(p)!r} is not a diffusers pipeline folder (no model_index.json)",
                        "pass the folder written by pipe.save_pretrained (e.g. a Stable Diffusion checkout)")
    import json

    absent = {k: None for k, v in json.loads((p / "model_index.json").read_text()).items()
              if isinstance(v, list) and v[0] is None}
    absent["safety_checker"] = None
    try:
        pipe = DiffusionPipeline.from_pretrained(str(p), local_files_only=True, **absent)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"cannot load the pipeline in {str(p)!r} ({exc})", "check the folder's files") from exc
    if not hasattr(pipe, "load_ip_adapter") or not hasattr(pipe, "image_encoder"):
        raise UserError(f"the pipeline in {str(p)!r} ({type(pipe).__name__}) takes no image prompts",
                        "pass a Stable Diffusion (IP-Adapter capable) pipeline")
    if image_encoder is not None:
        pipe.register_modules(image_encoder=load_encoder(image_encoder)[0])
    if pipe.image_encoder is None:
        raise UserError(f"the pipeline in {str(p)!r} has no image_encoder", "pass --image-encoder DIR")
    if pipe.feature_extractor is None:
        from transformers import CLIPImageProcessor

        s = int(pipe.image_encoder.config.image_size)
        pipe.register_modules(feature_extractor=CLIPImageProcessor(size={"shortest_edge": s},
                                                                   crop_size={"height": s, "width": s}))
    if getattr(pipe.unet, "encoder_hid_proj", None) is None:
        if ip_adapter is None:
            raise UserError(f"the pipeline in {str(p)!r} has no IP-Adapter loaded", "pass --ip-adapter FILE")
        try:
            pipe.load_ip_adapter(read_ip_adapter(ip_adapter), subfolder="", weight_name="")
        except (KeyError, RuntimeError, ValueError) as exc:
            raise UserError(f"the IP-Adapter {str(ip_adapter)!r} does not fit this pipeline ({exc})",
                            "pass the adapter trained for this base model") from exc
    pipe.set_progress_bar_config(disable=True)
    pipe.image_encoder.float().eval().requires_grad_(False)
    return pipe if torch.device(device) == pipe.device else pipe.to(device)


def feature_kind(pipe: Any) -> str:
    """``"embeds"`` for a base IP-Adapter (``ImageProjection``), ``"plus"`` otherwise (hidden states)."""
    from diffusers.models.embeddings import ImageProjection

    layers = pipe.unet.encoder_hid_proj.image_projection_layers
    return "embeds" if isinstance(layers[0], ImageProjection) else "plus"


def feature_fn(pipe: Any, kind: str | None = None) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """The differentiable feature the pipeline's adapter consumes, through its own processor."""
    params = ProcessorParams.from_processor(pipe.feature_extractor)
    kind = kind or feature_kind(pipe)
    fn = image_embeds if kind == "embeds" else plus_features
    return lambda encoder, x01: fn(encoder, x01, params)


def processor_features(pipe: Any, images: list[Any], kind: str | None = None) -> torch.Tensor:
    """Features of PIL images through the pipeline's *real* ``CLIPImageProcessor`` (no gradients)."""
    kind = kind or feature_kind(pipe)
    px = pipe.feature_extractor(images=images, return_tensors="pt").pixel_values.to(pipe.image_encoder.device)
    with torch.no_grad():
        out = pipe.image_encoder(pixel_values=px.float(), output_hidden_states=kind == "plus")
    return out.image_embeds if kind == "embeds" else out.hidden_states[-2]


def prompt_kwargs(pipe: Any, prompt: str) -> dict[str, Any]:
    """``prompt=`` for pipelines with a tokenizer; otherwise embeddings of the BOS/EOS tokens (tiny pipelines)."""
    if getattr(pipe, "tokenizer", None) is not None:
        return {"prompt": prompt, "negative_prompt": ""}
    te = pipe.text_encoder
    ids = torch.tensor([[te.config.bos_token_id, te.config.eos_token_id]], device=te.device)
    with torch.no_grad():
        emb = te(ids)[0]
    return {"prompt_embeds": emb, "negative_prompt_embeds": torch.zeros_like(emb)}


def generate(pipe: Any, image: Any, prompt: str, steps: int, seed: int, size: int | None = None) -> torch.Tensor:
    """One generation ``(3, H, W)`` in [0, 1] from ``pipe(ip_adapter_image=image)`` with a fixed seed."""
    kw: dict[str, Any] = {"height": size, "width": size} if size else {}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = pipe(ip_adapter_image=image, num_inference_steps=steps, generator=g, output_type="pt",
                   guidance_scale=1.0 if getattr(pipe, "tokenizer", None) is None else 7.5, **kw,
                   **prompt_kwargs(pipe, prompt)).images
    return out[0].float().cpu().clamp(0, 1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row cosine of flattened features."""
    return F.cosine_similarity(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), dim=1)


def tiny_pipeline_folder(out: str | Path, seed: int = 0, image_size: int = 32) -> tuple[Path, Path]:
    """Write a tiny random IP-Adapter-capable Stable Diffusion pipeline (no IP-Adapter loaded) and its adapter file.

    Returns ``(pipeline_dir, ip_adapter_file)``; built in code, no downloads (for tests and the demo).
    """
    from trustlab.diffusion.ip_adapter import ip_adapter_state_dict, tiny_sd_ip_pipeline

    pipe = tiny_sd_ip_pipeline(seed=seed, image_size=image_size)
    state = ip_adapter_state_dict(pipe.unet, pipe.image_encoder.config.projection_dim, seed=seed + 2)
    encoder, processor = pipe.image_encoder, pipe.feature_extractor
    pipe.unload_ip_adapter()  # also drops the encoder and processor: register them again
    pipe.register_modules(image_encoder=encoder, feature_extractor=processor)
    out = Path(out)
    pipe.save_pretrained(str(out / "pipeline"))
    return out / "pipeline", save_ip_adapter(out / "ip_adapter.safetensors", state)
