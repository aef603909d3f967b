"""Dataclass configs loadable from YAML/TOML files with ``--set a.b=value`` overrides.

Each system defines a dataclass that subclasses :class:`SystemConfig`, with defaults for the
``default`` scale and a ``SCALES`` class variable holding overrides for ``smoke`` and ``paper``.
Resolution order: dataclass defaults -> scale overrides -> config file -> ``--set`` overrides.
The resolved config is saved beside the results (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from trustlab.errors import UserError

SCALES = ("smoke", "quick", "default", "paper")
C = TypeVar("C", bound="SystemConfig")


@dataclass
class SystemConfig:
    """Fields every system config has.

    Attributes:
        seeds: Seeds to run; each (setting, method) is measured once per seed.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: str = "auto"

    #: Per-scale overrides (dotted keys), e.g. ``{"smoke": {"rounds": 2}}``; ``default`` is the dataclass.
    SCALES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def for_scale(cls: type[C], scale: str = "default") -> C:
        """Build the config of a scale (``smoke``, ``quick``, ``default`` or ``paper``).

        ``quick`` is the demo scale (one seed, small sizes, seconds per system); a system that defines no
        ``quick`` preset gets its ``smoke`` preset with a single seed.
        """
        if scale not in SCALES:
            raise UserError(f"unknown scale {scale!r}", f"use one of: {', '.join(SCALES)}")
        cfg = cls()
        if scale == "quick" and "quick" not in cls.SCALES:
            apply_overrides(cfg, {"seeds": [0], **cls.SCALES.get("smoke", {})}, source="scale 'quick' (smoke)")
            cfg.seeds = cfg.seeds[:1]
            return cfg
        apply_overrides(cfg, cls.SCALES.get(scale, {}), source=f"scale {scale!r}")
        return cfg

    def validate(self) -> None:
        """Check cross-field constraints; subclasses extend it and raise :class:`UserError`."""
        if not self.seeds:
            raise UserError("config has no seeds", "set seeds=[0,1,2] or pass --seed N")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"unknown device {self.device!r}", "use auto, cpu or cuda")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data copy of a (nested) dataclass config."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any, exclude: tuple[str, ...] = ("seeds", "device")) -> str:
    """Short stable hash of a config, ignoring ``exclude`` (used to match resumable runs)."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in exclude}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist", "pass the path of a readable .yaml or .toml file")
    try:
        text = p.read_text()
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text)
        else:
            raise UserError(f"config file {str(p)!r} has unknown extension", "use .yaml, .yml or .toml")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {str(p)!r}: {exc}", "check the file's permissions") from exc
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        msg = str(exc).replace("\n", " ")
        raise UserError(f"config file {str(p)!r} is malformed: {msg}", "fix the syntax") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping at top level", "write key: value lines")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``["a.b=1", "c=[1,2]"]`` into ``{"a.b": 1, "c": [1, 2]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"bad override {item!r}", "write --set key=value, e.g. --set rounds=10")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str = "--set") -> Any:
    """Set (dotted or nested) keys on a nested dataclass, coercing values to the field types.

    Raises:
        UserError: unknown key (with did-you-mean) or a value of the wrong type.
    """
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        obj = cfg
        for i, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(obj)]
            if part not in names:
                raise UserError(f"{source}: unknown key {dotted!r}", _closest_keys(obj, parts, i))
            if i == len(parts) - 1:
                current = getattr(obj, part)
                if dataclasses.is_dataclass(current) and isinstance(value, dict):
                    apply_overrides(current, value, source)
                else:
                    hints = typing.get_type_hints(type(obj))
                    setattr(obj, part, _coerce(value, hints.get(part, Any), str(dotted), source))
            else:
                obj = getattr(obj, part)
                if not dataclasses.is_dataclass(obj):
                    raise UserError(f"{source}: {'.'.join(parts[: i + 1])!r} is not a section", "set it directly")
    return cfg


def _closest_keys(obj: Any, parts: list[str], i: int) -> str:
    """The fix line of an unknown-key error: the closest dotted keys (searching nested sections too)."""
    prefix = ".".join(parts[:i])
    full = [f"{prefix}.{d['key']}" if prefix else d["key"] for d in describe_config(obj)]
    wanted = ".".join(parts)
    leaf = {k: k.rsplit(".", 1)[-1] for k in full}
    close = difflib.get_close_matches(wanted, full, n=3, cutoff=0.5)
    close += [k for k in full if k not in close and leaf[k] in difflib.get_close_matches(parts[-1], list(leaf.values()),
                                                                                          n=3, cutoff=0.7)]
    close = close[:4]
    hint = "`trustlab config SYSTEM` lists every key"
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}? ({hint})"
    return f"{prefix or 'config'} keys: {', '.join(f.name for f in dataclasses.fields(obj))} ({hint})"


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Coerce ``value`` to type ``tp`` or raise a one-line :class:`UserError`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except UserError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            obj = tp()
            apply_overrides(obj, value, source)
            return obj
        raise UserError(f"{source}: {key!r} is a section", f"set its keys, e.g. {key}.name=value")
    bad = UserError(f"{source}: {key}={value!r} is not a valid {getattr(tp, '__name__', tp)}", "fix the value's type")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(Fraction(value.replace(" ", "")))
            except (ValueError, ZeroDivisionError):
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, key, source) for v in value]
        return seq if origin is list else tuple(seq)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    return value


def load_config(
    cls: type[C],
    scale: str = "default",
    path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> C:
    """Resolve a config: defaults -> scale -> file -> overrides, then validate.

    Example:
        >>> cfg = load_config(SystemConfig, overrides=["seeds=[4,5]"])
        >>> cfg.seeds
        [4, 5]
    """
    cfg = cls.for_scale(scale)
    if path is not None:
        apply_overrides(cfg, read_config_file(path), source=str(path))
    if overrides:
        ov = parse_set(overrides) if isinstance(overrides, list) else overrides
        apply_overrides(cfg, ov, source="--set")
    cfg.validate()
    return cfg


def attribute_docs(cls: type) -> dict[str, str]:
    """One-line docs of a dataclass's fields from the ``Attributes:`` section of its (and its bases') docstrings."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = klass.__doc__ or ""
        if "Attributes:" not in text:
            continue
        body = text.split("Attributes:", 1)[1].splitlines()
        indent: int | None = None
        current: list[str] | None = None
        for line in body[1:] if body and not body[0].strip() else body:
            if not line.strip():
                if current is not None:
                    current = None
                continue
            lead = len(line) - len(line.lstrip())
            if indent is None:
                indent = lead
            if lead < indent:
                break
            name, sep, doc = line.strip().partition(":")
            names = [n.strip() for n in name.split("/")]  # "a / b / c: shared doc"
            if lead == indent and sep and all(n.isidentifier() for n in names):
                current = names
                for n in names:
                    docs[n] = doc.strip()
            elif current is not None:
                for n in current:
                    docs[n] = f"{docs[n]} {line.strip()}".strip()
    return docs


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


def describe_config(cfg: Any, prefix: str = "") -> list[dict[str, str]]:
    """Every setting of a (nested) dataclass config: dotted ``key``, ``type``, ``value``, one-line ``doc``.

    Example:
        >>> [d["key"] for d in describe_config(SystemConfig())]
        ['seeds', 'device']
    """
    docs = attribute_docs(type(cfg))
    hints = typing.get_type_hints(type(cfg))
    out: list[dict[str, str]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += describe_config(value, prefix=f"{key}.")
            continue
        doc = docs.get(f.name, "")
        first = doc.split(". ")[0].rstrip(".")
        out.append({"key": key, "type": _type_name(hints.get(f.name, Any)), "value": json.dumps(value, default=str),
                    "doc": first + ("." if first else "")})
    return out
