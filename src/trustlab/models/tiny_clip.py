"""A CLIP-like dual encoder small enough to pretrain on a CPU, and an adapter for transformers' ``CLIPModel``.

Both expose the same *prompt-tuning interface* (:class:`VLBackbone`), so CoOp/PromptFL-style prompt
learners (shallow context vectors at the input, optional deep prompts at every text layer as in
VPT-deep/MaPLe) run unchanged on the embedded tiny model or on a real CLIP loaded from a local path:

* ``tokenize(texts) -> LongTensor (B, T)`` with a start token at position 0;
* ``token_embed(ids) -> (B, T, W)``;
* ``encode_text_embeds(embeds, ids, deep_prompts, ctx_len, return_hidden)`` runs the causal text
  transformer on given input embeddings, replacing positions ``1..ctx_len`` by ``deep_prompts[l]``
  before layer ``l >= 1`` and pooling at the end-of-text token;
* ``encode_image(images) -> (B, E)``; ``logit_scale`` (a float, already exponentiated).

The tiny model (:class:`TinyCLIP`) has a word-level tokenizer, a pre-LN causal transformer text tower
(Radford et al., 2021, at toy width) and an MLP image tower over ``(C, S, S)`` pixel arrays. It is
pretrained elsewhere: FVL-FP's recipe (:mod:`trustlab.systems.fvlfp.pretrain`) trains it on synthetic
image-caption pairs; this module depends on no data set.

References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
    Zhou et al., "Learning to Prompt for Vision-Language Models" (CoOp), IJCV 2022.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from trustlab.errors import UserError
from trustlab.utils.io import load_tensors, save_tensors
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

__all__ = [
    "HFCLIPBackbone",
    "TinyCLIP",
    "TinyCLIPConfig",
    "VLBackbone",
    "WordTokenizer",
]

SPECIALS = ("<pad>", "<sot>", "<eot>", "x")


@runtime_checkable
class VLBackbone(Protocol):
    """What a prompt learner needs from a (frozen) vision-language dual encoder."""

    embed_dim: int
    text_width: int
    n_text_layers: int

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor: ...

    def token_embed(self, ids: torch.Tensor) -> torch.Tensor: ...

    def encode_text_embeds(self, embeds: torch.Tensor, ids: torch.Tensor,
                           deep_prompts: Sequence[torch.Tensor | None] | None = None, ctx_len: int = 0,
                           return_hidden: bool = False) -> Any: ...

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    @property
    def logit_scale(self) -> float: ...


class WordTokenizer:
    """Whitespace word tokenizer over a fixed vocabulary (``<pad>``, ``<sot>``, ``<eot>``, ``x`` first).

    ``x`` is the CoOp context placeholder; unknown words raise ``ValueError``.

    Example:
        >>> tok = WordTokenizer(["a", "photo"], context_length=6)
        >>> tok(["a photo"]).tolist()
        [[1, 4, 5, 2, 0, 0]]
    """

    def __init__(self, words: Sequence[str], context_length: int = 16) -> None:
        vocab = list(SPECIALS) + [w for w in dict.fromkeys(words) if w not in SPECIALS]
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3, got {context_length}")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.context_length = context_length
        self.pad_id, self.sot_id, self.eot_id = 0, 1, 2

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            words = t.lower().replace(".", " ").split()
            unknown = [w for w in words if w not in self.index]
            if unknown:
                raise ValueError(f"words {unknown} are not in the vocabulary")
            ids = [self.sot_id] + [self.index[w] for w in words] + [self.eot_id]
            if len(ids) > self.context_length:
                raise ValueError(f"text {t!r} is longer than context_length={self.context_length}")
            out[i, : len(ids)] = torch.tensor(ids)
        return out


@dataclass
class TinyCLIPConfig:
    """Architecture of :class:`TinyCLIP`.

    Attributes:
        vocab: Words of the tokenizer (specials are added in front).
        context_length: Maximum token length.
        width: Text transformer width ``W``.
        layers: Text transformer depth.
        heads: Attention heads.
        embed_dim: Joint embedding size ``E``.
        image_size: Side ``S`` of the ``(image_channels, S, S)`` inputs.
        image_channels: Input channels.
        image_hidden: Hidden width of the image MLP.
        image_layers: Hidden layers of the image MLP.
    """

    vocab: list[str] = field(default_factory=list)
    context_length: int = 16
    width: int = 64
    layers: int = 2
    heads: int = 4
    embed_dim: int = 64
    image_size: int = 12
    image_channels: int = 1
    image_hidden: int = 128
    image_layers: int = 2

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        for k in ("context_length", "width", "layers", "heads", "embed_dim", "image_size", "image_channels",
                  "image_hidden", "image_layers"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")


class _Block(nn.Module):
    """Pre-LN causal transformer block (CLIP text tower layout)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


