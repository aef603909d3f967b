"""NADAFD as a deployable Flower app: ``server_app`` and ``client_app`` for ``flwr run`` (examples/flower-nadafd).

Both sides rebuild the same simulated SAR federation from the run config (deterministic in the seed),
so no data travels. Run config keys (``[tool.flwr.app.config]``): ``num-clients`` (must equal the
federation's ``num-supernodes``), ``fraction-fit``, ``rounds``, ``method``, ``attack``, ``seed``,
``scale``, ``out`` (folder for results.json and global_model.safetensors).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from trustlab.federated.flower import MessageStrategy, ServerSetup, make_client_app, make_server_app

__all__ = ["client_app", "server_app"]


def _opts(rc: Any) -> dict[str, Any]:
    return {"num_clients": int(rc.get("num-clients", 10)), "fraction_fit": float(rc.get("fraction-fit", 0.5)),
            "rounds": int(rc.get("rounds", 3)), "method": str(rc.get("method", "nadafd")),
            "attack": str(rc.get("attack", "speckle")), "seed": int(rc.get("seed", 0)),
            "scale": str(rc.get("scale", "quick")), "out": str(rc.get("out", "runs/flower-nadafd"))}


@lru_cache(maxsize=2)
def _world(key: str) -> tuple[Any, Any, Any]:
    from trustlab.systems.nadafd.data import attacker_triggers, build_data
    from trustlab.systems.nadafd.fed import fed_config

    o = json.loads(key)
    cfg = fed_config(o["num_clients"], o["fraction_fit"], o["rounds"], o["seed"], o["scale"])
    data = build_data(cfg, o["seed"])
    trigger = None if o["attack"] == "none" else attacker_triggers(o["attack"], cfg, len(data.malicious), o["seed"])
    return cfg, data, trigger


def _clients(key: str) -> list[Any]:
    from functools import partial

    from trustlab.systems.nadafd.clients import make_clients
    from trustlab.systems.nadafd.experiment import _model_fn

    cfg, data, trigger = _world(key)
    o = json.loads(key)
    naat = {"eps": cfg.naat_eps, "steps": cfg.naat_steps, "beta": cfg.naat_beta, "fraction": cfg.naat_fraction,
            "looks": list(cfg.naat_looks), "offset": cfg.naat_offset}
    return make_clients(data.train.x, data.train.y, data.parts, data.malicious, trigger, o["attack"] == "dba",
                        partial(_model_fn, cfg, data.num_classes), o["seed"], epochs=cfg.local_epochs,
                        batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum, target=cfg.target_class,
                        poison_fraction=cfg.poison_fraction, scale_gamma=cfg.scale_gamma, naat=naat,
                        lr_decay=cfg.lr_decay)


def _client_fn(pid: int, context: Any) -> Any:
    return _clients(json.dumps(_opts(context.run_config), sort_keys=True))[pid]


def _setup(context: Any) -> ServerSetup:
    from functools import partial

    import torch

    from trustlab.federated.simulation import get_parameters
    from trustlab.systems.nadafd.data import eval_triggers
    from trustlab.systems.nadafd.experiment import _model_fn, make_evaluator, make_strategy
    from trustlab.utils.seed import derive_seed

    o = _opts(context.run_config)
    cfg, data, trigger = _world(json.dumps(o, sort_keys=True))
    setting = "no_attack" if o["attack"] == "none" else o["attack"]
    model_fn = partial(_model_fn, cfg, data.num_classes)
    torch.manual_seed(derive_seed(o["seed"], "init"))
    init = get_parameters(model_fn())
    strategy = MessageStrategy(make_strategy(o["method"], cfg, data, o["seed"]), fraction_train=o["fraction_fit"],
                               min_available_nodes=o["num_clients"], seed=o["seed"])

    def done(hist: Any) -> None:
        from pathlib import Path

        from trustlab.federated.simulation import set_parameters
        from trustlab.systems.nadafd.fed import MODEL_FILE
        from trustlab.utils.io import atomic_write_json, save_tensors

        out = Path(o["out"])
        out.mkdir(parents=True, exist_ok=True)
        model = model_fn()
        set_parameters(model, hist.parameters)
        arch = {"num_classes": data.num_classes, "image_size": cfg.image_size, "width": cfg.width}
        save_tensors(out / MODEL_FILE, dict(model.state_dict()), {"arch": json.dumps(arch), "method": o["method"]})
        atomic_write_json(out / "results.json", {"engine": "flwr run", "setting": setting, **o,
                                                 "curve": [r.centralized for r in hist.rounds]})

    evaluate = make_evaluator(cfg, data, eval_triggers(None if o["attack"] == "none" else o["attack"], cfg,
                                                       len(data.malicious), o["seed"]), model_fn)
    return ServerSetup(strategy, init, o["rounds"], evaluate, on_done=done)


server_app = make_server_app(_setup)
client_app = make_client_app(_client_fn)
