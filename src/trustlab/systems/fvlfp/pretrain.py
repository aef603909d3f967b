"""The tiny CLIP's pretraining recipe on FairVL image-caption pairs (moved here from ``models/tiny_clip``).

``trustlab.models.tiny_clip`` is the model only (no data dependency); this module draws the biased
captioned corpus from :mod:`trustlab.data.fair_vl`, pretrains a :class:`~trustlab.models.tiny_clip.TinyCLIP`
with a multi-positive contrastive loss and caches it (safetensors, keyed by the recipe's hash: the same
cache files as before the move).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.data.fair_vl import TEMPLATES, FairVLSpec, make_captions, make_world, sample_batch
from trustlab.errors import UserError
from trustlab.models.tiny_clip import TinyCLIP, TinyCLIPConfig
from trustlab.utils.cache import cache_path
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)

__all__ = ["PretrainRecipe", "load_or_pretrain", "multi_positive_clip_loss", "pretrain_tiny_clip"]


@dataclass
class PretrainRecipe:
    """Everything that determines the pretrained tiny CLIP (its hash is the cache key).

    Attributes:
        world: :class:`trustlab.data.fair_vl.FairVLSpec` fields.
        n_pairs: Image-caption pairs in the pretraining corpus.
        corr: ``P(group = class mod G)`` in the corpus (the planted "web" bias; ``1/G`` = none).
        p_group: Probability that a caption names the group.
        p_class: Probability that a caption names the class.
        epochs: Passes over the corpus.
        batch_size: Contrastive batch size.
        lr: AdamW learning rate.
        seed: Seed of the corpus draw and of the initialisation.
        model: :class:`TinyCLIPConfig` fields except ``vocab`` (filled from the captions).
    """

    world: dict[str, Any] = field(default_factory=dict)
    n_pairs: int = 6000
    corr: float = 0.9
    p_group: float = 0.8
    p_class: float = 0.9
    epochs: int = 25
    batch_size: int = 256
    lr: float = 2e-3
    seed: int = 1234
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_pairs < 2 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("n_pairs and batch_size must be >= 2 and epochs >= 1")
        for k in ("corr", "p_group", "p_class"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {getattr(self, k)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def _vocab_for(spec: Any) -> list[str]:
    words = [w for t in TEMPLATES for w in t.replace("{g}", "").replace("{c}", "").split()]
    return words + list(spec.class_names) + list(spec.group_names)


def multi_positive_clip_loss(img: torch.Tensor, txt: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss where every pair with the same caption *content* key is a positive (UniCL).

    Args:
        img: ``(B, E)`` normalised image features.
        txt: ``(B, E)`` normalised text features.
        keys: ``(B,)`` integer content key of each caption (same key = same meaning).
        scale: Logit scale (exp of the temperature parameter).
    """
    logits = scale * img @ txt.t()
    pos = (keys[:, None] == keys[None, :]).float()
    target = pos / pos.sum(dim=1, keepdim=True)
    return 0.5 * (-(target * logits.log_softmax(dim=1)).sum(1).mean() - (target * logits.log_softmax(dim=0)).sum(0).mean())


def pretrain_tiny_clip(recipe: PretrainRecipe, device: str | torch.device = "cpu") -> tuple[TinyCLIP, dict[str, Any]]:
    """Pretrain a :class:`TinyCLIP` on a FairVL image-caption corpus.

    Returns:
        The model (eval mode) and training info (final loss, seconds).
    """
    spec = FairVLSpec(**recipe.world)
    world = make_world(spec)
    rng = np.random.default_rng([recipe.seed, 1])
    batch = sample_batch(world, recipe.n_pairs, recipe.corr, rng)
    caps = make_captions(spec, batch.labels, batch.groups, rng, recipe.p_group, recipe.p_class)
    mcfg = TinyCLIPConfig(vocab=_vocab_for(spec), image_size=spec.image_size, **recipe.model)
    torch.manual_seed(recipe.seed)
    model = TinyCLIP(mcfg).to(device)
    uniq = sorted(set(caps))
    cap_idx = torch.tensor([uniq.index(c) for c in caps], device=device)
    # content key: which class word and which group word the caption names (template-independent)
    def _key(c: str) -> int:
        ws = c.split()
        ci = next((i for i, n in enumerate(spec.class_names) if n in ws), spec.n_classes)
        gi = next((i for i, n in enumerate(spec.group_names) if n in ws), spec.n_groups)
        return ci * (spec.n_groups + 1) + gi
    keys_u = torch.tensor([_key(c) for c in uniq], device=device)
    ids_u = model.tokenize(uniq)
    images = batch.images.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    n = recipe.n_pairs
    steps = recipe.epochs * math.ceil(n / recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    t0, loss_v = time.time(), float("nan")
    model.train()
    for _ in progress(range(recipe.epochs), desc="pretrain tiny CLIP"):
        perm = torch.randperm(n, generator=gen).to(device)
        for s in range(0, n, recipe.batch_size):
            idx = perm[s: s + recipe.batch_size]
            if len(idx) < 2:
                continue
            img = F.normalize(model.encode_image(images[idx]), dim=-1)
            txt_u = F.normalize(model.encode_text(ids_u), dim=-1)  # few unique captions: encode once
            txt = txt_u[cap_idx[idx]]
            loss = multi_positive_clip_loss(img, txt, keys_u[cap_idx[idx]], model.log_logit_scale.exp().clamp(max=100))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_v = float(loss.detach())
    model.eval()
    info = {"final_loss": loss_v, "seconds": time.time() - t0, "n_unique_captions": len(uniq)}
    log.info("pretrained tiny CLIP: loss %.3f in %.1f s", loss_v, info["seconds"])
    return model, info


def load_or_pretrain(recipe: PretrainRecipe, device: str | torch.device = "cpu",
                     use_cache: bool = True) -> tuple[TinyCLIP, dict[str, Any]]:
    """Return the cached model of ``recipe`` or pretrain and cache it (safetensors)."""
    path = cache_path("tiny_clip", asdict(recipe))
    if use_cache and path.is_file():
        try:
            model = TinyCLIP.load(path, device)
            log.info("tiny CLIP from cache %s", path)
            return model, {"cached": True, "path": str(path)}
        except UserError:
            log.warning("cached tiny CLIP %s unreadable; pretraining again", path)
    model, info = pretrain_tiny_clip(recipe, device)
    if use_cache:
        model.save(path, {"recipe": asdict(recipe), "info": info})
    return model, {**info, "cached": False, "path": str(path)}
