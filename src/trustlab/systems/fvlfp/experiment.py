"""FVL-FP experiment: pretrain (or load) the CLIP, federate prompt tuning, compare methods on fairness.

Per seed: draw the non-IID FairVL federation, encode every image once with the frozen image tower
(prompt tuning never changes it), then run each method with the shared in-process simulator
(:func:`trustlab.federated.simulate`) and evaluate the final global prompt on the balanced global test
set (accuracy, DP/EO difference, worst-(label, group) accuracy) and on every client's own test split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.data.fair_vl import FairVLBatch, FairVLFederation, FairVLSpec
from trustlab.federated import FedAvg, Strategy, simulate
from trustlab.models.tiny_clip import HFCLIPBackbone, VLBackbone
from trustlab.reporting import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.fvlfp.baselines import FairFedStrategy, QFFLStrategy, zero_shot_eval
from trustlab.systems.fvlfp.config import Config
from trustlab.systems.fvlfp.data import load_npz_federation, synthetic_federation
from trustlab.systems.fvlfp.method import (
    FLAGS,
    FPFStrategy,
    LocalTrainConfig,
    PromptClient,
    PromptLearner,
    classify,
    evaluate_global,
)
from trustlab.systems.fvlfp.pretrain import PretrainRecipe, load_or_pretrain
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed

log = get_logger(__name__)

Feats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def world_spec(cfg: Config) -> FairVLSpec:
    """The FairVL world of the config."""
    return FairVLSpec(image_size=cfg.image_size, class_signal=cfg.class_signal, group_signal=cfg.group_signal,
                      noise=cfg.noise, text_alignment=cfg.text_alignment)


def pretrain_recipe(cfg: Config) -> PretrainRecipe:
    """The TinyCLIP pretraining recipe of the config (its hash is the cache key)."""
    s = world_spec(cfg)
    world = {"image_size": s.image_size, "class_signal": s.class_signal, "group_signal": s.group_signal, "noise": s.noise}
    return PretrainRecipe(world=world, n_pairs=cfg.pretrain_pairs, epochs=cfg.pretrain_epochs, corr=cfg.pretrain_corr)


def load_backbone(cfg: Config, device: torch.device) -> tuple[VLBackbone, dict[str, Any]]:
    """The frozen dual encoder (on CPU): the cached/pretrained TinyCLIP or a transformers CLIPModel folder.

    ``device`` is kept for API symmetry; images are encoded on the run device by :func:`encode`.
    """
    if cfg.backbone == "tiny":
        model, info = load_or_pretrain(pretrain_recipe(cfg), "cpu")  # toy-sized: CPU is faster than a GPU
        backbone: Any = model
    else:  # kept on CPU for prompt tuning (a few text passes per step); images are encoded on `device`
        backbone, info = HFCLIPBackbone.from_pretrained(cfg.backbone, "cpu"), {"path": cfg.backbone}
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone, info


def encode(backbone: VLBackbone, batch: FairVLBatch, device: torch.device | str = "cpu", chunk: int = 256) -> Feats:
    """Normalised image features (returned on CPU) with labels and groups; the images go through ``device``."""
    module: Any = backbone
    home = next(module.parameters()).device
    module.to(device)
    try:
        with torch.no_grad():
            z = torch.cat([F.normalize(backbone.encode_image(batch.images[i: i + chunk].to(device)), dim=-1).float().cpu()
                           for i in range(0, len(batch), chunk)])
    finally:
        module.to(home)
    return z, batch.labels.cpu(), batch.groups.cpu()


def make_strategy(method: str, cfg: Config) -> Strategy:
    """Server strategy of a method."""
    if method == "fairfed":
        return FairFedStrategy(beta=cfg.fairfed_beta)
    if method == "qffl":
        return QFFLStrategy(q=cfg.qffl_q, lr=cfg.lr)
    if FLAGS[method].fpf:
        return FPFStrategy(eta=cfg.fpf_eta, gamma=cfg.fpf_gamma)
    return FedAvg()


def run_method(method: str, cfg: Config, backbone: VLBackbone, class_names: tuple[str, ...],
               group_names: tuple[str, ...], feats: dict[str, Any], seed: int, engine: str = "inprocess",
               return_arrays: bool = False) -> dict[str, Any]:
    """Train (federated) and evaluate one method for one seed; returns metrics, curve and diagnostics.

    ``engine``: ``inprocess`` (:func:`trustlab.federated.simulate`), ``flower-sim`` (Flower ServerApp +
    ClientApp on the Simulation Engine) or ``flower-inline`` (the same apps in this process).
    ``return_arrays`` adds the final prompt arrays under ``"arrays"`` (not JSON; for saving).
    """
    t0 = time.perf_counter()
    test = feats["test"]
    if method == "zero_shot":
        return {"metrics": {**zero_shot_eval(backbone, class_names, *test), "seconds": time.perf_counter() - t0},
                "curve": [], "weights": {}}
    flags = FLAGS[method]
    tc = LocalTrainConfig(local_steps=cfg.local_steps, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                          lambda_cf=cfg.lambda_cf, lambda_layer=cfg.lambda_layer)

    def learner() -> PromptLearner:
        gen = torch.Generator().manual_seed(derive_seed(seed, "prompt-init"))
        return PromptLearner(backbone, class_names, group_names, cfg.n_ctx, deep=flags.cdfp, generator=gen)

    clients = [PromptClient(k, backbone, learner(), {"train": f["train"], "val": f["val"]}, flags, tc, seed)
               for k, f in enumerate(feats["clients"])]
    glob = learner()
    strategy = make_strategy(method, cfg)
    curve: list[dict[str, float]] = []

    def evaluate_fn(rnd: int, params: list[np.ndarray]) -> dict[str, float]:
        glob.set_arrays(params)
        m = evaluate_global(backbone, glob, *test, flags.dsop)
        curve.append({"acc": m["acc"], "dp_diff": m["dp_diff"]})
        return m

    if engine == "inprocess":
        hist = simulate(strategy, clients, glob.get_arrays(), cfg.rounds, fraction_fit=cfg.fraction_fit,
                        evaluate_fn=evaluate_fn, seed=derive_seed(seed, "sampling"), desc=method)
    elif engine in ("flower-sim", "flower-inline"):
        from trustlab.federated.flower import run_on_flower

        hist, _ = run_on_flower(strategy, clients, glob.get_arrays(), cfg.rounds, cfg.fraction_fit, evaluate_fn,
                                derive_seed(seed, "sampling"), inline=engine == "flower-inline")
    else:
        raise ValueError(f"unknown engine {engine!r}")
    glob.set_arrays(hist.parameters)
    metrics = evaluate_global(backbone, glob, *test, flags.dsop)
    groups_table = group_metric_table(backbone, glob, *test, flags.dsop, group_names)
    per_client = [evaluate_global(backbone, glob, *f["test"], flags.dsop) for f in feats["clients"]]
    metrics["client_eo_max"] = max(c["eo_diff"] for c in per_client)
    metrics["client_acc_min"] = min(c["acc"] for c in per_client)
    metrics["bytes_per_client_round"] = float(sum(a.nbytes for a in glob.get_arrays()))
    metrics["seconds"] = time.perf_counter() - t0
    last = getattr(strategy, "log_", [])
    weights = {str(k): float(v) for k, v in (last[-1]["weights"].items() if last else [])}
    out = {"metrics": metrics, "curve": curve, "weights": weights, "group_table": groups_table,
           "per_client": [{k: float(v) for k, v in c.items()} for c in per_client]}
    if return_arrays:
        out["arrays"] = hist.parameters
    return out


def group_metric_table(backbone: VLBackbone, learner: PromptLearner, z: torch.Tensor, y: torch.Tensor,
                       a: torch.Tensor, dsop: bool, group_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-group accuracy, size and per-class prediction rates (fairlearn ``MetricFrame``) on features ``z``."""
    from trustlab.metrics.fairness import group_table

    with torch.no_grad():
        pred = classify(backbone, learner, z, dsop).argmax(-1).numpy()
    names = np.asarray(group_names, dtype=object)[a.numpy()]
    return group_table(y.numpy(), pred, names, n_classes=learner.n_classes)


