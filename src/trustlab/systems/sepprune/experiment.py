"""SepPrune experiment: dense -> prune (SepPrune / L1 / HRank / random) -> one fine-tuning epoch, against
the dense model given the same epoch and the pruned architecture trained from scratch.

Two settings, each with its own selection baselines at the *same per-block widths* (identical MACs):

- ``code_eps0.7``: ``sepprune`` is the released code's recipe: scores from U(0, 1), Adam lr 0.1,
  ``code_steps`` (500) batches of ``code_batch_size`` (1), the fixed threshold ``1[sigmoid(alpha+g) >= 0.7]``
  and the mask of the last stochastic forward pass. The amount pruned is whatever the recipe lands on.
- ``macs<target>``: ``sepprune_l1init`` is our variant: scores from standardized L1 norms, the MACs
  budget projection (``target_macs``), a deterministic final mask, and a mask lr chosen on the
  validation mixtures with ``selection_seeds`` that are never reported.

Per reported seed (the dense model is pretrained once and cached):

1. each SepPrune row learns masks on the frozen dense model and prunes physically;
2. L1, HRank (feature-map rank on a calibration batch) and random keep the same per-block widths;
3. every pruned model and a copy of the dense model get one fine-tuning epoch on the same mixtures;
4. the pruned architecture is trained from scratch for ``scratch_epochs`` epochs on the same mixtures:
   convergence speed-up = steps scratch needs to reach the validation SI-SNRi the pruned model has
   after its epoch / steps the pruned model needs (a lower bound when scratch never reaches it);
5. CPU latency of dense vs the SepPrune model, interleaved in one process (batch 1).

Test mixtures give every reported figure; validation mixtures give the selection and the curves.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from trustlab.errors import UserError
from trustlab.reporting import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.sepprune.analysis import (
    CostModel,
    linear_cost_model,
    measure_latency,
    module_breakdown,
    n_params,
)
from trustlab.systems.sepprune.artifacts import build_model, load_model, save_model
from trustlab.systems.sepprune.baselines import hrank_keep, l1_keep, random_keep, scratch_model
from trustlab.systems.sepprune.config import Config
from trustlab.systems.sepprune.data import ExperimentData, corpus_recipe, load_data
from trustlab.systems.sepprune.method import SepPrune, keep_indices
from trustlab.systems.sepprune.training import batches, evaluate, train
from trustlab.utils.cache import cache_path
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import derive_seed

log = get_logger(__name__)
CODE_SETTING = "code_eps0.7"
SELECTORS = ("l1", "hrank", "random")
SR = 8000
UNIT_VERSION = 3


def budget_setting(cfg: Config) -> str:
    """Name of the MACs-budget setting, e.g. ``macs0.5``."""
    return f"macs{cfg.target_macs:g}"


def dense_recipe(cfg: Config) -> dict[str, Any]:
    """Everything that determines the pretrained dense model (its cache key)."""
    return {"v": 2, "spec": cfg.model.spec(), "corpus": corpus_recipe(cfg), "train_dir": cfg.train_dir,
            "segment_s": cfg.segment_s, "n_test_speakers": cfg.n_test_speakers, "n_val_speakers": cfg.n_val_speakers,
            "steps": cfg.pretrain_steps, "lr": cfg.pretrain_lr, "batch_size": cfg.batch_size, "seed": cfg.pretrain_seed}


def pretrained_dense(cfg: Config, data: ExperimentData, device: torch.device) -> torch.nn.Module:
    """The dense model of ``cfg``, trained once and cached under the trustlab cache by recipe."""
    path = cache_path("sepprune-dense", dense_recipe(cfg), suffix="")
    if path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file():
        log.info("dense model from cache %s", path)
        return load_model(path).to(device)
    torch.manual_seed(cfg.pretrain_seed)
    model = build_model(cfg.model.spec())
    ds = data.make_train(cfg.pretrain_steps * cfg.batch_size, derive_seed(cfg.pretrain_seed, "pretrain"))
    losses = train(model, batches(ds, cfg.batch_size, cfg.pretrain_seed), cfg.pretrain_steps, cfg.pretrain_lr,
                   device=device, desc="dense pretraining")
    save_model(model.cpu(), path, {"recipe": dense_recipe(cfg), "final_loss": sum(losses[-50:]) / min(50, len(losses))})
    return model.to(device)


def _eval(model: torch.nn.Module, data: ExperimentData, device: torch.device, prefix: str = "") -> dict[str, float]:
    """Test SI-SNRi (final figures add BSS-Eval SDRi), real-speech SI-SNRi, and validation SI-SNRi."""
    with_sdr = not prefix
    out = {f"{prefix}{k}": v for k, v in evaluate(model, *data.test, device=device, with_sdr=with_sdr).items()}
    if data.real is not None:
        out[f"{prefix}si_snri_real_db"] = evaluate(model, *data.real, device=device, with_sdr=False)["si_snri_db"]
    out[f"{prefix}val_si_snri_db"] = evaluate(model, *data.val, device=device, with_sdr=False)["si_snri_db"]
    return out


def _finetune(model: torch.nn.Module, cfg: Config, data: ExperimentData, seed: int, device: torch.device,
              epochs: int = 1, curve: bool = False) -> list[dict[str, float]]:
    """Fine-tune ``epochs`` passes over the seed's fine-tuning set; optional validation curve (by step)."""
    ds = data.make_train(cfg.finetune_mixtures, derive_seed(seed, "finetune"))
    it = batches(ds, cfg.batch_size, derive_seed(seed, "order"), epochs=epochs)
    per_epoch = len(ds) // cfg.batch_size
    total = per_epoch * epochs
    marks = sorted({max(1, round(per_epoch * (k + 1) / cfg.curve_points)) + e * per_epoch
                    for e in range(epochs) for k in range(cfg.curve_points)}) if curve else [total]
    points, done = [], 0
    opt_state: dict[str, Any] = {}
    for mark in marks:
        train(model, it, mark - done, cfg.finetune_lr, device=device, desc="fine-tune", state=opt_state)
        done = mark
        if curve:
            p = {"step": done, "epoch": done / per_epoch,
                 "val_si_snri_db": evaluate(model, *data.val, device=device, with_sdr=False)["si_snri_db"]}
            if done % per_epoch == 0:
                p["test_si_snri_db"] = evaluate(model, *data.test, device=device, with_sdr=False)["si_snri_db"]
            points.append(p)
    return points


