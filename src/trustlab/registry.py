"""Name -> lazy ``"module:Object"`` registries with did-you-mean errors.

Importing :mod:`trustlab` imports no heavy module; an entry is imported only when it is looked up.
(Pattern from lm-evaluation-harness ``api/registry.py`` and timm ``_registry.py``.)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any

from trustlab.errors import UserError


class Registry:
    """A mapping from short names to lazily imported objects.

    Args:
        kind: What the registry holds (used in error messages), e.g. ``"system"``.

    Example:
        >>> reg = Registry("thing")
        >>> reg.register("dumps", "json:dumps")
        >>> reg.get("dumps")([1])
        '[1]'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._cache: dict[str, Any] = {}

    def register(self, name: str, target: str) -> None:
        """Register ``name`` for the object at ``"module:attr"``; duplicates are a bug."""
        if ":" not in target:
            raise ValueError(f"target must look like 'module:attr', got {target!r}")
        if name in self._targets and self._targets[name] != target:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self._targets[name]!r}")
        self._targets[name] = target

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def resolve_name(self, name: str) -> str:
        """Return the canonical name (``_`` and ``-`` are interchangeable) or raise a did-you-mean error."""
        if name in self._targets:
            return name
        for alt in (name.replace("_", "-"), name.replace("-", "_")):
            if alt in self._targets:
                return alt
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.6)
        fix = (
            f"did you mean {' or '.join(repr(c) for c in close)}?"
            if close
            else f"known {self.kind}s: {', '.join(self.names()) or '(none)'}"
        )
        raise UserError(f"unknown {self.kind} {name!r}", fix)

    def get(self, name: str) -> Any:
        """Import and return the object registered as ``name``."""
        name = self.resolve_name(name)
        if name not in self._cache:
            module, _, attr = self._targets[name].partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._cache[name] = obj
        return self._cache[name]


#: The ten systems. Each target is a :class:`trustlab.systems.base.SystemSpec`.
SYSTEMS = Registry("system")
for _name, _module in [
    ("nadafd", "nadafd"),
    ("gfm-extraction", "gfm_extraction"),
    ("refusal-index", "refusal_index"),
    ("impq", "impq"),
    ("sepprune", "sepprune"),
    ("fvlfp", "fvlfp"),
    ("ipa-hijack", "ipa_hijack"),
    ("icfnet", "icfnet"),
    ("uadat", "uadat"),
    ("pca", "pca"),
]:
    SYSTEMS.register(_name, f"trustlab.systems.{_module}:SYSTEM")


def available_systems() -> list[str]:
    """Registered systems whose folder exists in this installation (a system may not be built yet)."""
    import importlib.util

    out = []
    for name in SYSTEMS.names():
        module = SYSTEMS._targets[name].partition(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out