def build_federation(cfg: Config, seed: int) -> tuple[FairVLFederation, tuple[str, ...], tuple[str, ...]]:
    """The seed's federation (synthetic FairVL, or the user's ``.npz``)."""
    if cfg.data_path:
        return load_npz_federation(cfg.data_path)
    spec = world_spec(cfg)
    fed = synthetic_federation(spec, list(cfg.client_corrs), cfg.n_train, cfg.n_val, cfg.n_test_client, cfg.n_test,
                               seed, cfg.label_alpha)
    return fed, spec.class_names, spec.group_names


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Run every method for every seed and add the issue's claims."""
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    rec = ctx.record(cfg)
    backbone, info = load_backbone(cfg, ctx.device)
    rec.extra["backbone"] = {k: v for k, v in info.items() if k != "path"}
    rec.extra["fpf_weights"] = {}
    rec.extra["per_client"] = {}
    for seed in cfg.seeds:
        cache: dict[str, Any] = {}

        def feats(seed: int = seed, cache: dict[str, Any] = cache) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
            if not cache and cfg.features_path:  # precomputed features: no images, no encoding
                from trustlab.systems.fvlfp.data import load_feature_manifest

                cache["v"] = load_feature_manifest(cfg.features_path)
            if not cache:
                fed, cn, gn = build_federation(cfg, seed)
                dev = "cpu" if cfg.backbone == "tiny" else ctx.device
                cache["v"] = ({"test": encode(backbone, fed.test, dev),
                               "clients": [{s: encode(backbone, getattr(c, s), dev) for s in ("train", "val", "test")}
                                           for c in fed.clients]}, cn, gn)
            return cache["v"]

        for method in cfg.methods:
            def unit(method: str = method, seed: int = seed) -> dict[str, Any]:
                f, cn, gn = feats()
                return run_method(method, cfg, backbone, cn, gn, f, seed)

            res = ctx.unit(f"default/{method}/seed={seed}", unit, seed=seed)
            rec.add_row("default", method, seed, **res["metrics"])
            for step, point in enumerate(res["curve"]):
                rec.add_series("default", method, seed, step, **point)
            if res["weights"]:
                rec.extra["fpf_weights"][f"{method}/seed={seed}"] = res["weights"]
            if res.get("group_table"):  # fairlearn MetricFrame by group on the global test set
                rec.extra.setdefault("group_table", {})[f"{method}/seed={seed}"] = res["group_table"]
            if res.get("per_client"):  # each client's own test split: acc, dp_diff, eo_diff, worst_group_acc
                rec.extra["per_client"][f"{method}/seed={seed}"] = res["per_client"]
            log.info("seed %d %-14s acc %.3f dp %.3f", seed, method, res["metrics"]["acc"], res["metrics"]["dp_diff"])
    add_claims(rec, cfg)
    from trustlab.systems.fvlfp.plots import KEY_FIGURE, plot_fairness_accuracy

    if plot_fairness_accuracy(rec.rows, ctx.out / "plots" / KEY_FIGURE) is not None:
        rec.plots.append(f"plots/{KEY_FIGURE}")
    return rec


