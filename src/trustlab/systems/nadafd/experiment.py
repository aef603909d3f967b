"""NADAFD experiment: attack sanity check, baselines vs NADAFD, module ablations, per-round curves.

Settings: one per attack in ``cfg.attacks`` (default ``speckle``) plus ``no_attack`` (FedAvg and
NADAFD without attackers: the clean-accuracy reference). Every (setting, method, seed) is one
resumable unit; claims are computed from the summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch

from trustlab.attacks.triggers import Trigger
from trustlab.config import config_hash
from trustlab.federated.simulation import History, get_parameters, set_parameters, simulate
from trustlab.federated.strategy import NDArrays, Strategy
from trustlab.metrics.backdoor import attack_success_rate, clean_accuracy, detection_precision_recall
from trustlab.models.cnn import SARCNN
from trustlab.reporting import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.nadafd.baselines import make_baseline
from trustlab.systems.nadafd.clients import make_clients
from trustlab.systems.nadafd.config import BASELINES, Config
from trustlab.systems.nadafd.data import FedData, attacker_triggers, build_data, eval_triggers
from trustlab.systems.nadafd.method import NADAFDStrategy
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed

log = get_logger(__name__)

__all__ = ["ENGINES", "Trained", "attack_of", "make_strategy", "run", "run_one", "settings", "summarise",
           "train_federation"]


def attack_of(setting: str) -> str | None:
    """The attack of a setting name: ``speckle``, ``badnets_m0.2`` -> ``badnets``, ``no_attack`` -> ``None``."""
    return None if setting == "no_attack" else setting.split("_m")[0]


def settings(cfg: Config) -> list[tuple[str, float]]:
    """``(setting, malicious_fraction)`` of every attack setting: one per attack (``cfg.malicious_fraction``),
    or, when ``cfg.malicious_fractions`` is set, one per attack × fraction named ``<attack>_m<fraction>``."""
    if not cfg.malicious_fractions:
        return [(a, cfg.malicious_fraction) for a in cfg.attacks]
    return [(f"{a}_m{f:g}", float(f)) for a in cfg.attacks for f in cfg.malicious_fractions]


def _model_fn(cfg: Config, num_classes: int) -> torch.nn.Module:
    return SARCNN(num_classes=num_classes, image_size=cfg.image_size, width=cfg.width)


def expected_attackers(cfg: Config, data: FedData) -> int:
    """Attackers expected among the clients of one round (``f`` of Krum, Multi-Krum, Bulyan)."""
    k = len(data.parts)
    n_sel = min(k, max(1, int(round(cfg.fraction_fit * k))))
    return int(round(len(data.malicious) * n_sel / k))


def make_strategy(method: str, cfg: Config, data: FedData, seed: int) -> Strategy:
    """A baseline or a NADAFD variant by name.

    ``nadafd``: FDCI + NAAT + DHA (the abstract's three modules); ``nadafd_collusion``: the same plus
    our collusion term in DHA's quality; ``nadafd_no_fdci|naat|dha``: ``nadafd`` without one module.
    """
    model_fn = partial(_model_fn, cfg, data.num_classes)
    if method.startswith("nadafd"):
        off = method.removeprefix("nadafd_no_") if method.startswith("nadafd_no_") else ""
        return NADAFDStrategy(model_fn, cfg.image_size, data.num_classes, use_fdci=off != "fdci", use_dha=off != "dha",
                              use_naat=off != "naat", rho=cfg.dha_rho, tau=cfg.dha_tau, z0=cfg.dha_z0,
                              fdci_every=cfg.fdci_every, fdci_steps=cfg.fdci_steps, fdci_probes=cfg.fdci_probes,
                              fdci_cost=cfg.fdci_cost, rule=cfg.dha_rule, behaviour=cfg.dha_behaviour,
                              fdci_target=cfg.fdci_target, fdci_group=cfg.fdci_group, fdci_score=cfg.fdci_score,
                              collusion=method == "nadafd_collusion", collusion_group=cfg.dha_group,
                              collusion_z=cfg.dha_z1, seed=derive_seed(seed, "nadafd"))
    return make_baseline(method, cfg, expected_attackers(cfg, data), model_fn, data.root.x, data.root.y, seed)


ENGINES = ("inprocess", "flower-sim", "flower-inline")


@dataclass
class Trained:
    """One trained federation: the History (partition ids as client ids), the strategy, the triggered test set."""

    history: History
    strategy: Strategy
    model_fn: Callable[[], torch.nn.Module]
    engine: str
    seconds: float
    node_to_partition: dict[Any, int] = field(default_factory=dict)


def train_federation(cfg: Config, data: FedData, setting: str, method: str, seed: int,
                     engine: str = "inprocess") -> Trained:
    """Build clients and strategy and train ``cfg.rounds`` rounds on ``engine``.

    Engines: ``inprocess`` (:func:`trustlab.federated.simulate`), ``flower-sim`` (Flower ServerApp +
    ClientApp on the Simulation Engine, Ray backend), ``flower-inline`` (the same apps, messages
    delivered in this process). Flower engines key clients by node id; the returned History is
    relabelled to partition ids (from the nodes' ``partition-id``) so metrics compare across engines.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    t0 = time.perf_counter()
    attack = attack_of(setting)
    model_fn = partial(_model_fn, cfg, data.num_classes)
    torch.manual_seed(derive_seed(seed, "init"))
    init = get_parameters(model_fn())
    clients = _build_clients(cfg, data, setting, seed)
    strategy = make_strategy(method, cfg, data, seed)
    evaluate = make_evaluator(cfg, data, eval_triggers(attack, cfg, len(data.malicious), seed), model_fn)
    desc = f"{setting}/{method}/seed={seed}"
    mapping: dict[Any, int] = {}
    if engine == "inprocess":
        hist = simulate(strategy, clients, init, cfg.rounds, fraction_fit=cfg.fraction_fit, evaluate_fn=evaluate,
                        seed=seed, desc=desc)
    else:
        from trustlab.federated.flower import run_on_flower

        factory = None if engine == "flower-inline" else partial(
            worker_client, json.dumps(asdict(cfg), sort_keys=True), setting, seed)
        hist, mapping = run_on_flower(strategy, clients, init, cfg.rounds, cfg.fraction_fit, evaluate, seed,
                                      inline=engine == "flower-inline", client_fn=factory)
    return Trained(hist, strategy, model_fn, engine, time.perf_counter() - t0, mapping)


def _build_clients(cfg: Config, data: FedData, setting: str, seed: int) -> list[Any]:
    attack = attack_of(setting)
    trigger = attacker_triggers(attack, cfg, len(data.malicious), seed) if attack else None
    model_fn = partial(_model_fn, cfg, data.num_classes)
    naat = {"eps": cfg.naat_eps, "steps": cfg.naat_steps, "beta": cfg.naat_beta, "fraction": cfg.naat_fraction,
            "looks": list(cfg.naat_looks), "offset": cfg.naat_offset}
    return make_clients(data.train.x, data.train.y, data.parts, data.malicious, trigger, attack == "dba", model_fn,
                        seed, epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                        target=cfg.target_class, poison_fraction=cfg.poison_fraction, scale_gamma=cfg.scale_gamma,
                        naat=naat, lr_decay=cfg.lr_decay)


@lru_cache(maxsize=2)
def _worker_clients(cfg_json: str, setting: str, seed: int) -> list[Any]:
    cfg = Config(**json.loads(cfg_json))
    return _build_clients(cfg, build_data(cfg, seed), setting, seed)


def worker_client(cfg_json: str, setting: str, seed: int, pid: int, context: Any) -> Any:
    """The client of partition ``pid``, rebuilt (once per worker process) from the config: what the
    Simulation Engine's ClientApp calls, so that a message carries a few hundred bytes of config
    instead of every client's data."""
    return _worker_clients(cfg_json, setting, seed)[pid]


def make_evaluator(cfg: Config, data: FedData, trigger: Trigger | Sequence[Trigger] | None,
                   model_fn: Callable[[], torch.nn.Module]) -> Callable[[int, NDArrays], dict[str, float]]:
    """Centralised evaluation ``f(round, params) -> {clean_acc, asr, asr_max}`` on the test chips.

    ASR is measured on the non-target test chips stamped with a trigger; with several triggers (one
    per attacker, see ``data.eval_triggers``) ``asr`` is the mean over the triggers and ``asr_max``
    the largest. ``None``: the shared speckle trigger (no attack: the defense's cost is then read
    off ``clean_acc``).
    """
    test_x, test_y = data.test.x, data.test.y
    keep = test_y != cfg.target_class
    trigs = list(trigger) if isinstance(trigger, Sequence) else [trigger or eval_triggers(None, cfg, 0, 0)[0]]
    trig_xs = [t(test_x[keep]) for t in trigs]
    evaluator = model_fn().eval()

    def evaluate(rnd: int, params: NDArrays) -> dict[str, float]:
        set_parameters(evaluator, params)
        with torch.no_grad():
            acc = clean_accuracy(evaluator(test_x).argmax(1).numpy(), test_y.numpy())
            asrs = [attack_success_rate(evaluator(tx).argmax(1).numpy(), test_y[keep].numpy(), cfg.target_class)
                    for tx in trig_xs]
        return {"clean_acc": acc, "asr": float(np.mean(asrs)), "asr_max": float(np.max(asrs))}

    return evaluate


def summarise(cfg: Config, data: FedData, setting: str, method: str, trained: Trained) -> dict[str, Any]:
    """Final clean accuracy and ASR, detection precision/recall, health and per-round curves."""
    hist, strategy = trained.history, trained.strategy
    attack = attack_of(setting)
    final = hist.rounds[-1].centralized
    metrics: dict[str, Any] = {"clean_acc": final["clean_acc"], "asr": final["asr"],
                               "asr_max": final.get("asr_max", final["asr"]), "seconds": trained.seconds}
    mal = set(data.malicious) if attack else set()
    flagged, truth = [], []
    for r in hist.rounds[1:]:
        flagged += [(r.round, c) for c in r.train.get("rejected", [])]
        flagged += [(r.round, c) for c, w in r.train.get("weights", {}).items()
                    if w <= 1e-9 and c not in r.train.get("rejected", [])]
        truth += [(r.round, c) for c in r.selected if c in mal]
    if attack and method not in ("fedavg", "median", "trimmed_mean"):
        p, rcl = detection_precision_recall(flagged, truth)
        metrics.update(det_precision=p, det_recall=rcl)
    if isinstance(strategy, NADAFDStrategy) and strategy.use_dha and mal:
        rel = trained.node_to_partition
        late = strategy.quality_log_[len(strategy.quality_log_) // 2 :]
        vals = [(rel.get(c, c), v) for d in late for c, v in d.items()]
        metrics["health_malicious"] = float(np.mean([v for c, v in vals if c in mal]))
        metrics["health_benign"] = float(np.mean([v for c, v in vals if c not in mal]))
    curve = [{"clean_acc": r.centralized["clean_acc"], "asr": r.centralized["asr"]} for r in hist.rounds]
    return {"metrics": metrics, "curve": curve}


def run_one(cfg: Config, data: FedData, setting: str, method: str, seed: int,
            engine: str = "inprocess") -> dict[str, Any]:
    """Train one federated model and measure clean accuracy, ASR, detection and per-round curves."""
    return summarise(cfg, data, setting, method, train_federation(cfg, data, setting, method, seed, engine))


def _units(cfg: Config) -> list[tuple[str, str]]:
    # no_attack: FedAvg (the clean reference) and every NADAFD row that is run (the defense's cost)
    units = [("no_attack", cfg.malicious_fraction, m) for m in ("fedavg", "nadafd", "nadafd_collusion")
             if m == "fedavg" or m in cfg.methods] if cfg.clean_reference else []
    for setting, frac in settings(cfg):
        units += [(setting, frac, m) for m in cfg.methods]
    return units


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Run every (setting, method, seed) unit and record figures, curves and claims."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    rec = ctx.record(cfg)
    cache: dict[tuple[int, float], tuple[Config, FedData]] = {}
    # a unit's result depends on neither the seed list nor the other methods run: resuming with more seeds
    # or fewer methods (units copied from another run folder of the same config) reuses finished units
    unit_hash = config_hash(cfg, exclude=("seeds", "device", "methods"))
    for seed in cfg.seeds:
        for setting, frac, method in _units(cfg):
            def unit(seed: int = seed, setting: str = setting, frac: float = frac,
                     method: str = method) -> dict[str, Any]:
                if (seed, frac) not in cache:
                    scfg = replace(cfg, malicious_fraction=frac)
                    cache.clear()  # one data set at a time
                    cache[(seed, frac)] = scfg, build_data(scfg, seed)
                scfg, data = cache[(seed, frac)]
                return run_one(scfg, data, setting, method, seed)

            res = ctx.unit(f"{setting}/{method}/seed={seed}", unit, seed=seed, config_hash=unit_hash)
            rec.add_row(setting, method, seed, **res["metrics"])
            for step, point in enumerate(res["curve"]):
                rec.add_series(setting, method, seed, step, **point)
            log.info("%s/%s seed=%d: %s", setting, method, seed,
                     {k: round(v, 3) for k, v in res["metrics"].items()})
    _claims(rec, cfg)
    from trustlab.systems.nadafd.plots import KEY_FIGURE, plot_asr_clean

    if cfg.malicious_fractions:
        from trustlab.systems.nadafd.protocol import write_protocol_summary

        rec.plots += write_protocol_summary(rec.rows, rec.series, cfg, ctx.out)
    elif plot_asr_clean(rec.series, ctx.out / "plots" / KEY_FIGURE) is not None:
        rec.plots.append(f"plots/{KEY_FIGURE}")
    rec.notes.append("Paper tables are not public (abstract only; possibly withdrawn): claims are the issue's "
                     "qualitative Done-when figures on the embedded SAR simulator, not the paper's numbers.")
    return rec


def _claims(rec: RunRecord, cfg: Config) -> None:
    main = settings(cfg)[0][0]
    methods = set(cfg.methods)

    def m(method: str, metric: str, setting: str = main) -> float:
        return rec.mean(method, metric, setting)

    if "fedavg" not in methods:  # a subset run (e.g. --set methods=[median,nadafd]): no reference, no claims
        return
    fedavg_asr = m("fedavg", "asr")
    rec.add_claim("attack_works", f"the attack works: FedAvg ASR >= 0.8 ({main})", fedavg_asr >= 0.8,
                  fedavg_asr=fedavg_asr)
    if "nadafd" not in methods:
        return
    ours = m("nadafd", "asr")
    rec.add_claim("nadafd_asr", "NADAFD ASR <= 0.10", ours <= 0.10, nadafd_asr=ours)
    base = {b: m(b, "asr") for b in BASELINES if b in methods}
    if base:
        worst = min(base, key=base.get)
        rec.add_claim("beats_baselines", "NADAFD ASR lower than every baseline's by >= 0.05",
                      all(ours <= v - 0.05 for v in base.values()), nadafd_asr=ours, best_baseline=worst,
                      best_baseline_asr=base[worst])
    acc = m("nadafd", "clean_acc")
    if not cfg.clean_reference:
        return
    ref = m("fedavg", "clean_acc", "no_attack")
    rec.add_claim("clean_acc_kept", "NADAFD clean acc (under attack) within 5 points of FedAvg without attack",
                  acc >= ref - 0.05, nadafd_clean_acc=acc, fedavg_no_attack_clean_acc=ref)
    clean = m("nadafd", "clean_acc", "no_attack")
    rec.add_claim("no_attack_cost", "without attackers, NADAFD's clean acc within 5 points of FedAvg's",
                  clean >= ref - 0.05, nadafd_no_attack_clean_acc=clean, fedavg_no_attack_clean_acc=ref)
    if "nadafd_collusion" in methods:
        rec.add_claim("collusion_row", "nadafd_collusion (our addition) vs nadafd (the abstract's modules): ASR",
                      m("nadafd_collusion", "asr") <= ours, nadafd_asr=ours,
                      nadafd_collusion_asr=m("nadafd_collusion", "asr"))
    for mod in ("fdci", "naat", "dha"):
        name = f"nadafd_no_{mod}"
        if name not in methods:
            continue
        d_asr, d_acc = m(name, "asr") - ours, m(name, "clean_acc") - acc
        rec.add_claim(f"ablation_{mod}", f"removing {mod.upper()} raises ASR or lowers clean acc",
                      d_asr > 0 or d_acc < 0, asr_without=m(name, "asr"), asr_full=ours, delta_asr=d_asr,
                      delta_clean_acc=d_acc)
