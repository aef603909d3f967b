"""Switchable progress bars (tqdm on stderr).

Off when ``TRUSTLAB_PROGRESS=0``, when :func:`set_progress` (``--no-progress``) turned them off, or
when stderr is not a terminal and ``TRUSTLAB_PROGRESS`` is not ``1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_ENABLED: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on/off (``None`` restores the automatic choice)."""
    global _ENABLED
    _ENABLED = enabled


def progress_enabled() -> bool:
    """Whether progress bars are shown."""
    if _ENABLED is not None:
        return _ENABLED
    env = os.environ.get("TRUSTLAB_PROGRESS", "auto").lower()
    if env in ("0", "false", "off", "no"):
        return False
    if env in ("1", "true", "on", "yes"):
        return True
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False, **kw: Any) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar when progress bars are enabled."""
    if not progress_enabled():
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, leave=leave, file=sys.stderr, dynamic_ncols=True, **kw)
