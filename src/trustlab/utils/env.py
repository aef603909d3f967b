"""Describe the running environment (recorded in every results.json)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def git_hash(path: str | Path | None = None) -> str | None:
    """The git commit of the trustlab source tree (with ``+dirty`` when modified), or ``None``."""
    here = Path(path) if path else Path(__file__).resolve().parents[3]
    try:
        h = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if h.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return h.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def env_info() -> dict[str, Any]:
    """Python, torch, device, CPU and thread facts."""
    import torch

    from trustlab import __version__

    cuda = torch.cuda.is_available()
    return {
        "trustlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
