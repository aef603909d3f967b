"""A tiny text encoder (``transformers.CLIPTextModel``) trained jointly with the latent UNet on photo captions.

No tokenizer files can be downloaded, so prompts are tokenised by a word-level vocabulary built in
code (``a photo of <photo name>``, the names of :data:`trustlab.data.photos.TRAIN_PHOTOS`). Each
training crop is captioned with the photo it was cut from; 10 % of captions are dropped to the empty
prompt (classifier-free training). At edit time a prompt such as ``"a photo of coins"`` steers the
img2img edit towards that photo's look, and ``"a photo"`` is the generic prompt of AdvDM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
MAX_LEN = 8


def vocabulary() -> dict[str, int]:
    """Word -> id (specials first, then ``a photo of`` and the training photos' names)."""
    from trustlab.data.photos import TRAIN_PHOTOS

    words = list(SPECIALS) + ["a", "photo", "of"] + list(TRAIN_PHOTOS)
    return {w: i for i, w in enumerate(words)}


def tokenize(texts: list[str]) -> torch.Tensor:
    """``(N, MAX_LEN)`` ids: ``<bos> words <eos> <pad>...``; unknown words map to ``<unk>``."""
    vocab = vocabulary()
    out = torch.zeros(len(texts), MAX_LEN, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [vocab["<bos>"]] + [vocab.get(w, vocab["<unk>"]) for w in t.lower().split()][:MAX_LEN - 2] + [vocab["<eos>"]]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


def build_text_encoder(seed: int = 0, hidden: int = 32) -> Any:
    """An untrained tiny ``CLIPTextModel`` over :func:`vocabulary`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=len(vocabulary()), max_position_embeddings=MAX_LEN, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(cfg)


def embed(text_encoder: Any, texts: list[str]) -> torch.Tensor:
    """``last_hidden_state`` ``(N, MAX_LEN, hidden)`` of ``texts`` (what SD feeds the UNet)."""
    dev = next(text_encoder.parameters()).device
    return text_encoder(input_ids=tokenize(texts).to(dev)).last_hidden_state


def caption(name: str) -> str:
    """The training caption of a crop of photo ``name``."""
    return f"a photo of {name}"


@dataclass(frozen=True)
class TextUNetSpec:
    """Recipe of the jointly trained text encoder + latent UNet (cache key)."""

    block_out_channels: tuple[int, ...] = (32, 64)
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    drop_prob: float = 0.1
    seed: int = 0

    def recipe(self) -> dict[str, Any]:
        """JSON-able recipe."""
        return {"kind": "tiny-text-unet", "v": 1, **asdict(self)}


def train_text_unet(spec: TextUNetSpec, latents: torch.Tensor, captions: list[str],
                    device: str | torch.device = "cpu") -> tuple[Any, Any, float]:
    """Train UNet and text encoder jointly with the LDM loss; returns ``(unet, text_encoder, final_loss)``."""
    from trustlab.diffusion.unet import TinyUNetSpec, build_unet, make_scheduler

    uspec = TinyUNetSpec(block_out_channels=spec.block_out_channels, cross_attention_dim=32, seed=spec.seed)
    unet = build_unet(uspec, latents.shape[1], latents.shape[-1]).to(device)
    text = build_text_encoder(spec.seed + 1).to(device)
    sched = make_scheduler()
    ids_all = tokenize(captions)
    empty = tokenize([""])
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text.parameters()), lr=spec.lr)
    g = torch.Generator().manual_seed(spec.seed)
    unet.train()
    text.train()
    loss = torch.zeros(())
    for _ in progress(range(spec.steps), desc="train text encoder + UNet"):
        idx = torch.randint(0, latents.shape[0], (spec.batch_size,), generator=g)
        ids = ids_all[idx].clone()
        drop = torch.rand(spec.batch_size, generator=g) < spec.drop_prob
        ids[drop] = empty
        z0 = latents[idx].to(device)
        t = torch.randint(0, 1000, (spec.batch_size,), generator=g).to(device)
        n = torch.randn(z0.shape, generator=g).to(device)
        cond = text(input_ids=ids.to(device)).last_hidden_state
        pred = unet(sched.add_noise(z0, n, t), t, encoder_hidden_states=cond).sample
        loss = (pred - n).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    log.info("trained text encoder + UNet: final loss %.4f", float(loss.detach()))
    return unet.eval().requires_grad_(False), text.eval().requires_grad_(False), float(loss.detach())


def load_or_train_text_unet(spec: TextUNetSpec, vae: Any, vae_recipe: dict[str, Any], images: torch.Tensor,
                            captions: list[str], scaling: float,
                            device: str | torch.device = "cpu") -> tuple[Any, Any, float]:
    """Cached :func:`train_text_unet` on ``images``' posterior-mean latents (times ``scaling``)."""
    from trustlab.diffusion.unet import TinyUNetSpec, build_unet
    from trustlab.diffusion.vae import posterior
    from trustlab.utils.cache import cache_path
    from trustlab.utils.io import load_tensors, save_tensors

    path = cache_path("diffusion-text-unet", {"spec": spec.recipe(), "vae": vae_recipe, "scaling": scaling,
                                              "n_images": int(images.shape[0]), "captions": sorted(set(captions))})
    with torch.no_grad():
        lat = torch.cat([posterior(vae, images[i:i + 64].to(device))[0] for i in range(0, images.shape[0], 64)])
    if path.is_file():
        state, meta = load_tensors(path)
        unet = build_unet(TinyUNetSpec(block_out_channels=spec.block_out_channels, seed=spec.seed), lat.shape[1],
                          lat.shape[-1])
        text = build_text_encoder(spec.seed + 1)
        unet.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("unet.")})
        text.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("text.")})
        return (unet.to(device).eval().requires_grad_(False), text.to(device).eval().requires_grad_(False),
                float(meta.get("final_loss", "nan")))
    unet, text, final = train_text_unet(spec, lat * scaling, captions, device)
    state = {**{f"unet.{k}": v.clone() for k, v in unet.state_dict().items()},
             **{f"text.{k}": v.clone() for k, v in text.state_dict().items()}}
    save_tensors(path, state, {"recipe": spec.recipe(), "final_loss": str(final)})
    return unet, text, final