def _causal_mask(t: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full((t, t), float("-inf"), device=device, dtype=dtype).triu(1)


def _inject(h: torch.Tensor, prompt: torch.Tensor | None, ctx_len: int) -> torch.Tensor:
    """Replace positions ``1..ctx_len`` of ``h`` by ``prompt`` (``(ctx_len, W)``), VPT-deep style."""
    if prompt is None or ctx_len == 0:
        return h
    p = prompt.to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1)
    return torch.cat([h[:, :1], p, h[:, 1 + ctx_len:]], dim=1)


class TinyCLIP(nn.Module):
    """A small CLIP: word-level causal text transformer + MLP image encoder, joint space of size ``E``.

    Args:
        config: The architecture.
    """

    def __init__(self, config: TinyCLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(config.vocab, config.context_length)
        self.embed_dim = config.embed_dim
        self.text_width = config.width
        self.n_text_layers = config.layers
        self.token_embedding = nn.Embedding(len(self.tokenizer), config.width)
        self.positional_embedding = nn.Parameter(torch.randn(config.context_length, config.width) * 0.01)
        self.blocks = nn.ModuleList([_Block(config.width, config.heads) for _ in range(config.layers)])
        self.ln_final = nn.LayerNorm(config.width)
        self.text_projection = nn.Linear(config.width, config.embed_dim, bias=False)
        d_in = config.image_channels * config.image_size**2
        mods: list[nn.Module] = [nn.Flatten()]
        for _ in range(config.image_layers):
            mods += [nn.Linear(d_in, config.image_hidden), nn.GELU()]
            d_in = config.image_hidden
        mods.append(nn.Linear(d_in, config.embed_dim))
        self.visual = nn.Sequential(*mods)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # -- VLBackbone interface -------------------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        """``exp`` of the learned temperature parameter, clamped to 100 as in CLIP."""
        return float(self.log_logit_scale.detach().exp().clamp(max=100.0))

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, T)`` on the model's device."""
        return self.tokenizer(texts).to(self.token_embedding.weight.device)

    def token_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input token embeddings ``(B, T, W)``."""
        return self.token_embedding(ids)

    def encode_text_embeds(self, embeds: torch.Tensor, ids: torch.Tensor,
                           deep_prompts: Sequence[torch.Tensor | None] | None = None, ctx_len: int = 0,
                           return_hidden: bool = False) -> Any:
        """Text features from input embeddings (see the module docstring).

        Returns:
            ``(B, E)`` features, or ``(features, [per-layer (B, W) hidden states at the EOT token])``.
        """
        t = ids.shape[1]
        x = embeds + self.positional_embedding[:t]
        mask = _causal_mask(t, x.device, x.dtype)
        eot = (ids == self.tokenizer.eot_id).int().argmax(dim=1)
        rows = torch.arange(x.shape[0], device=x.device)
        hidden = []
        for i, blk in enumerate(self.blocks):
            if i > 0 and deep_prompts is not None:
                x = _inject(x, deep_prompts[i], ctx_len)
            x = blk(x, mask)
            hidden.append(x[rows, eot])
        feats = self.text_projection(self.ln_final(x)[rows, eot])
        return (feats, hidden) if return_hidden else feats

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text features of token ids."""
        return self.encode_text_embeds(self.token_embed(ids), ids)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``(B, E)`` of ``(B, C, S, S)`` arrays."""
        return self.visual(images)

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Save weights (safetensors) with the config as metadata."""
        state = {k: v.clone() for k, v in self.state_dict().items()}
        return save_tensors(path, state, {"config": asdict(self.config), **(extra or {})})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TinyCLIP:
        """Load a model saved by :meth:`save`.

        Raises:
            UserError: missing/unreadable file or a file without a TinyCLIP config.
        """
        tensors, meta = load_tensors(path)
        if "config" not in meta:
            raise UserError(f"{str(path)!r} has no TinyCLIP config metadata", "save it with TinyCLIP.save")
        model = cls(TinyCLIPConfig(**json.loads(meta["config"])))
        try:
            model.load_state_dict(tensors)
        except RuntimeError as exc:
            raise UserError(f"{str(path)!r} does not match its TinyCLIP config ({exc})", "re-export it") from exc
        return model.to(device).eval()