def _select(method: str, dense: torch.nn.Module, cost: CostModel, cfg: Config, data: ExperimentData, seed: int,
            device: torch.device, counts: dict[str, int] | None = None, lr: float | None = None) -> tuple[dict, dict]:
    """Channel selection of ``method``: ``(keep indices, extra)``."""
    extra: dict[str, Any] = {}
    if method in ("sepprune", "sepprune_l1init"):
        if method == "sepprune":  # the released code's recipe
            sp = SepPrune(eps=cfg.eps, target_macs=None, steps=cfg.code_steps, lr=cfg.code_lr, init="uniform",
                          final="last_sample", seed=seed)
            bs = cfg.code_batch_size
        else:
            sp = SepPrune(eps=cfg.eps, target_macs=cfg.target_macs, steps=cfg.mask_steps, lr=float(lr), init="l1",
                          init_scale=cfg.mask_init_scale, distill=cfg.mask_distill, anneal=cfg.mask_anneal, seed=seed)
            bs = cfg.batch_size
        ds = data.make_train(sp.steps * bs, derive_seed(seed, "mask"))
        sp.fit(dense, batches(ds, bs, derive_seed(seed, "mask-order")), cost, device=device)
        keep = keep_indices(sp.keep(cost))
        extra["mask_history"] = sp.history_[:: max(1, len(sp.history_) // 50)]
    elif method == "l1":
        keep = l1_keep(dense, counts)
    elif method == "hrank":
        calib = data.make_train(cfg.hrank_batch, derive_seed(seed, "calibration"))
        mix = torch.stack([calib[i][0] for i in range(len(calib))]).to(device)
        keep = hrank_keep(dense, counts, mix)
    elif method == "random":
        keep = random_keep(dense, counts, derive_seed(seed, "random"))
    else:
        raise ValueError(method)
    return keep, extra


def _pruned_unit(setting: str, method: str, dense: torch.nn.Module, cost: CostModel, cfg: Config,
                 data: ExperimentData, seed: int, device: torch.device, ctx: RunContext | None,
                 counts: dict[str, int] | None = None, lr: float | None = None, curve: bool = False) -> dict[str, Any]:
    keep, extra = _select(method, dense, cost, cfg, data, seed, device, counts, lr)
    pruned = dense.prune(keep).to(device)
    kept = {g: len(v) for g, v in keep.items()}
    metrics = {"macs_ratio": cost.ratio(kept), "params_ratio": n_params(pruned) / n_params(dense)}
    metrics.update(_eval(pruned, data, device, prefix="pre_"))
    points = _finetune(pruned, cfg, data, seed, device, curve=curve)
    metrics.update(_eval(pruned, data, device))
    if ctx is not None:
        save_model(pruned.cpu(), ctx.out / "models" / f"{setting}_{method}_seed{seed}",
                   {"method": method, "setting": setting, "seed": seed, "keep": {g: v.tolist() for g, v in keep.items()}})
    return {"metrics": metrics, "counts": kept, "curve": points, "v": UNIT_VERSION, **extra}


def _paired(rec: RunRecord, setting: str, a: str, b: str, metric: str = "si_snri_db") -> dict[str, float]:
    """Mean paired difference ``a - b`` over seeds with its 95 % t-interval (NaN bounds for one seed)."""
    rows = {(r["method"], r["seed"]): r for r in rec.rows if r["setting"] == setting}
    d = [rows[(a, s)][metric] - rows[(b, s)][metric] for s in sorted({s for m, s in rows if m == a})
         if (b, s) in rows and metric in rows[(a, s)] and metric in rows[(b, s)]]
    n = len(d)
    mean = sum(d) / n if n else float("nan")
    if n < 2:
        return {"diff": mean, "lo": float("nan"), "hi": float("nan"), "n": n}
    from scipy.stats import t

    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"diff": mean, "lo": mean - half, "hi": mean + half, "n": n}


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Run the SepPrune experiment (see the module docstring)."""
    rec = ctx.record(cfg)
    device = ctx.device
    data = load_data(cfg)
    rec.notes.append(data.description)
    dense = pretrained_dense(cfg, data, device)
    dense.eval()
    cost = linear_cost_model(dense.cpu(), SR, build_model)
    floor = (cost.base + sum(cost.cost.values())) / cost.dense
    if cfg.target_macs < floor:
        raise UserError(f"target_macs={cfg.target_macs} is below {floor:.3f}, the least a {cfg.model.arch} can reach by "
                        f"pruning its groups {sorted(cost.cost)} to one channel each",
                        f"raise target_macs above {floor:.3f}")
    dense.to(device)
    base = {k[len("pre_"):]: v for k, v in _eval(dense, data, device, prefix="pre_").items()}
    rec.extra.update({"dense_pretrained": base, "structure": module_breakdown(dense.cpu(), SR),
                      "dense_macs_per_second": cost.dense, "dense_params": n_params(dense)})
    rec.extra["training_budget"] = {
        "finetune_mixtures_per_method": cfg.finetune_mixtures,
        "sepprune_mask_mixtures": cfg.code_steps * cfg.code_batch_size,
        "sepprune_l1init_mask_mixtures": cfg.mask_steps * cfg.batch_size,
        "note": "mask learning runs forward/backward passes of the frozen dense model on extra mixtures "
                "(no weight update); every pruned model then gets the same one fine-tuning epoch",
    }
    dense.to(device)

    # -- validation selection of sepprune_l1init's mask lr (selection seeds are never reported) --
    lrs = [float(x) for x in cfg.l1init_lrs]
    chosen = lrs[0]
    if len(lrs) > 1:
        scores = {}
        for lr in lrs:
            vals = [ctx.unit(f"select/sepprune_l1init/lr={lr:g}/seed={s}",
                             lambda lr=lr, s=s: _pruned_unit("select", "sepprune_l1init", dense, cost, cfg, data, s,
                                                             device, None, lr=lr), seed=s)["metrics"]["val_si_snri_db"]
                    for s in cfg.selection_seeds]
            scores[f"{lr:g}"] = sum(vals) / len(vals)
        chosen = float(max(scores, key=lambda k: scores[k]))
        rec.extra["selection"] = {"parameter": "sepprune_l1init mask lr", "rule": "highest mean validation SI-SNRi "
                                  "after the fine-tuning epoch", "seeds": cfg.selection_seeds,
                                  "validation_si_snri_db": scores, "chosen": chosen}
    rec.notes.append(f"sepprune_l1init mask lr {chosen:g}" + (" (chosen on validation mixtures with seeds "
                     f"{cfg.selection_seeds}, never reported)" if len(lrs) > 1 else ""))
    bset = budget_setting(cfg)
    main_method = {CODE_SETTING: "sepprune", bset: "sepprune_l1init"}
    for seed in cfg.seeds:
        def dense_unit(s: int = seed) -> dict[str, Any]:
            model = copy.deepcopy(dense)
            _finetune(model, cfg, data, s, device)
            return {"metrics": {"macs_ratio": 1.0, "params_ratio": 1.0, **{f"pre_{k}": v for k, v in base.items()},
                                **_eval(model, data, device)}, "v": UNIT_VERSION}

        dres = ctx.unit(f"dense/seed={seed}", dense_unit, seed=seed)
        for setting, method in main_method.items():
            res = {method: ctx.unit(f"{setting}/{method}/seed={seed}",
                                    lambda st=setting, m=method, s=seed: _pruned_unit(
                                        st, m, dense, cost, cfg, data, s, device, ctx, lr=chosen, curve=True),
                                    seed=seed)}
            counts = res[method]["counts"]
            for m in SELECTORS:
                res[m] = ctx.unit(f"{setting}/{m}/seed={seed}",
                                  lambda st=setting, m=m, s=seed, c=counts: _pruned_unit(
                                      st, m, dense, cost, cfg, data, s, device, ctx, c), seed=seed)

            def scratch_unit(s: int = seed, counts: dict[str, int] = counts) -> dict[str, Any]:
                model = scratch_model(dense, counts, derive_seed(s, "scratch")).to(device)
                pre = _eval(model, data, device, prefix="pre_")
                curve = _finetune(model, cfg, data, s, device, epochs=cfg.scratch_epochs, curve=True)
                after = _eval(model, data, device)  # after all scratch epochs (the curve holds the path)
                return {"metrics": {"macs_ratio": cost.ratio(counts), "params_ratio": n_params(model) / n_params(dense),
                                    **pre, **{f"final_{k}": v for k, v in after.items()}}, "curve": curve,
                        "v": UNIT_VERSION}

            res["scratch"] = ctx.unit(f"{setting}/scratch/seed={seed}", scratch_unit, seed=seed)

            def latency_unit(st: str = setting, m: str = method, s: int = seed) -> dict[str, Any]:
                pruned = load_model(ctx.out / "models" / f"{st}_{m}_seed{s}")
                lat = measure_latency({"dense": copy.deepcopy(dense).cpu(), "pruned": pruned},
                                      int(cfg.latency_s * SR), repeats=cfg.latency_repeats)
                return {"dense_s": lat["dense"], "pruned_s": lat["pruned"]}

            lat = ctx.unit(f"{setting}/latency/seed={seed}", latency_unit, seed=seed)
            ratio = lat["pruned_s"] / lat["dense_s"]
            dense_db = dres["metrics"]["si_snri_db"]
            # convergence: validation SI-SNRi the pruned model reaches after its epoch, and who gets there when
            pcurve, scurve = res[method]["curve"], res["scratch"]["curve"]
            target = pcurve[-1]["val_si_snri_db"]
            p_steps = next(p["step"] for p in pcurve if p["val_si_snri_db"] >= target)
            s_hit = [p["step"] for p in scurve if p["val_si_snri_db"] >= target]
            s_steps = s_hit[0] if s_hit else scurve[-1]["step"]
            # the scratch row's one-epoch figures are the ones compared with the pruned rows
            per_epoch = cfg.finetune_mixtures // cfg.batch_size
            rows = {"dense": dres["metrics"], **{m: r["metrics"] for m, r in res.items()}}
            for m, metrics in rows.items():
                row = {k: v for k, v in metrics.items() if v == v}
                if m == "scratch":
                    one = next(p for p in scurve if p["step"] == per_epoch)
                    row["val_si_snri_db"] = one["val_si_snri_db"]
                    row["si_snri_db"] = one["test_si_snri_db"]
                    row["steps_to_match"] = float(s_steps)
                    row["matched"] = 1.0 if s_hit else 0.0
                row["latency_ratio"] = 1.0 if m == "dense" else ratio
                row["latency_s"] = lat["dense_s"] if m == "dense" else lat["pruned_s"]
                row["recovery"] = row["si_snri_db"] / dense_db if dense_db > 0 else 0.0
                if m == method:
                    row["speedup_vs_scratch"] = s_steps / p_steps
                    row["speedup_is_lower_bound"] = 0.0 if s_hit else 1.0
                rec.add_row(setting, m, seed, **row)
            for p in scurve:
                rec.add_series(setting, "scratch", seed, p["step"], val_si_snri_db=p["val_si_snri_db"])
            for p in pcurve:
                rec.add_series(setting, method, seed, p["step"], val_si_snri_db=p["val_si_snri_db"])
            rec.extra.setdefault("counts", {}).setdefault(setting, {})[str(seed)] = counts
            rec.extra.setdefault("mask_history", {}).setdefault(setting, {})[str(seed)] = res[method].get("mask_history", [])
    _claims(rec, cfg)
    try:
        from trustlab.systems.sepprune.plots import plot_key_figure

        plot_key_figure(rec, ctx.out / "plots" / KEY_FIGURE)
    except Exception as exc:  # noqa: BLE001 - a plotting failure must not lose the run
        log.warning("key figure not drawn: %s", exc)
    return rec


KEY_FIGURE = "si_snri_vs_macs.png"


def _claims(rec: RunRecord, cfg: Config) -> None:
    """Measured comparisons (paired 95 % intervals over seeds) and the paper's two headline figures."""
    for setting, method in ((CODE_SETTING, "sepprune"), (budget_setting(cfg), "sepprune_l1init")):
        def mean(m: str, metric: str, st: str = setting) -> float:
            return rec.mean(m, metric, st)

        for base in ("l1", "random", "hrank", "scratch"):
            p = _paired(rec, setting, method, base)
            holds = bool(p["lo"] > 0) if p["n"] >= 2 else bool(p["diff"] > 0)
            rec.add_claim(f"{setting}:{method}>{base}", f"[{setting}] after one fine-tuning epoch {method} beats "
                          f"{base} at the same widths (paired 95 % interval of the SI-SNRi difference above 0)",
                          holds, diff=p["diff"], lo=p["lo"], hi=p["hi"], n=p["n"], **{method: mean(method, "si_snri_db"),
                                                                                   base: mean(base, "si_snri_db")})
        rec.add_claim(f"{setting}:recovery", f"[{setting}] {method} recovers >= 85 % of the dense model's SI-SNRi after "
                      "one epoch (paper: 85-88 %; dense = pretrained + the same epoch)",
                      mean(method, "recovery") >= 0.85, recovery=mean(method, "recovery"),
                      macs_ratio=mean(method, "macs_ratio"), dense=mean("dense", "si_snri_db"))
        lb = mean(method, "speedup_is_lower_bound")
        rec.add_claim(f"{setting}:speedup", f"[{setting}] fine-tuning {method} reaches its one-epoch validation SI-SNRi "
                      "faster than training the architecture from scratch (steps ratio > 1; paper: 36x)",
                      mean(method, "speedup_vs_scratch") > 1, speedup=mean(method, "speedup_vs_scratch"),
                      lower_bound_fraction=lb, scratch_steps=mean("scratch", "steps_to_match"))
