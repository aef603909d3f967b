"""Explicit randomness: seed once at the entry point, pass generators everywhere else.

(Pattern from Lightning/PyG ``seed_everything`` and diffusers' ``generator=`` arguments.)
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA) and return the seed.

    Call it once per run unit at the entry point, never inside library functions.

    Args:
        seed: The seed.
        deterministic: Also ask torch for deterministic algorithms.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded with ``seed`` on ``device``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def make_rng(seed: int) -> np.random.Generator:
    """A NumPy ``default_rng`` seeded with ``seed``."""
    return np.random.default_rng(seed)


def derive_seed(seed: int, *keys: object) -> int:
    """A stable sub-seed for ``keys`` (e.g. a client id), independent of Python's hash salt."""
    import hashlib

    h = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(h[:4], "little")
