"""``trustlab fed fvlfp``: one FVL-FP (or baseline) federation on a chosen engine, saving the prompts.

Writes ``results.json`` (metrics on the global test set, the per-group fairlearn ``MetricFrame``
table, per-round curve) and ``prompts.safetensors`` (the final global prompt tensors; class and group
words, ``n_ctx``, deep/DSOP flags in the metadata). :func:`load_prompts` rebuilds the
:class:`~trustlab.systems.fvlfp.method.PromptLearner` over a backbone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.systems.fvlfp.config import ALL_METHODS, Config
from trustlab.systems.fvlfp.method import FLAGS, PromptLearner, evaluate_global
from trustlab.utils.io import atomic_write_json, load_tensors, save_tensors
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["PROMPTS_FILE", "WORLDS", "client_corrs_for", "fed_run", "load_prompts"]

PROMPTS_FILE = "prompts.safetensors"
#: Synthetic worlds: ``text_alignment`` of the demographic image signal (see trustlab.data.fair_vl).
WORLDS = {"aligned": 1.0, "partial": 0.5}


def client_corrs_for(num_clients: int, base: list[float]) -> list[float]:
    """``num_clients`` label-attribute correlations cycling through ``base`` (the config's pattern)."""
    return [base[i % len(base)] for i in range(num_clients)]


def fed_run(out: str | Path, engine: str = "inprocess", num_clients: int = 8, fraction_fit: float = 1.0,
            rounds: int = 5, method: str = "fvlfp", world: str = "aligned", features: str | Path | None = None,
            data: str | Path | None = None, seed: int = 0, scale: str = "quick",
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one method's prompts federatedly and write ``results.json`` + ``prompts.safetensors``."""
    from trustlab.config import apply_overrides
    from trustlab.systems.fvlfp.data import load_feature_manifest
    from trustlab.systems.fvlfp.experiment import build_federation, encode, load_backbone, run_method

    if engine not in ("inprocess", "flower-sim", "flower-inline"):
        raise UserError(f"unknown engine {engine!r}", "use flower-sim, inprocess or flower-inline")
    if method not in ALL_METHODS or method == "zero_shot":
        raise UserError(f"unknown or untrained method {method!r}",
                        f"use one of {', '.join(m for m in ALL_METHODS if m != 'zero_shot')}")
    if world not in WORLDS:
        raise UserError(f"unknown world {world!r}", f"use one of {', '.join(WORLDS)}")
    if num_clients < 2 or not 0 < fraction_fit <= 1 or rounds < 1:
        raise UserError(f"num_clients={num_clients}, fraction_fit={fraction_fit}, rounds={rounds}",
                        "use --num-clients >= 2, --fraction-fit in (0, 1], --rounds >= 1")
    cfg = Config.for_scale(scale)
    apply_overrides(cfg, dict(overrides or {}))
    cfg = replace(cfg, rounds=rounds, fraction_fit=fraction_fit, seeds=[seed], text_alignment=WORLDS[world],
                  client_corrs=client_corrs_for(num_clients, list(cfg.client_corrs)),
                  features_path=str(features or cfg.features_path), data_path=str(data or cfg.data_path))
    cfg.validate()
    t0 = time.perf_counter()
    backbone, _ = load_backbone(cfg, torch.device("cpu"))
    if cfg.features_path:
        feats, cn, gn = load_feature_manifest(cfg.features_path)
        try:
            dim = int(PromptLearner(backbone, cn, gn, cfg.n_ctx).text_features(backbone).shape[1])
        except ValueError as exc:
            raise UserError(f"the manifest's class/group words do not fit the backbone ({exc})",
                            "use words the backbone's tokenizer knows (tiny: the FairVL words) or a CLIP folder") from exc
        if feats["test"][0].shape[1] != dim:
            raise UserError(f"the features have {feats['test'][0].shape[1]} dimensions, the backbone embeds in {dim}",
                            "compute the features with the image tower of the same CLIP as --set backbone")
        source = {"features": cfg.features_path}
    else:
        fed, cn, gn = build_federation(cfg, seed)
        feats = {"test": encode(backbone, fed.test),
                 "clients": [{s: encode(backbone, getattr(c, s)) for s in ("train", "val", "test")} for c in fed.clients]}
        source = {"data": cfg.data_path} if cfg.data_path else {"world": world, "text_alignment": cfg.text_alignment}
    res = run_method(method, cfg, backbone, cn, gn, feats, seed, engine=engine, return_arrays=True)
    arrays = res.pop("arrays")
    flags = FLAGS[method]
    learner = PromptLearner(backbone, cn, gn, cfg.n_ctx, deep=flags.cdfp)
    learner.set_arrays(arrays)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"class_names": json.dumps(list(cn)), "group_names": json.dumps(list(gn)), "n_ctx": str(cfg.n_ctx),
            "deep": str(int(flags.cdfp)), "dsop": str(int(flags.dsop)), "method": method,
            "backbone": cfg.backbone, "acc": repr(res["metrics"]["acc"])}
    save_tensors(out / PROMPTS_FILE, dict(learner.state_dict()), meta)
    results = {"system": "fvlfp", "engine": engine, "method": method, "seed": seed, "num_clients": len(feats["clients"]),
               "fraction_fit": fraction_fit, "rounds": rounds, "source": source, "metrics": res["metrics"],
               "group_table": res["group_table"], "curve": res["curve"], "per_client": res["per_client"],
               "prompts_file": PROMPTS_FILE, "wall_seconds": time.perf_counter() - t0, "config": asdict(cfg)}
    atomic_write_json(out / "results.json", results)
    log.info("fvlfp %s on %s: acc %.3f dp %.3f", method, engine, res["metrics"]["acc"], res["metrics"]["dp_diff"])
    return results


def load_prompts(path: str | Path, backbone: Any) -> tuple[PromptLearner, bool]:
    """Rebuild the saved prompts over ``backbone``; returns the learner and whether DSOP applies.

    Example (evaluate reloaded prompts on features ``z``)::

        learner, dsop = load_prompts("runs/fvlfp/prompts.safetensors", backbone)
        metrics = evaluate_global(backbone, learner, z, y, a, dsop)
    """
    p = Path(path)
    if p.is_dir():
        p = p / PROMPTS_FILE
    tensors, meta = load_tensors(p)
    need = ("class_names", "group_names", "n_ctx", "deep", "dsop")
    if any(k not in meta for k in need):
        raise UserError(f"{str(p)!r} lacks prompt metadata", "use a prompts.safetensors written by trustlab fed fvlfp")
    learner = PromptLearner(backbone, json.loads(meta["class_names"]), json.loads(meta["group_names"]),
                            int(meta["n_ctx"]), deep=bool(int(meta["deep"])))
    try:
        learner.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{str(p)!r} does not fit this backbone ({exc})", "load it with the backbone it was trained on") \
            from exc
    return learner, bool(int(meta["dsop"]))


__all__ += ["evaluate_global"]
