"""IMPQ's embedded model: the tiny Llama of :mod:`trustlab.models.tiny_llama` trained on the embedded corpus.

The training text is the leading ``recipe.calib_fraction`` of :mod:`trustlab.data.text_corpus` as bytes
(``corpus_split(f).calibration`` == ``corpus_split3(f, ...).train``); IMPQ's calibration and held-out text
come after it (:func:`trustlab.systems.impq.data.text_tokens`).
"""

from __future__ import annotations

import torch

from trustlab.data.text_corpus import byte_encode, corpus_split
from trustlab.models.tiny_llama import TinyLlamaRecipe, load_or_train_tiny_llama, train_tiny_llama


def training_ids(recipe: TinyLlamaRecipe) -> torch.Tensor:
    """Byte ids of the tiny model's training text."""
    return byte_encode(corpus_split(recipe.calib_fraction).calibration)


def train(recipe: TinyLlamaRecipe, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Train (no cache) the tiny Llama of ``recipe`` on the embedded corpus."""
    return train_tiny_llama(recipe, training_ids(recipe), device)


def load_or_train(recipe: TinyLlamaRecipe, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The cached tiny Llama of ``recipe`` (trained on the embedded corpus on first use)."""
    return load_or_train_tiny_llama(recipe, lambda: training_ids(recipe), device)
