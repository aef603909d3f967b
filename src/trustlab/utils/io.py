"""Safe, boring serialization: tensors in safetensors, everything else in JSON/YAML; atomic writes.

``torch.load`` is only ever called with ``weights_only=True`` and never falls back to unsafe pickle
(timm ``_torch_load``); a file that needs pickle is refused with an explanation.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return _jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically; tensors/NumPy become lists, non-finite floats become null."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=indent, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a missing or malformed file into a one-line :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"file {str(p)!r} does not exist", "check the path")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"file {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno})", "fix or remove it") from exc


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> Path:
    """Save tensors to ``.safetensors`` atomically; ``metadata`` values are stored as JSON strings."""
    from safetensors.torch import save

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(_jsonable(v)) for k, v in (metadata or {}).items()}
    return atomic_write_bytes(path, save(flat, metadata=meta))


def load_tensors(path: str | Path, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a ``.safetensors`` file; returns ``(tensors, metadata)``."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file {str(p)!r} does not exist", "check the path")
    try:
        with safe_open(str(p), framework="pt", device=device) as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{str(p)!r} is not a readable safetensors file ({exc})", "re-export the weights") from exc
    return tensors, meta


def save_module(path: str | Path, module: torch.nn.Module, spec: Mapping[str, Any] | None = None) -> Path:
    """Save a module's state dict to safetensors with its constructor ``spec`` as metadata (no pickle)."""
    state = {k: v for k, v in module.state_dict().items()}
    # safetensors refuses shared storage; clone to be safe.
    state = {k: v.clone() for k, v in state.items()}
    return save_tensors(path, state, {"spec": dict(spec or {})})


def safe_torch_load(path: str | Path, map_location: str = "cpu") -> Any:
    """``torch.load(weights_only=True)``; refuses (never falls back to) arbitrary pickles.

    Raises:
        UserError: the file is missing, or it holds pickled Python objects beyond tensors and
            containers (loading those could run arbitrary code).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} does not exist", "check the path")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"refusing to load {str(p)!r}: it is not a plain tensor checkpoint ({first[:160]})",
            "convert it to .safetensors or a state_dict of tensors; trustlab never unpickles objects",
        ) from exc
