"""A local Hugging Face causal LM as a :class:`~trustlab.llm.base.Backend` (by name, path or GGUF file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.llm.base import Backend, ChatRequest, Completion, Message
from trustlab.utils.logging import get_logger

log = get_logger(__name__)


def render_chat(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The prompt text of a chat: the tokenizer's chat template, or a plain transcript without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


class HFBackend(Backend):
    """Greedy (or seeded sampling) generation with a ``transformers`` causal LM, in left-padded batches.

    Args:
        model: A model id / local folder, or an already built ``PreTrainedModel`` (then pass ``tokenizer``).
        tokenizer: The tokenizer when ``model`` is an object.
        gguf_file: GGUF file name inside the ``model`` folder (loaded and de-quantised by transformers).
        device: ``"cpu"``, ``"cuda"``, or a :class:`torch.device`.
        batch_size: Prompts generated together.
        local_files_only: Never contact the Hugging Face hub (default: True; pass False to allow
            downloading a model by name).
        name: Identifier recorded with answers (default: the model id/path).
        dtype: Torch dtype for loading (default float32 on CPU).

    Raises:
        UserError: the model cannot be found or loaded.
    """

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any | None = None,
        gguf_file: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        local_files_only: bool = True,
        name: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        if isinstance(model, (str, Path)):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            kw: dict[str, Any] = {"local_files_only": local_files_only}
            if gguf_file:
                kw["gguf_file"] = gguf_file
            try:
                tok = tokenizer or AutoTokenizer.from_pretrained(str(model), **kw)
                lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype, **kw)
            except (OSError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise UserError(
                    f"cannot load causal LM {str(model)!r}{f' ({gguf_file})' if gguf_file else ''}: {first}",
                    "pass a local model folder (or set local_files_only=False to download by name)",
                ) from exc
            self.name = name or (f"{model}/{gguf_file}" if gguf_file else str(model))
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer= with a model object")
            lm, tok = model, tokenizer
            self.name = name or type(model).__name__
        self.model = lm.to(self.device).eval()
        self.tokenizer = tok
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.no_grad()
    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Generate each request; requests with different decoding parameters are run separately."""
        out: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple[int, float, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_tokens, r.temperature, r.seed if r.temperature > 0 else 0), []).append(i)
        for (max_tokens, temperature, seed), idx in groups.items():
            for j, c in zip(idx, self._generate_group([requests[i] for i in idx], max_tokens, temperature, seed),
                            strict=True):
                out[j] = c
        return [c for c in out if c is not None]

    def _generate_group(self, reqs: Sequence[ChatRequest], max_tokens: int, temperature: float, seed: int
                        ) -> list[Completion]:
        tok = self.tokenizer
        texts = [render_chat(tok, r.messages) for r in reqs]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kw: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id,
                              "return_dict_in_generate": True, "output_scores": True}
        if temperature > 0:
            torch.manual_seed(seed)  # explicit per-request seed; greedy decoding needs none
            kw.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kw.update(do_sample=False)
        gen = self.model.generate(**enc, **kw)
        new = gen.sequences[:, enc["input_ids"].shape[1]:]
        scores = self.model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True)
        eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.pad_token_id}
        comps = []
        for row, sc in zip(new.tolist(), scores, strict=True):
            n = len(row)
            finish = "length"
            for t, tid in enumerate(row):
                if tid in eos_ids:
                    n, finish = t, "stop"
                    break
            lp = float(sc[:n].float().sum()) if n > 0 else 0.0
            text = tok.decode(row[:n], skip_special_tokens=True).strip()
            comps.append(Completion(text=text, logprob=lp, n_tokens=n, finish_reason=finish))
        return comps
