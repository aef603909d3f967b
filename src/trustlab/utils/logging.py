"""Library logging: ``get_logger(__name__)``; quiet by default, ``TRUSTLAB_LOG=debug`` for more."""

from __future__ import annotations

import logging
import os
import sys

_CONFIGURED = False


class _CurrentStderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is *now*, not the stream it was created with
    (a handler bound at creation keeps writing to a replaced and closed stream, e.g. after a test's capture)."""

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


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
        h = _CurrentStderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(h)
        root.propagate = False
        _CONFIGURED = True
