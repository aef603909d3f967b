"""A small Llama-architecture causal LM trained from scratch by our own code on the embedded corpus.

The model is a genuine ``transformers.LlamaForCausalLM`` (RMSNorm, rotary attention, SwiGLU MLP),
so every code path that handles Hugging Face Llama models (``model.model.layers[i].self_attn.q_proj``
...) runs on it unchanged. This module holds the architecture and the training loop only; the caller
supplies the training token ids (a byte-level vocabulary of 256 symbols). The trained model is cached
under ``trustlab.utils.cache`` keyed by its full recipe, so tests and reruns reuse it.

Used by IMPQ as the embedded default model (:mod:`trustlab.systems.impq.tiny_model` supplies the
embedded corpus): with 8 blocks, exact Shapley values over the blocks need only 2^8 = 256 evaluations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trustlab.utils.cache import cache_path
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


@dataclass(frozen=True)
class TinyLlamaRecipe:
    """Architecture and training recipe (everything that determines the weights).

    Args:
        n_layers: Decoder blocks.
        hidden: Hidden size.
        heads: Attention heads (``hidden`` must be divisible by it).
        intermediate: SwiGLU MLP width.
        seq_len: Training context length (bytes).
        batch: Sequences per step.
        steps: Optimizer steps.
        lr: Peak AdamW learning rate (linear warm-up over 5 % of steps, cosine decay to 10 %).
        weight_decay: AdamW weight decay.
        seed: Seed of initialization and batch sampling.
        calib_fraction: Leading fraction of the corpus the caller trains on (IMPQ: ``corpus_split3(f, ...).train``;
            its calibration and evaluation text come after it and are never trained on). Part of the recipe
            (and so of the cache key) because it determines the training text.
    """

    n_layers: int = 8
    hidden: int = 128
    heads: int = 4
    intermediate: int = 320
    seq_len: int = 128
    batch: int = 16
    steps: int = 600
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    calib_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("n_layers", "hidden", "heads", "intermediate", "seq_len", "batch", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def llama_config(recipe: TinyLlamaRecipe) -> Any:
    """The ``transformers.LlamaConfig`` of a recipe (byte vocabulary, untied lm_head)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=256,
        hidden_size=recipe.hidden,
        intermediate_size=recipe.intermediate,
        num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        max_position_embeddings=max(512, recipe.seq_len),
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def build_tiny_llama(recipe: TinyLlamaRecipe) -> torch.nn.Module:
    """An untrained ``LlamaForCausalLM`` for ``recipe`` (float32, eval mode)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(llama_config(recipe))
    return model.float().eval()


def _lr_at(step: int, recipe: TinyLlamaRecipe) -> float:
    warm = max(1, int(0.05 * recipe.steps))
    if step < warm:
        return recipe.lr * (step + 1) / warm
    t = (step - warm) / max(1, recipe.steps - warm)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))


def train_tiny_llama(recipe: TinyLlamaRecipe, ids: torch.Tensor, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Train a tiny Llama on the 1-D token ids ``ids`` (values < 256; no caching).

    Args:
        recipe: The recipe.
        ids: Training token ids (byte values), longer than ``recipe.seq_len``.
        device: Training device.

    Returns:
        The trained model on CPU, in eval mode.
    """
    if ids.ndim != 1 or ids.numel() <= recipe.seq_len + 1:
        raise ValueError(f"need 1-D training ids longer than seq_len={recipe.seq_len}, got shape {tuple(ids.shape)}")
    gen = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)  # LlamaForCausalLM initialises from the global generator
    model = build_tiny_llama(recipe).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.95))
    t0 = time.time()
    last = float("nan")
    for step in progress(range(recipe.steps), desc="train tiny llama", total=recipe.steps):
        starts = torch.randint(0, ids.numel() - recipe.seq_len - 1, (recipe.batch,), generator=gen)
        x = torch.stack([ids[s : s + recipe.seq_len] for s in starts.tolist()]).to(device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe)
        out = model(input_ids=x, labels=x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = float(out.loss.detach())
        if step % 100 == 0:
            log.debug("tiny llama step %d loss %.3f", step, last)
    log.info("trained tiny llama (%d steps) in %.0f s, final train loss %.3f", recipe.steps, time.time() - t0, last)
    return model.cpu().eval()


def load_or_train_tiny_llama(recipe: TinyLlamaRecipe, ids_fn: Callable[[], torch.Tensor],
                             device: torch.device | str = "cpu") -> torch.nn.Module:
    """The trained tiny Llama of ``recipe``, from the cache when present (trained and cached otherwise).

    The cache key is the full recipe, so a changed recipe never returns stale weights; ``ids_fn`` gives the
    training ids (called only when training) and must be determined by the recipe.
    """
    from trustlab.utils.io import load_tensors, save_module

    path = cache_path("tiny_llama", {"recipe": asdict(recipe), "version": 1})
    if path.is_file():
        state, _ = load_tensors(path)
        model = build_tiny_llama(recipe)
        model.load_state_dict(state)
        log.info("loaded cached tiny llama %s", path)
        return model.eval()
    model = train_tiny_llama(recipe, ids_fn(), device)
    save_module(path, model, spec=asdict(recipe))
    return model