def add_claims(rec: RunRecord, cfg: Config) -> None:
    """The issue's Done-when figures, computed from the summary."""
    have = set(cfg.methods)
    if not {"promptfl", "fvlfp"} <= have:
        rec.notes.append("claims need both promptfl and fvlfp; none evaluated")
        return
    dp_p, dp_f = rec.mean("promptfl", "dp_diff"), rec.mean("fvlfp", "dp_diff")
    acc_p, acc_f = rec.mean("promptfl", "acc"), rec.mean("fvlfp", "acc")
    reduction = 1.0 - dp_f / dp_p if dp_p > 0 else 0.0
    rec.add_claim("C0", "bias is present in the FedAvg prompt-tuned model: DP(promptfl) >= 0.20", dp_p >= 0.20,
                  dp_promptfl=dp_p)
    rec.add_claim("C1", "FVL-FP reduces DP difference by >= 35% vs PromptFL (paper: 45% on average)",
                  reduction >= 0.35, dp_fvlfp=dp_f, dp_promptfl=dp_p, reduction=reduction, paper_reduction=0.45)
    rec.add_claim("C2", "FVL-FP accuracy within 6 points of PromptFL", acc_f >= acc_p - 0.06,
                  acc_fvlfp=acc_f, acc_promptfl=acc_p, gap=acc_p - acc_f)
    for comp in ("cdfp", "dsop", "fpf"):
        name = f"fvlfp_no_{comp}"
        if name in have:
            dp_a = rec.mean(name, "dp_diff")
            rec.add_claim(f"C3_{comp}", f"ablation: removing {comp.upper()} does not lower DP (DP(fvlfp) <= DP({name}))",
                          dp_f <= dp_a, dp_fvlfp=dp_f, dp_ablated=dp_a)
    for base in ("fairfed", "qffl"):
        if base in have:
            dp_b = rec.mean(base, "dp_diff")
            rec.add_claim(f"C4_{base}", f"FVL-FP has lower DP than {base}", dp_f < dp_b, dp_fvlfp=dp_f, dp_baseline=dp_b)
