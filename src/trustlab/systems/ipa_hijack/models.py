"""The tiny service trained by our code (cached by recipe): image encoder, IP-Adapter generator, judge.

* Image encoder: a tiny ``CLIPVisionModelWithProjection`` made discriminative by zero-shot-style training
  against fixed unit "text" prototypes, one per concept (CE over 10 * cosine similarities), with a
  random hue rotation of every training image (SimCLR-style colour distortion), so that, like
  real encoders, it recognises concepts by their texture rather than by absolute colour. A random
  encoder maps all images close together, which would make both attack and defense meaningless.
* Generator: :class:`~trustlab.diffusion.ip_adapter.TinyIPGenerator` trained like IP-Adapter, i.e. to
  reconstruct an image from its own (frozen-encoder) image embedding plus a fixed prompt
  (x0-prediction, cosine schedule, DDIM sampling).
* Judge: a small CNN concept classifier trained on renders with blur/noise augmentation; it scores
  generations (the paper's NSFW detector plays this role).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.diffusion.ip_adapter import TinyIPGenerator, image_embeds, tiny_clip_vision
from trustlab.systems.ipa_hijack.data import CONCEPTS, hue_rotate, sample
from trustlab.utils.cache import cache_path
from trustlab.utils.io import load_tensors, save_tensors
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    """Recipe of the tiny service (cache key)."""

    image_size: int = 16
    encoder_steps: int = 600
    generator_steps: int = 300
    generator_channels: tuple[int, ...] = (16, 32)
    classifier_steps: int = 200
    batch_size: int = 32
    seed: int = 0

    def recipe(self, part: str) -> dict[str, Any]:
        """JSON-able recipe of ``part`` (cache key; v5 = textured concepts + hue-rotated encoder training)."""
        return {"kind": f"ipa-{part}", "v": 5, **asdict(self)}


def prototypes(dim: int, seed: int = 0) -> torch.Tensor:
    """Fixed orthonormal concept prototypes ``(K, dim)`` (stand-ins for class-text embeddings)."""
    g = torch.Generator().manual_seed(seed + 31)
    q, _ = torch.linalg.qr(torch.randn(dim, len(CONCEPTS), generator=g))
    return q.T.contiguous()


def _to(module: Any, device: torch.device | str) -> Any:
    """``module.to(device)`` only when it is elsewhere (diffusers warns on every ``.to``)."""
    p = next(module.parameters(), None)
    return module if p is None or p.device == torch.device(device) else module.to(device)


def _batch(spec: ServiceSpec, g: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = sample(spec.batch_size, spec.image_size, g)
    return x.to(device), y.to(device)


def train_encoder(spec: ServiceSpec, device: torch.device | str = "cpu") -> Any:
    """Discriminative tiny CLIP image encoder."""
    enc = tiny_clip_vision(image_size=spec.image_size, patch_size=4, seed=spec.seed).to(device)
    protos = prototypes(enc.config.projection_dim, spec.seed).to(device)
    opt = torch.optim.AdamW(enc.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(spec.seed)
    enc.train()
    for _ in progress(range(spec.encoder_steps), desc="train encoder"):
        x, y = _batch(spec, g, device)
        x = hue_rotate(x, (2 * math.pi * torch.rand(x.shape[0], generator=g)).to(device))
        logits = 10 * F.normalize(image_embeds(enc, x), dim=-1) @ protos.T
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return enc.eval().requires_grad_(False)


class Judge(nn.Module):
    """Small CNN concept classifier (scores generated images)."""

    def __init__(self, k: int = len(CONCEPTS)) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(128, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0, 1]."""
        return self.net(x * 2 - 1)


def train_judge(spec: ServiceSpec, device: torch.device | str = "cpu") -> Judge:
    """Concept classifier with blur/noise augmentation (generations are blurrier than renders)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed + 5)
        judge = Judge().to(device)
    opt = torch.optim.Adam(judge.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(spec.seed + 5)
    for _ in progress(range(spec.classifier_steps), desc="train judge"):
        x, y = sample(spec.batch_size, spec.image_size, g)
        if torch.rand(1, generator=g) < 0.5:
            x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = (x + 0.08 * torch.rand(1, generator=g) * torch.randn(x.shape, generator=g)).clamp(0, 1)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(judge(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return judge.eval().requires_grad_(False)


def train_generator(spec: ServiceSpec, encoder: Any, device: torch.device | str = "cpu") -> TinyIPGenerator:
    """IP-Adapter-style training: reconstruct an image from its own image embedding (frozen encoder)."""
    gen = TinyIPGenerator(image_size=spec.image_size, embed_dim=encoder.config.projection_dim,
                          channels=tuple(spec.generator_channels), seed=spec.seed)
    gen = _to(gen, device)
    sched = gen.scheduler()
    params = [p for p in gen.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(spec.generator_steps, 1))
    g = torch.Generator().manual_seed(spec.seed + 11)
    gen.train()
    for _ in progress(range(spec.generator_steps), desc="train IP generator"):
        x, _ = _batch(spec, g, device)
        with torch.no_grad():
            emb = image_embeds(encoder, x)
        x0 = x * 2 - 1
        t = torch.randint(0, 1000, (x.shape[0],), generator=g).to(device)
        n = torch.randn(x0.shape, generator=g).to(device)
        target = x0 if gen.prediction == "sample" else n
        loss = (gen.eps(sched.add_noise(x0, n, t), t, emb) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
    return gen.eval().requires_grad_(False)


def _cached(part: str, spec: ServiceSpec, build: Any, train: Any, device: torch.device | str) -> Any:
    path = cache_path("ipa-hijack", spec.recipe(part))
    module = build()
    if path.is_file():
        module.load_state_dict(load_tensors(path)[0])
        return _to(module, device).eval().requires_grad_(False)
    module = train()
    save_tensors(path, {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
                 {"recipe": spec.recipe(part)})
    return _to(module, device)


def load_service(spec: ServiceSpec, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Encoder, generator and judge of ``spec`` on ``device`` (trained once, then loaded from the cache)."""
    encoder = _cached("encoder", spec, lambda: tiny_clip_vision(image_size=spec.image_size, patch_size=4, seed=spec.seed),
                      lambda: train_encoder(spec, device), device)
    judge = _cached("judge", spec, Judge, lambda: train_judge(spec, device), device)
    generator = _cached("generator", spec,
                        lambda: TinyIPGenerator(image_size=spec.image_size, embed_dim=encoder.config.projection_dim,
                                                channels=tuple(spec.generator_channels), seed=spec.seed),
                        lambda: train_generator(spec, encoder, device), device)
    return {"encoder": encoder, "judge": judge, "generator": generator}
