"""Device selection: ``auto`` uses CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from trustlab.errors import UserError


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a :class:`torch.device`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available", "use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}", "use auto, cpu or cuda") from exc
