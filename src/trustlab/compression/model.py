"""Model plumbing for per-block quantization: finding blocks, Hessians, weight banks, NLL.

A *block* is one transformer decoder layer (``model.model.layers[i]`` for Llama/Qwen/Gemma/Mistral,
``transformer.h[i]`` for GPT-2 style, ``gpt_neox.layers[i]``); its players in IMPQ are the block's
``nn.Linear`` weights, quantized together. Embeddings, norms and ``lm_head`` stay in float.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from trustlab.compression.backends import Backend
from trustlab.errors import UserError
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)

_BLOCK_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "layers")


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The decoder blocks of a causal LM as ``(fully-qualified name, module)`` pairs.

    Raises:
        UserError: no known block container (``model.layers``, ``transformer.h``...) was found.
    """
    for path in _BLOCK_PATHS:
        obj: object = model
        ok = True
        for part in path.split("."):
            if not hasattr(obj, part):
                ok = False
                break
            obj = getattr(obj, part)
        if ok and isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return [(f"{path}.{i}", blk) for i, blk in enumerate(obj)]
    raise UserError(f"cannot find the decoder blocks of {type(model).__name__}",
                    "use a causal LM with model.layers / transformer.h / gpt_neox.layers")


def block_linears(block: nn.Module, prefix: str = "") -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules of a block, keyed by fully-qualified name (``prefix.sub.name``)."""
    return {f"{prefix}.{n}" if prefix else n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def all_block_linears(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """Per block, its linear modules by fully-qualified name."""
    return [block_linears(blk, name) for name, blk in find_blocks(model)]


def block_param_counts(model: nn.Module) -> list[int]:
    """Number of quantized weights (linear weights only) per block."""
    return [sum(m.weight.numel() for m in lins.values()) for lins in all_block_linears(model)]


@torch.no_grad()
def mean_nll(model: nn.Module, tokens: torch.Tensor, batch_size: int = 8,
             cache: PrefixCache | None = None) -> float:
    """Mean next-token negative log-likelihood (nats/token) of ``tokens`` (``(n, seq_len)`` ids).

    Every row is scored independently; the first token of each row is context only. With a
    :class:`PrefixCache` (installed on ``model``), blocks whose inputs and weights are unchanged since
    the previous call return their cached outputs instead of being recomputed.
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, tokens.shape[0], batch_size):
        x = tokens[i : i + batch_size].to(device)
        if cache is not None:
            cache.batch_key = hash(x.cpu().numpy().tobytes())
        logits = model(input_ids=x).logits[:, :-1].float()
        tgt = x[:, 1:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="sum")
        total += float(loss)
        count += tgt.numel()
    if cache is not None:
        cache.batch_key = None
    return total / count


def perplexity(model: nn.Module, tokens: torch.Tensor, batch_size: int = 8) -> float:
    """``exp(mean_nll)`` (capped at 1e30 so JSON stays finite)."""
    return float(min(math.exp(min(mean_nll(model, tokens, batch_size), 69.0)), 1e30))


