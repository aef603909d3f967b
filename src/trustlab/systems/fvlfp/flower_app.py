"""FVL-FP as a deployable Flower app: ``server_app`` and ``client_app`` for ``flwr run`` (examples/flower-fvlfp).

Both sides rebuild the same synthetic FairVL federation (or read the same feature manifest) from the
run config, with the cached tiny CLIP. Run config keys: ``num-clients`` (= ``num-supernodes``),
``fraction-fit``, ``rounds``, ``method``, ``world`` (aligned | partial), ``features`` (a manifest path,
empty: synthetic), ``seed``, ``scale``, ``out`` (results.json + prompts.safetensors).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from trustlab.federated.flower import MessageStrategy, ServerSetup, make_client_app, make_server_app

__all__ = ["client_app", "server_app"]


def _opts(rc: Any) -> dict[str, Any]:
    return {"num_clients": int(rc.get("num-clients", 8)), "fraction_fit": float(rc.get("fraction-fit", 1.0)),
            "rounds": int(rc.get("rounds", 3)), "method": str(rc.get("method", "fvlfp")),
            "world": str(rc.get("world", "aligned")), "features": str(rc.get("features", "")),
            "seed": int(rc.get("seed", 0)), "scale": str(rc.get("scale", "quick")),
            "out": str(rc.get("out", "runs/flower-fvlfp"))}


@lru_cache(maxsize=2)
def _world(key: str) -> dict[str, Any]:
    from dataclasses import replace

    import torch

    from trustlab.systems.fvlfp.config import Config
    from trustlab.systems.fvlfp.data import load_feature_manifest
    from trustlab.systems.fvlfp.experiment import build_federation, encode, load_backbone
    from trustlab.systems.fvlfp.fed import WORLDS, client_corrs_for

    o = json.loads(key)
    cfg = Config.for_scale(o["scale"])
    cfg = replace(cfg, rounds=o["rounds"], fraction_fit=o["fraction_fit"], seeds=[o["seed"]],
                  text_alignment=WORLDS[o["world"]], client_corrs=client_corrs_for(o["num_clients"], cfg.client_corrs))
    backbone, _ = load_backbone(cfg, torch.device("cpu"))
    if o["features"]:
        feats, cn, gn = load_feature_manifest(o["features"])
    else:
        fed, cn, gn = build_federation(cfg, o["seed"])
        feats = {"test": encode(backbone, fed.test),
                 "clients": [{s: encode(backbone, getattr(c, s)) for s in ("train", "val", "test")} for c in fed.clients]}
    return {"cfg": cfg, "backbone": backbone, "feats": feats, "cn": cn, "gn": gn}


def _parts(o: dict[str, Any]) -> tuple[Any, ...]:
    import torch

    from trustlab.systems.fvlfp.experiment import make_strategy
    from trustlab.systems.fvlfp.method import FLAGS, LocalTrainConfig, PromptClient, PromptLearner
    from trustlab.utils.seed import derive_seed

    w = _world(json.dumps(o, sort_keys=True))
    cfg, bb, flags = w["cfg"], w["backbone"], FLAGS[o["method"]]
    tc = LocalTrainConfig(local_steps=cfg.local_steps, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                          lambda_cf=cfg.lambda_cf, lambda_layer=cfg.lambda_layer)

    def learner() -> PromptLearner:
        gen = torch.Generator().manual_seed(derive_seed(o["seed"], "prompt-init"))
        return PromptLearner(bb, w["cn"], w["gn"], cfg.n_ctx, deep=flags.cdfp, generator=gen)

    clients = [PromptClient(k, bb, learner(), {"train": f["train"], "val": f["val"]}, flags, tc, o["seed"])
               for k, f in enumerate(w["feats"]["clients"])]
    return w, flags, learner, clients, make_strategy(o["method"], cfg)


def _client_fn(pid: int, context: Any) -> Any:
    return _parts(_opts(context.run_config))[3][pid]


def _setup(context: Any) -> ServerSetup:
    from trustlab.systems.fvlfp.method import evaluate_global
    from trustlab.utils.seed import derive_seed

    o = _opts(context.run_config)
    w, flags, learner, _, strategy = _parts(o)
    glob = learner()

    def evaluate(rnd: int, params: list[Any]) -> dict[str, float]:
        glob.set_arrays(params)
        return evaluate_global(w["backbone"], glob, *w["feats"]["test"], flags.dsop)

    def done(hist: Any) -> None:
        from pathlib import Path

        from trustlab.systems.fvlfp.fed import PROMPTS_FILE
        from trustlab.utils.io import atomic_write_json, save_tensors

        out = Path(o["out"])
        out.mkdir(parents=True, exist_ok=True)
        glob.set_arrays(hist.parameters)
        meta = {"class_names": json.dumps(list(w["cn"])), "group_names": json.dumps(list(w["gn"])),
                "n_ctx": str(w["cfg"].n_ctx), "deep": str(int(flags.cdfp)), "dsop": str(int(flags.dsop)),
                "method": o["method"], "backbone": w["cfg"].backbone}
        save_tensors(out / PROMPTS_FILE, dict(glob.state_dict()), meta)
        atomic_write_json(out / "results.json", {"engine": "flwr run", **o, "curve": [r.centralized for r in hist.rounds]})

    ms = MessageStrategy(strategy, fraction_train=o["fraction_fit"], min_available_nodes=o["num_clients"],
                         seed=derive_seed(o["seed"], "sampling"))
    return ServerSetup(ms, glob.get_arrays(), o["rounds"], evaluate, on_done=done)


server_app = make_server_app(_setup)
client_app = make_client_app(_client_fn)
