"""A cache folder for expensive, config-independent artifacts (e.g. a pretrained default model).

``TRUSTLAB_CACHE`` overrides the location (default ``~/.cache/trustlab``). Entries are keyed by the
hash of whatever produced them, so a changed recipe never returns a stale artifact.
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


def cache_path(namespace: str, recipe: Any, suffix: str = ".safetensors") -> Path:
    """``cache_dir()/namespace/<hash(recipe)><suffix>`` for a JSON-able ``recipe``."""
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    p = cache_dir() / namespace
    p.mkdir(parents=True, exist_ok=True)
    return p / f"{h}{suffix}"