class HFCLIPBackbone(nn.Module):
    """Adapter giving a transformers ``CLIPModel`` the :class:`VLBackbone` interface (prompt tuning on real CLIP).

    The text tower is run layer by layer so that CoOp context vectors replace the embeddings of the
    ``"X"`` placeholders after the start token, and deep prompts replace them before later layers.

    Args:
        model: A ``transformers.CLIPModel``.
        tokenizer: Its tokenizer (``CLIPTokenizer``/``CLIPTokenizerFast`` or compatible).
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        tm = model.text_model
        self.embed_dim = int(model.config.projection_dim)
        self.text_width = int(model.config.text_config.hidden_size)
        self.n_text_layers = len(tm.encoder.layers)
        self.eos_token_id = int(getattr(tm, "eos_token_id", model.config.text_config.eos_token_id))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> HFCLIPBackbone:
        """Load ``CLIPModel`` and its tokenizer from a local folder (never downloads).

        Raises:
            UserError: the folder does not exist or does not hold a CLIP checkpoint and tokenizer.
        """
        p = Path(path)
        if not p.is_dir():
            raise UserError(f"CLIP folder {str(p)!r} does not exist",
                            "pass the local folder of a transformers CLIPModel (config.json, weights, tokenizer)")
        from transformers import AutoTokenizer, CLIPModel

        try:
            model = CLIPModel.from_pretrained(str(p), local_files_only=True, attn_implementation="eager")
            tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise UserError(f"cannot load a CLIPModel + tokenizer from {str(p)!r} ({first})",
                            "save both with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)") from exc
        return cls(model.to(device), tok)

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale)`` of the checkpoint, clamped to 100."""
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Padded token ids ``(B, T)``."""
        enc = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        return enc["input_ids"].to(self.model.logit_scale.device)

    def token_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input token embeddings (without positions)."""
        return self.model.text_model.embeddings.token_embedding(ids)

    def _eot_positions(self, ids: torch.Tensor) -> torch.Tensor:
        if self.eos_token_id == 2:  # legacy checkpoints: EOT is the highest id (as transformers does)
            return ids.int().argmax(dim=-1)
        return (ids == self.eos_token_id).int().argmax(dim=-1)

    def encode_text_embeds(self, embeds: torch.Tensor, ids: torch.Tensor,
                           deep_prompts: Sequence[torch.Tensor | None] | None = None, ctx_len: int = 0,
                           return_hidden: bool = False) -> Any:
        """Text features from input embeddings (see :class:`VLBackbone`)."""
        tm = self.model.text_model
        x = tm.embeddings(inputs_embeds=embeds)
        t = x.shape[1]
        mask = _causal_mask(t, x.device, x.dtype).clamp(min=torch.finfo(x.dtype).min)[None, None]
        eot = self._eot_positions(ids)
        rows = torch.arange(x.shape[0], device=x.device)
        hidden = []
        for i, layer in enumerate(tm.encoder.layers):
            if i > 0 and deep_prompts is not None:
                x = _inject(x, deep_prompts[i], ctx_len)
            out = layer(x, mask)
            x = out[0] if isinstance(out, tuple) else out
            hidden.append(x[rows, eot])
        feats = self.model.text_projection(tm.final_layer_norm(x)[rows, eot])
        return (feats, hidden) if return_hidden else feats

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text features of token ids (equals ``CLIPModel.get_text_features``)."""
        return self.encode_text_embeds(self.token_embed(ids), ids)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image features of preprocessed ``pixel_values``."""
        out = self.model.get_image_features(pixel_values=images)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
