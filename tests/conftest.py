"""Test-wide settings: quiet progress bars, a private cache, Agg plots, few threads."""

from __future__ import annotations

import os

os.environ.setdefault("TRUSTLAB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
