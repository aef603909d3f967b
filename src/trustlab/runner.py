"""Running a system: output folder checks, resumable units, seeding, writing the record.

A run is split into *units* (typically one (setting, method, seed)). Each finished unit is saved
atomically under ``OUT/units/``; a killed run started again with the same config and ``--out``
skips every finished unit and resumes from the next one.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustlab.config import config_hash, load_config, to_dict
from trustlab.errors import UserError
from trustlab.reporting.record import RunRecord
from trustlab.utils.device import resolve_device
from trustlab.utils.env import env_info, git_hash
from trustlab.utils.io import atomic_write_json, read_json
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import seed_everything

log = get_logger(__name__)


def _safe_key(key: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:80]
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def unit_path(units_dir: Path, key: str) -> Path:
    """File of unit ``key`` under ``units_dir`` (a filesystem-safe slug + a short hash of the key)."""
    return units_dir / f"{_safe_key(key)}.json"


def ensure_writable(out: Path) -> Path:
    """Create ``out`` and check we can write into it, or raise a one-line :class:`UserError`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to output folder {str(out)!r} ({exc.strerror or exc})",
            "pass --out with a writable folder",
        ) from exc
    return out


@dataclass
class RunContext:
    """What a system's ``run(cfg, ctx)`` gets besides its config.

    Attributes:
        out: The run folder (artifacts may be written under it).
        system: Registry name.
        scale: ``smoke``/``default``/``paper``.
        device: Resolved torch device.
        config_hash: Hash of the resolved config (resume key).
    """

    out: Path
    system: str
    scale: str
    device: Any
    config_hash: str
    resumed_units: int = 0
    computed_units: int = 0
    unit_seconds: float = 0.0
    _units_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self._units_dir = self.out / "units"

    def record(self, cfg: Any) -> RunRecord:
        """A fresh :class:`RunRecord` for this run."""
        return RunRecord(system=self.system, scale=self.scale, config=to_dict(cfg), seeds=list(cfg.seeds))

    def unit(self, key: str, fn: Callable[[], Any], seed: int | None = None,
             config_hash: str | None = None) -> Any:
        """Run ``fn`` once per run folder: return the saved result if unit ``key`` finished before.

        Args:
            key: A unique, stable name for the unit, e.g. ``"speckle/nadafd/seed=1"``.
            fn: Computes the unit; must return JSON-serialisable data.
            seed: When given, :func:`seed_everything` is called before ``fn``.
            config_hash: Resume key of the unit (default: the run's config hash); a system whose units
                do not depend on some config fields passes a hash computed without them.
        """
        config_hash = self.config_hash if config_hash is None else config_hash
        path = unit_path(self._units_dir, key)
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                if saved.get("key") == key and saved.get("config_hash") == config_hash:
                    self.resumed_units += 1
                    self.unit_seconds += float(saved.get("seconds", 0.0))
                    log.info("resume: unit %s already done", key)
                    return saved["result"]
            except (json.JSONDecodeError, KeyError):
                log.warning("unit file %s is corrupt; recomputing", path)
        if seed is not None:
            seed_everything(seed)
        t0 = time.time()
        result = fn()
        atomic_write_json(path, {"key": key, "config_hash": config_hash, "seconds": time.time() - t0,
                                 "result": result})
        self.computed_units += 1
        self.unit_seconds += time.time() - t0
        return result


#: Intra-op threads every run uses (``TRUSTLAB_THREADS`` overrides): CPU results depend on the thread
#: count (the order of floating-point reductions), so runs pin it to the reference machine's (2 cores)
#: whatever the machine, and results.json records it (``env.torch_threads``).
REFERENCE_THREADS = 2


def pin_threads() -> int:
    """Set torch's intra-op thread count to ``TRUSTLAB_THREADS`` (default :data:`REFERENCE_THREADS`)."""
    import os

    import torch

    raw = os.environ.get("TRUSTLAB_THREADS", str(REFERENCE_THREADS))
    try:
        n = int(raw)
        if n < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"TRUSTLAB_THREADS={raw!r} is not a positive integer", "unset it or set e.g. TRUSTLAB_THREADS=2") \
            from None
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def default_out(system: str, scale: str, cfg: Any) -> Path:
    """``runs/<system>/<scale>-<confighash>``: same config -> same folder -> automatic resume."""
    return Path("runs") / system / f"{scale}-{config_hash(cfg)}"


def run_system(
    name: str,
    scale: str = "default",
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    out: str | Path | None = None,
    device: str | None = None,
) -> tuple[RunRecord, Path]:
    """Resolve config, prepare the run folder, run the system and write its record.

    Returns:
        The record and the run folder.

    Raises:
        UserError: unknown system/option, unreadable config, bad override, unwritable ``out``,
            or ``out`` holding a run of a different config.
    """
    from trustlab.registry import SYSTEMS

    canonical = SYSTEMS.resolve_name(name)
    try:
        spec = SYSTEMS.get(canonical)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("trustlab.systems"):
            raise UserError(f"system {canonical!r} is not built yet in this version", "see `trustlab list`") from exc
        raise
    cfg = load_config(spec.config_cls(), scale, config_path, overrides)
    if seeds is not None:
        cfg.seeds = list(seeds)
    if device is not None:
        cfg.device = device
    cfg.validate()
    chash = config_hash(cfg)
    out_dir = Path(out) if out is not None else default_out(canonical, scale, cfg)
    ensure_writable(out_dir)
    meta_path = out_dir / "units" / "_meta.json"
    if meta_path.is_file():
        meta = read_json(meta_path)
        if meta.get("config_hash") != chash or meta.get("system") != canonical:
            raise UserError(
                f"output folder {str(out_dir)!r} holds a {meta.get('system')} run with a different config "
                f"({meta.get('config_hash')} != {chash})",
                "pass --out with a new folder (nothing was overwritten)",
            )
    else:
        atomic_write_json(meta_path, {"system": canonical, "scale": scale, "config_hash": chash,
                                      "config": to_dict(cfg)})
    pin_threads()
    ctx = RunContext(out=out_dir, system=canonical, scale=scale, device=resolve_device(cfg.device), config_hash=chash)
    t0 = time.time()
    log.info("running %s (%s scale, seeds %s) -> %s", canonical, scale, cfg.seeds, out_dir)
    record: RunRecord = spec.run_fn()(cfg, ctx)
    record.wall_time_s = time.time() - t0
    record.env = env_info()
    record.git = git_hash()
    # wall_time_s is this invocation; compute_time_s adds the time of units reused from earlier invocations.
    record.extra["compute_time_s"] = ctx.unit_seconds
    record.extra["units"] = {"computed": ctx.computed_units, "resumed": ctx.resumed_units}
    if ctx.resumed_units:
        record.notes.append(f"resumed: {ctx.resumed_units} unit(s) reused from an earlier run; wall_time_s covers this "
                            f"invocation only, extra.compute_time_s ({ctx.unit_seconds:.0f} s) includes the reused units")
    record.write(out_dir)
    return record, out_dir
