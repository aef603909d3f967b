"""Resumable units of the IMPQ experiment, keyed on the config without the evaluation backends.

The core's :meth:`trustlab.runner.RunContext.unit` keys every unit on the hash of the whole config, so
adding an evaluation backend to a finished run would recompute SPQE (49 min for SmolLM2 on a CPU).
No IMPQ unit depends on the *list* of evaluation backends: the SPQE value function uses
``spqe_backend`` (a separate field), the scores, calibration values and the float perplexity use no
backend, and every evaluation unit names its backend in its key. :class:`Units` therefore keys the
units on the config hash with ``backends`` left out (``seeds`` and ``device`` are left out as in the
core; units that depend on a seed carry it in their key). Files use the core's naming and format
(``OUT/units/<slug>-<sha1>.json`` with ``key``, ``config_hash``, ``seconds``, ``result``), with the
reduced hash in ``config_hash``.

:func:`import_units` adopts the finished units of an earlier run folder whose config differs at most
in ``backends`` (checked field by field), e.g. to add backends to the committed SmolLM2 run without
recomputing SPQE.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustlab.config import config_hash, to_dict
from trustlab.errors import UserError
from trustlab.runner import RunContext, unit_path
from trustlab.utils.io import atomic_write_json, read_json
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

#: Config fields left out of the unit hash: no unit depends on ``seeds`` (seeded units carry the seed in
#: their key), ``device`` or ``backends``; ``n_calib_gptq`` only changes the GPTQ Hessians, and every unit
#: that uses them carries the number of Hessian rows in its key.
UNIT_EXCLUDE = ("seeds", "device", "backends", "n_calib_gptq")


def unit_hash(cfg: Any) -> str:
    """Hash of the config without :data:`UNIT_EXCLUDE` (the key of every IMPQ unit)."""
    return config_hash(cfg, exclude=UNIT_EXCLUDE)


class Units:
    """``units(key, fn, seed)``: run ``fn`` once per run folder and config (``backends`` excluded).

    Args:
        ctx: The run context (its ``out`` folder and unit counters are used).
        cfg: The resolved IMPQ config.
    """

    def __init__(self, ctx: RunContext, cfg: Any) -> None:
        self.ctx = ctx
        self.hash = unit_hash(cfg)

    def __call__(self, key: str, fn: Callable[[], Any], seed: int | None = None) -> Any:
        """Return the saved result of unit ``key`` if it finished before, else compute and save it."""
        return self.ctx.unit(key, fn, seed, config_hash=self.hash)


def import_units(src: str | Path, dst: str | Path, cfg: Any) -> list[str]:
    """Adopt the finished units of the IMPQ run folder ``src`` into ``dst`` for config ``cfg``.

    The earlier run's config (``src/units/_meta.json``) must equal ``cfg`` in every field but
    :data:`UNIT_EXCLUDE`; units of either format (the core's, keyed on the full hash, or this module's)
    are rewritten under ``dst/units`` with ``cfg``'s unit hash. ``dst`` must not hold a run yet.

    Returns:
        The keys of the adopted units.

    Raises:
        UserError: ``src`` is not an IMPQ run folder, its config differs, or ``dst`` holds a run.
    """
    src, dst = Path(src), Path(dst)
    meta_path = src / "units" / "_meta.json"
    if not meta_path.is_file():
        raise UserError(f"{str(src)!r} is not a run folder (no units/_meta.json)", "pass the --out folder of an impq run")
    meta = read_json(meta_path)
    if meta.get("system") != "impq":
        raise UserError(f"{str(src)!r} holds a {meta.get('system')} run", "pass the folder of an impq run")
    if (dst / "units" / "_meta.json").is_file():
        raise UserError(f"{str(dst)!r} already holds a run", "import into a new folder")
    old = {k: v for k, v in meta["config"].items() if k not in UNIT_EXCLUDE}
    new = {k: v for k, v in to_dict(cfg).items() if k not in UNIT_EXCLUDE}
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        raise UserError(f"the run in {str(src)!r} has a different config ({', '.join(diff)})",
                        f"only {', '.join(UNIT_EXCLUDE)} may differ")
    new_hash = unit_hash(cfg)
    old_hashes = {meta.get("config_hash"), new_hash}  # core units (full hash) or this module's (same fields)
    adopted = []
    for f in sorted((src / "units").glob("*.json")):
        if f.name == "_meta.json":
            continue
        saved = json.loads(f.read_text())
        if saved.get("config_hash") not in old_hashes or unit_path(src / "units", saved.get("key", "")) != f:
            log.warning("skipping %s (not a finished unit of this run)", f)
            continue
        atomic_write_json(unit_path(dst / "units", saved["key"]), {**saved, "config_hash": new_hash})
        adopted.append(saved["key"])
    log.info("adopted %d unit(s) from %s into %s", len(adopted), src, dst)
    return adopted

