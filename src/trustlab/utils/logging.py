"""Library logging: ``get_logger(__name__)``; quiet by default, ``TRUSTLAB_LOG=debug`` for more."""

from __future__ import annotations

import logging
import os

_CONFIGURED = False


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``trustlab`` hierarchy."""
    return logging.getLogger(name if name.startswith("trustlab") else f"trustlab.{name}")


def setup_logging(level: str | int | None = None) -> None:
    """Configure the ``trustlab`` logger once (stderr, short format)."""
    global _CONFIGURED
    level = level or os.environ.get("TRUSTLAB_LOG", "info")
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    root = logging.getLogger("trustlab")
    root.setLevel(level)
    if not _CONFIGURED:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(h)
        root.propagate = False
        _CONFIGURED = True