@torch.no_grad()
def collect_hessians(model: nn.Module, tokens: torch.Tensor, batch_size: int = 8,
                     names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """GPTQ proxy Hessians ``H = 2/n Σ x xᵀ`` of every block linear's inputs on calibration tokens.

    The inputs are those of the *full-precision* model (all layers' Hessians from one pass).
    """
    wanted = set(names) if names is not None else None
    hess: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def make_hook(fqn: str):  # noqa: ANN202
        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double().cpu()
            if fqn not in hess:
                hess[fqn] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
                counts[fqn] = 0
            hess[fqn] += x.T @ x
            counts[fqn] += x.shape[0]
        return hook

    for lins in all_block_linears(model):
        for fqn, lin in lins.items():
            if wanted is None or fqn in wanted:
                hooks.append(lin.register_forward_hook(make_hook(fqn)))
    try:
        device = next(model.parameters()).device
        for i in range(0, tokens.shape[0], batch_size):
            model(input_ids=tokens[i : i + batch_size].to(device))
    finally:
        for h in hooks:
            h.remove()
    return {k: (2.0 / counts[k] * v).float() for k, v in hess.items()}


class PrefixCache:
    """Reuse of unchanged block prefixes across forward passes of a :class:`WeightBank` model.

    Block ``i``'s output depends only on the input tokens and on the weights of blocks ``0..i``. The
    cache wraps every block's ``forward``: it keeps, per batch of tokens, the block's last output
    together with the bank states of blocks ``0..i`` that produced it, and returns that output when
    the states are the same again. Along an SPQE trajectory consecutive evaluations differ in one
    block ``π(k)``, so blocks ``0..π(k)-1`` are skipped (on average about half of the blocks); the
    outputs are the very tensors the full forward pass would compute. Use as a context manager
    (the wrappers are removed on exit) and pass it to :func:`mean_nll`.

    Args:
        model: The model whose blocks to wrap.
        bank: The weight bank that sets the blocks' weights (its ``state_`` is the cache key).
    """

    def __init__(self, model: nn.Module, bank: WeightBank) -> None:
        self.model = model
        self.bank = bank
        self.batch_key: int | None = None
        self.hits = 0
        self.misses = 0
        self._store: list[dict[int, tuple[tuple[int | None, ...], object]]] = []
        self._blocks = [blk for _, blk in find_blocks(model)]

    def _wrap(self, i: int, blk: nn.Module):  # noqa: ANN202
        orig = blk.forward

        def forward(*args: object, **kwargs: object) -> object:
            sig = tuple(self.bank.state_[: i + 1])
            key = self.batch_key
            hit = self._store[i].get(key) if key is not None else None
            if hit is not None and hit[0] == sig:
                self.hits += 1
                return hit[1]
            self.misses += 1
            out = orig(*args, **kwargs)
            if key is not None:
                self._store[i][key] = (sig, out)
            return out

        return forward

    def install(self) -> PrefixCache:
        """Wrap every block's ``forward`` (an empty cache); returns ``self``."""
        self._store = [{} for _ in self._blocks]
        for i, blk in enumerate(self._blocks):
            blk.forward = self._wrap(i, blk)  # instance attribute shadows the class method
        return self

    def remove(self) -> None:
        """Restore the blocks' own ``forward`` and drop the cached outputs."""
        for blk in self._blocks:
            if "forward" in blk.__dict__:
                del blk.forward
        self._store = []

    def __enter__(self) -> PrefixCache:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()


class WeightBank:
    """Pre-quantized weights of every block at every bit width, for in-place plan switching.

    Building the bank quantizes each block linear once per bit width (with the chosen backend);
    :meth:`set_bits` then applies any per-block bit vector by copying weights in place, so the many
    evaluations of SPQE and of the allocators cost only forward passes.

    Args:
        model: The float model (its current weights are kept as the float reference).
        backend: The quantization backend.
        bits: Bit widths to prepare (e.g. ``(2, 4)``).
        hessians: Per-linear Hessians (required by ``gptq``).
    """

    def __init__(self, model: nn.Module, backend: Backend, bits: Sequence[int],
                 hessians: dict[str, torch.Tensor] | None = None) -> None:
        if not bits:
            raise ValueError("bits must not be empty")
        if backend.needs_hessian and hessians is None:
            raise ValueError(f"backend {backend.name!r} needs calibration Hessians")
        self.model = model
        self.backend = backend
        self.bits = tuple(int(b) for b in bits)
        self.linears_ = all_block_linears(model)
        self.float_ = [{k: m.weight.detach().clone() for k, m in lins.items()} for lins in self.linears_]
        self.quant_: dict[int, list[dict[str, torch.Tensor]]] = {}
        for b in self.bits:
            per_block = []
            for lins in progress(self.linears_, desc=f"{backend.name} {b}-bit"):
                per_block.append({k: backend.quantize_weight(m.weight.detach().float().cpu(), b, (hessians or {}).get(k))
                                  .to(device=m.weight.device, dtype=m.weight.dtype) for k, m in lins.items()})
            self.quant_[b] = per_block
        self.state_: list[int | None] = [None] * len(self.linears_)

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return len(self.linears_)

    @torch.no_grad()
    def set_bits(self, bits_per_block: Sequence[int | None]) -> None:
        """Put block ``i`` at ``bits_per_block[i]`` bits (``None``: float) by copying weights in place."""
        if len(bits_per_block) != self.n_blocks:
            raise ValueError(f"need {self.n_blocks} bit entries, got {len(bits_per_block)}")
        for i, b in enumerate(bits_per_block):
            b = None if b is None else int(b)
            if self.state_[i] == b:
                continue
            if b is not None and b not in self.quant_:
                raise ValueError(f"bank has no {b}-bit weights (prepared: {self.bits})")
            src = self.float_[i] if b is None else self.quant_[b][i]
            for k, m in self.linears_[i].items():
                m.weight.data.copy_(src[k])
            self.state_[i] = b

    def restore(self) -> None:
        """Put every block back to float."""
        self.set_bits([None] * self.n_blocks)
