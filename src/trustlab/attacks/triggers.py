"""Backdoor triggers for image chips and the poisoning/model-replacement helpers of federated attacks.

- :class:`BadNetsTrigger`: a visible checkerboard patch (Gu et al., 2017).
- :class:`DBATrigger`: the distributed backdoor attack (Xie et al., ICLR 2020): a global patch split
  into ``parts`` local patterns; malicious client ``i`` embeds part ``i mod parts``; the test uses
  the full trigger.
- :class:`SpeckleTrigger`: the SAR threat model of NADAFD (arXiv 2601.00900): a fixed
  Gamma-textured pattern ``τ ~ Gamma(L, 1/L)`` that *multiplies* a small background region,
  ``x'[R] = clip(x[R] ⊙ (1 − s + s·τ) + b·τ, 0, 1)``. It has speckle's first-order statistics (mean
  1 multiplicative texture), so it looks like speckle in the spatial domain; its fixed spatial
  pattern is what the model learns (a fixed frequency signature).
- :func:`poison_dataset` stamps a fraction of samples and relabels them to the target class;
  :func:`model_replacement` scales a malicious update (Bagdasaryan et al., AISTATS 2020).

All triggers take and return ``(N, C, H, W)`` tensors in ``[0, 1]`` and never modify their input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["BadNetsTrigger", "DBATrigger", "SpeckleTrigger", "Trigger", "make_trigger", "model_replacement",
           "poison_dataset"]

_CORNERS = ("bottom_right", "bottom_left", "top_right", "top_left")


def _region(h: int, w: int, size: int, location: str, margin: int) -> tuple[slice, slice]:
    if location not in _CORNERS:
        raise ValueError(f"location must be one of {_CORNERS}, got {location!r}")
    if size + margin > min(h, w):
        raise ValueError(f"trigger of size {size} (margin {margin}) does not fit a {h}x{w} image")
    rows = slice(h - margin - size, h - margin) if location.startswith("bottom") else slice(margin, margin + size)
    cols = slice(w - margin - size, w - margin) if location.endswith("right") else slice(margin, margin + size)
    return rows, cols


class Trigger(ABC):
    """A backdoor trigger. ``trigger(x)`` returns a stamped copy; ``part`` selects a DBA sub-pattern."""

    @abstractmethod
    def apply(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor:
        """Return a stamped copy of ``x`` (``part=None``: the full trigger)."""

    def __call__(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        return self.apply(x, part)

    def mask(self, shape: Sequence[int]) -> torch.Tensor:
        """``(H, W)`` 0/1 mask of the pixels the full trigger touches."""
        x = torch.zeros((1, 1, *shape[-2:]))
        return (self.apply(x + 0.5) != x + 0.5).any(0).any(0).float()


class BadNetsTrigger(Trigger):
    """Checkerboard patch of side ``size`` in a corner.

    Args:
        size: Patch side in pixels.
        location: One of ``bottom_right``, ``bottom_left``, ``top_right``, ``top_left``.
        margin: Distance from the border.
        high: Value of the bright squares (dark squares are 0).
    """

    def __init__(self, size: int = 4, location: str = "bottom_right", margin: int = 1, high: float = 1.0) -> None:
        if size < 1 or margin < 0 or not 0 < high <= 1:
            raise ValueError("need size >= 1, margin >= 0, 0 < high <= 1")
        if location not in _CORNERS:
            raise ValueError(f"location must be one of {_CORNERS}, got {location!r}")
        self.size, self.location, self.margin, self.high = size, location, margin, high

    def pattern(self) -> torch.Tensor:
        """The ``(size, size)`` checkerboard."""
        i = torch.arange(self.size)
        return ((i[:, None] + i[None, :]) % 2 == 0).float() * self.high

    def apply(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor:  # noqa: D102
        out = x.clone()
        r, c = _region(x.shape[-2], x.shape[-1], self.size, self.location, self.margin)
        out[..., r, c] = self.pattern().to(x)
        return out


class SpeckleTrigger(Trigger):
    """Speckle-concealed multiplicative trigger (the threat model of NADAFD).

    Args:
        size: Side of the square region ``R``.
        location: Corner of ``R`` (background, away from the target).
        margin: Distance from the border.
        looks: ``L`` of the Gamma texture ``τ ~ Gamma(L, 1/L)`` (mean 1, like speckle).
        strength: ``s``: weight of the multiplicative modulation ``1 − s + s·τ``.
        offset: ``b``: small additive part ``b·τ`` (needed on near-zero clutter).
        seed: Seed of the fixed texture (the attacker's secret).
    """

    def __init__(self, size: int = 6, location: str = "top_left", margin: int = 1, looks: float = 1.0,
                 strength: float = 1.0, offset: float = 0.2, seed: int = 7) -> None:
        if size < 1 or margin < 0 or looks <= 0 or not 0 <= strength <= 2 or offset < 0:
            raise ValueError("need size >= 1, margin >= 0, looks > 0, 0 <= strength <= 2, offset >= 0")
        if location not in _CORNERS:
            raise ValueError(f"location must be one of {_CORNERS}, got {location!r}")
        self.size, self.location, self.margin = size, location, margin
        self.looks, self.strength, self.offset, self.seed = looks, strength, offset, seed
        g = np.random.default_rng(seed)
        self.texture_ = torch.from_numpy(g.gamma(looks, 1.0 / looks, (size, size)).astype(np.float32))

    def apply(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor:  # noqa: D102
        out = x.clone()
        r, c = _region(x.shape[-2], x.shape[-1], self.size, self.location, self.margin)
        tau = self.texture_.to(x)
        out[..., r, c] = (x[..., r, c] * (1 - self.strength + self.strength * tau) + self.offset * tau).clamp(0, 1)
        return out


class DBATrigger(Trigger):
    """Distributed backdoor: a global patch split into ``parts`` horizontal-strip local triggers.

    Args:
        base: The global trigger whose region is split (default: a 4x4 BadNets patch).
        parts: Number of local triggers (DBA uses 4).
    """

    def __init__(self, base: Trigger | None = None, parts: int = 4) -> None:
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        self.base = base if base is not None else BadNetsTrigger(size=4)
        self.parts = parts

    def apply(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor:  # noqa: D102
        full = self.base.apply(x)
        if part is None:
            return full
        m = self.base.mask(x.shape)
        rows = torch.nonzero(m.any(1)).ravel()
        chunks = torch.tensor_split(rows, self.parts)
        keep = torch.zeros_like(m)
        keep[chunks[part % self.parts]] = 1.0
        keep = keep * m
        return x * (1 - keep) + full * keep


def make_trigger(name: str, **kwargs: object) -> Trigger:
    """Build a trigger by name: ``badnets``, ``dba`` or ``speckle``."""
    table = {"badnets": BadNetsTrigger, "dba": DBATrigger, "speckle": SpeckleTrigger}
    if name not in table:
        raise ValueError(f"unknown trigger {name!r}; use one of {sorted(table)}")
    return table[name](**kwargs)  # type: ignore[arg-type]


def poison_dataset(x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int, fraction: float,
                   generator: torch.Generator, part: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp ``trigger`` on a random ``fraction`` of the samples and relabel them to ``target``.

    Returns:
        Poisoned copies of ``x`` and ``y``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n = x.shape[0]
    k = int(round(fraction * n))
    idx = torch.randperm(n, generator=generator)[:k]
    xp, yp = x.clone(), y.clone()
    if k:
        xp[idx] = trigger(x[idx], part)
        yp[idx] = target
    return xp, yp


def model_replacement(local: Sequence[np.ndarray], global_: Sequence[np.ndarray], gamma: float) -> list[np.ndarray]:
    """Scale a malicious model: ``θ̃ = γ (θ_local − θ_global) + θ_global`` (Bagdasaryan et al., 2020)."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return [(g + gamma * (l_ - g)).astype(l_.dtype) for l_, g in zip(local, global_, strict=True)]
