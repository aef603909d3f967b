"""Save and load (pruned) separators without pickle: weights in safetensors, architecture in JSON.

A pruned model is an ordinary model with smaller widths, so the JSON spec
(``{"arch": "conv_tasnet", "kwargs": {..., "hidden": [41, 37, ...]}}``) rebuilds it exactly and the
safetensors state dict then loads strictly. This avoids Torch-Pruning's ``torch.save(model)`` and the
"size mismatch" errors users hit when reloading pruned state dicts into a dense class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.errors import UserError
from trustlab.models.conv_tasnet import ConvTasNet
from trustlab.models.tdanet import TDANetLite
from trustlab.utils.io import atomic_write_json, load_tensors, read_json, save_module

ARCHS: dict[str, type[nn.Module]] = {"conv_tasnet": ConvTasNet, "tdanet_lite": TDANetLite}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Instantiate ``spec = {"arch": name, "kwargs": {...}}``.

    Raises:
        UserError: unknown architecture or bad arguments.
    """
    if not isinstance(spec, dict) or "arch" not in spec:
        raise UserError(f"architecture spec {spec!r} lacks 'arch'", f"use one of: {', '.join(ARCHS)}")
    arch = spec["arch"]
    if arch not in ARCHS:
        raise UserError(f"unknown separator architecture {arch!r}", f"use one of: {', '.join(ARCHS)}")
    try:
        return ARCHS[arch](**dict(spec.get("kwargs", {})))
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad arguments for {arch}: {exc}", "fix the architecture spec") from exc


def save_model(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` (weights, spec also in metadata) and ``<path>.json`` (spec + extra).

    Returns:
        The two file paths.
    """
    path = Path(path)
    spec = model.spec()  # type: ignore[operator]
    weights = save_module(path.with_suffix(".safetensors"), model, spec)
    meta = atomic_write_json(path.with_suffix(".json"), {**spec, **({"extra": extra} if extra else {})})
    return weights, meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (``path`` with or without suffix).

    Raises:
        UserError: missing files, a malformed spec, or weights that do not fit the spec.
    """
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    spec = read_json(base.with_suffix(".json"))
    model = build_model(spec)
    tensors, _ = load_tensors(base.with_suffix(".safetensors"))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"weights in {str(base)!r}.safetensors do not fit its JSON spec ({first[:160]})",
                        "save weights and spec together with save_model") from exc
    return model.to(device)


def spec_json(model: nn.Module) -> str:
    """The architecture spec as a JSON string."""
    return json.dumps(model.spec(), sort_keys=True)  # type: ignore[operator]
