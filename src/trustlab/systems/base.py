"""The spec every system folder exports as ``SYSTEM``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SystemSpec:
    """Describes one system; heavy modules are imported only when :meth:`run` is called.

    Args:
        name: Registry name (kebab-case), e.g. ``"nadafd"``.
        title: One-line title.
        paper: Paper citation with link.
        config: ``"module:Class"`` of the system's :class:`trustlab.config.SystemConfig` subclass.
        run: ``"module:function"`` of ``run(cfg, ctx) -> RunRecord``.
        headline: (method, metric) or (method, metric, setting) shown in the README table.
        status: Free text for the README table (e.g. ``"reproduced"``).
        demo: The system's tool verb(s) on an embedded asset, as command lines after ``trustlab``
            (``{out}`` is replaced by a fresh folder), each finishing in seconds; ``make demo`` runs them
            after ``trustlab run NAME --scale quick``.
        key_figure: File name (under the run's ``plots/``) of the system's key figure, shown in the
            merged report.
    """

    name: str
    title: str
    paper: str
    config: str
    run: str
    headline: list[tuple[str, ...]] = field(default_factory=list)
    status: str = "implemented"
    demo: tuple[str, ...] = ()
    key_figure: str | None = None

    @staticmethod
    def _load(target: str) -> Any:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def config_cls(self) -> type:
        """The config dataclass."""
        return self._load(self.config)

    def run_fn(self) -> Callable[..., Any]:
        """The experiment entry point ``run(cfg, ctx) -> RunRecord``."""
        return self._load(self.run)
