"""A cache folder for expensive, config-independent artifacts (e.g. a pretrained default model).

``TRUSTLAB_CACHE`` overrides the location (default ``~/.cache/trustlab``). Entries are keyed by the
hash of whatever produced them, so a changed recipe never returns a stale artifact.

Trained artifacts are also keyed by torch's intra-op thread count: float reductions (and so a model
trained for a few thousand steps) differ with the number of threads, so a run at 1 thread must never
reuse a model another run trained at 2. With the key, a run's figures depend on its config and thread
count only, never on what happened to be in the cache (``trustlab reproduce --check`` relies on it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """The cache root (created on demand)."""
    p = Path(os.environ.get("TRUSTLAB_CACHE", Path.home() / ".cache" / "trustlab"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_path(namespace: str, recipe: Any, suffix: str = ".safetensors", *, threads: bool = True) -> Path:
    """``cache_dir()/namespace/<hash(recipe)><suffix>`` for a JSON-able ``recipe``.

    ``threads``: include torch's current intra-op thread count in the key (default; for anything computed
    with torch floats). ``False`` for artifacts that do not depend on it (generated audio, converted files).
    """
    key: Any = recipe
    if threads:
        import torch

        key = {"recipe": recipe, "torch_threads": torch.get_num_threads()}
    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    p = cache_dir() / namespace
    p.mkdir(parents=True, exist_ok=True)
    return p / f"{h}{suffix}"
