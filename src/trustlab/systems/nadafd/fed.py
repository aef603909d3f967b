"""NADAFD on Flower's Message API, the ``trustlab fed nadafd`` run, and the saved global model.

- Training on Flower goes through :func:`trustlab.federated.flower.run_on_flower` (the strategy as a
  ``ServerApp``, the SAR clients as a ``ClientApp``, on the Simulation Engine).
- :func:`fed_run`: one experiment (setting, method, seed) at a chosen population, writing
  ``results.json`` and ``global_model.safetensors`` (the final global CNN, its architecture in the
  metadata); :func:`load_global_model` rebuilds the CNN from that file.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.federated.simulation import set_parameters
from trustlab.models.cnn import SARCNN
from trustlab.systems.nadafd.config import ALL_METHODS, ATTACKS, Config
from trustlab.utils.io import atomic_write_json, load_tensors, save_tensors
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["MODEL_FILE", "fed_config", "fed_run", "load_global_model"]

MODEL_FILE = "global_model.safetensors"


def fed_config(num_clients: int, fraction_fit: float, rounds: int, seed: int, scale: str = "quick",
               overrides: dict[str, Any] | None = None) -> Config:
    """The experiment config of a ``trustlab fed nadafd`` call (``n_train`` grows to 40 chips per client, so a Dir(α) split gives each >= 10)."""
    cfg = Config.for_scale(scale)
    from trustlab.config import apply_overrides

    apply_overrides(cfg, dict(overrides or {}))
    cfg = replace(cfg, num_clients=num_clients, fraction_fit=fraction_fit, rounds=rounds, seeds=[seed],
                  n_train=max(cfg.n_train, 40 * num_clients))
    if cfg.dha_group >= num_clients:
        cfg = replace(cfg, dha_group=max(1, num_clients - 1))
    cfg.validate()
    return cfg


def fed_run(out: str | Path, engine: str = "inprocess", num_clients: int = 10, fraction_fit: float = 1.0,
            rounds: int = 5, method: str = "nadafd", attack: str = "speckle", seed: int = 0, scale: str = "quick",
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one federation and write ``results.json`` and ``global_model.safetensors`` under ``out``.

    Returns:
        The results dict (also written): config, engine, method, setting, metrics (final
        ``clean_acc``/``asr``, detection), per-round curve, rejected/excluded clients per round, wall time.
    """
    from trustlab.systems.nadafd.data import build_data
    from trustlab.systems.nadafd.experiment import ENGINES, summarise, train_federation

    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    if method not in ALL_METHODS:
        raise UserError(f"unknown method {method!r}", f"use one of {', '.join(ALL_METHODS)}")
    if attack not in (*ATTACKS, "none"):
        raise UserError(f"unknown attack {attack!r}", f"use one of {', '.join(ATTACKS)}, none")
    if num_clients < 3 or not 0 < fraction_fit <= 1 or rounds < 1:
        raise UserError(f"num_clients={num_clients}, fraction_fit={fraction_fit}, rounds={rounds}",
                        "use --num-clients >= 3, --fraction-fit in (0, 1], --rounds >= 1")
    setting = "no_attack" if attack == "none" else attack
    cfg = fed_config(num_clients, fraction_fit, rounds, seed, scale, overrides)
    if setting != "no_attack" and setting not in cfg.attacks:
        cfg = replace(cfg, attacks=[setting])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        data = build_data(cfg, seed)
    except ValueError as exc:  # e.g. no Dirichlet split gives every client >= 10 chips
        raise UserError(f"cannot split the chips among {num_clients} clients ({exc})",
                        "raise alpha (--set alpha=5) or n_train (--set n_train=...)") from exc
    trained = train_federation(cfg, data, setting, method, seed, engine)
    res = summarise(cfg, data, setting, method, trained)
    model = trained.model_fn()
    set_parameters(model, trained.history.parameters)
    arch = {"num_classes": data.num_classes, "image_size": cfg.image_size, "width": cfg.width}
    save_tensors(out / MODEL_FILE, dict(model.state_dict()),
                 {"arch": json.dumps(arch), "method": method, "setting": setting, "seed": str(seed),
                  "clean_acc": repr(res["metrics"]["clean_acc"])})
    rounds_log = [{"round": r.round, "selected": [int(c) for c in r.selected],
                   "rejected": [int(c) for c in r.train.get("rejected", [])],
                   "excluded": {str(c): v for c, v in r.train.get("excluded", {}).items()},
                   "seconds": r.seconds, **r.centralized} for r in trained.history.rounds]
    results = {"system": "nadafd", "engine": engine, "method": method, "setting": setting, "seed": seed,
               "num_clients": num_clients, "fraction_fit": fraction_fit, "rounds": rounds,
               "malicious": data.malicious if setting != "no_attack" else [],
               "metrics": res["metrics"], "rounds_log": rounds_log, "model_file": MODEL_FILE,
               "wall_seconds": time.perf_counter() - t0, "config": asdict(cfg)}
    atomic_write_json(out / "results.json", results)
    log.info("nadafd %s/%s on %s: clean_acc %.3f, asr %.3f, %.1f s", setting, method, engine,
             res["metrics"]["clean_acc"], res["metrics"]["asr"], results["wall_seconds"])
    return results


def load_global_model(path: str | Path) -> SARCNN:
    """Rebuild the CNN saved by :func:`fed_run` (``global_model.safetensors`` or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise UserError(f"model file {str(p)!r} does not exist", f"pass the {MODEL_FILE} written by trustlab fed nadafd")
    tensors, meta = load_tensors(p)
    if "arch" not in meta:
        raise UserError(f"{str(p)!r} has no architecture metadata", "use a file written by trustlab fed nadafd")
    arch = json.loads(meta["arch"])
    model = SARCNN(num_classes=int(arch["num_classes"]), image_size=int(arch["image_size"]), width=int(arch["width"]))
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    return model.eval()


