"""ICFNet experiment: stratified k-fold CV x seeds, C-index (Harrell, Uno), time-dependent AUC and
integrated Brier score per method per dataset; ablations; Kaplan-Meier plot of ICFNet's predicted
risk groups with a log-rank test.

Protocol: a fixed number of epochs, the model after the last epoch is evaluated on the held-out
fold (no test-fold epoch selection, unlike the "max over epochs" of the official scripts); time
bins are fitted on the training fold only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trustlab.metrics.survival import (
    cumulative_dynamic_auc,
    harrell_c_index,
    integrated_brier_score,
    kaplan_meier,
    logrank_test,
    uno_c_index,
)
from trustlab.reporting import RunRecord
from trustlab.runner import RunContext
from trustlab.systems.icfnet.baselines import RSF, CoxPH, DeepSurv, EarlyFusion, LateFusion, single_modality
from trustlab.systems.icfnet.config import Config
from trustlab.systems.icfnet.data import SurvivalDataset, experiment_dataset
from trustlab.systems.icfnet.method import ICFNet
from trustlab.systems.icfnet.plots import KEY_FIGURE, cindex_intervals, plot_cindex_per_cohort
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


def methods_for(data: SurvivalDataset, ablate_fusion: bool = False, lite: bool = False) -> list[str]:
    """All methods that apply to a dataset (single-modality and late fusion need >= 2 modalities).

    ``lite`` adds ``icfnet_lite``: the earlier CPU cut of the architecture as a named row."""
    mods = list(data.modalities)
    has_bag = any(m.kind == "bag" for m in data.modalities.values())
    has_tab = any(m.kind == "tabular" for m in data.modalities.values())
    out = ["icfnet"] + (["icfnet_lite"] if lite else []) + ["coxph", "rsf", "deepsurv", "early_fusion"]
    if len(mods) > 1:
        out += ["late_fusion"] + [f"only_{m}" for m in mods]
    if has_bag and has_tab:  # the ablations run where every ICFNet part is active
        out += ["icfnet_no_rod", "icfnet_no_bnll"]
        if ablate_fusion:
            out.append("icfnet_no_ufm")
    return out


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def make_model(method: str, cfg: Config, seed: int, device: str) -> Any:
    """Build the estimator of ``method`` from the config."""
    nn_kw = dict(n_bins=cfg.n_bins, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, random_state=seed, device=device,
                 val_fraction=cfg.val_fraction, patience=cfg.patience, refit=cfg.refit,
                 val_metric=cfg.val_metric, balanced_sampler=cfg.balanced_sampler,
                 swa=cfg.swa, head_init=cfg.head_init)
    icf_kw = dict(nn_kw, d=cfg.icf_d or cfg.d, heads=cfg.heads, layers=cfg.layers, fusion_layers=cfg.fusion_layers,
                  dropout=cfg.dropout, ot_iters=cfg.ot_iters, ot_tol=cfg.ot_tol, tokens=cfg.tokens, token_dropout=cfg.token_dropout)
    ds_kw = dict(nn_kw, lr=cfg.deepsurv_lr or cfg.lr, weight_decay=_or(cfg.deepsurv_weight_decay, cfg.weight_decay))
    ef_kw = dict(nn_kw, lr=cfg.early_fusion_lr or cfg.lr,
                 weight_decay=_or(cfg.early_fusion_weight_decay, cfg.weight_decay))
    lite_kw = dict(icf_kw, layers=0, fusion_layers=1, ot_iters=5, ot_tol=0.0)
    table: dict[str, Callable[[], Any]] = {
        "icfnet": lambda: ICFNet(**icf_kw),
        "icfnet_lite": lambda: ICFNet(**lite_kw),
        "icfnet_no_rod": lambda: ICFNet(use_rod=False, orth_weight=0.0, **icf_kw),
        "icfnet_no_bnll": lambda: ICFNet(loss="nll", **icf_kw),
        "icfnet_no_ufm": lambda: ICFNet(fusion="concat", **icf_kw),
        "late_fusion": lambda: LateFusion(**icf_kw),
        "early_fusion": lambda: EarlyFusion(hidden=(2 * cfg.d, cfg.d), dropout=cfg.dropout, **ef_kw),
        "deepsurv": lambda: DeepSurv(hidden=(2 * cfg.d, cfg.d), dropout=cfg.dropout, **ds_kw),
        "coxph": lambda: CoxPH(alpha=cfg.cox_alpha),
        "rsf": lambda: RSF(n_estimators=cfg.rsf_trees, min_samples_leaf=cfg.rsf_min_leaf,
                           max_features=cfg.rsf_max_features, random_state=seed),
    }
    if method.startswith("only_"):
        return single_modality(method[len("only_"):], **icf_kw)
    if method not in table:
        raise KeyError(method)
    return table[method]()


def fold_metrics(model: Any, train: SurvivalDataset, test: SurvivalDataset) -> dict[str, float]:
    """C-index, Uno's C, mean time-dependent AUC and IBS of a fitted model on a test fold."""
    risk = model.predict(test)
    out = {"c_index": harrell_c_index(test.time, test.event, risk)}
    ev_t = train.time[train.event]
    lo, hi = test.time.min(), test.time.max()
    times = np.quantile(ev_t, [0.25, 0.5, 0.75])
    times = times[(times >= lo) & (times < hi) & (times < train.time.max())]
    try:
        tau = float(np.quantile(ev_t, 0.8))
        out["uno_c_index"] = uno_c_index(train.time, train.event, test.time, test.event, risk, tau=tau)
    except ValueError:
        out["uno_c_index"] = math.nan
    if times.size >= 2:
        try:
            out["td_auc"] = cumulative_dynamic_auc(train.time, train.event, test.time, test.event, risk, times)[1]
            surv = model.predict_survival_function(test, times=times)
            out["ibs"] = integrated_brier_score(train.time, train.event, test.time, test.event, surv, times)
        except ValueError as exc:
            log.debug("time-dependent metrics skipped: %s", exc)
    return out


def cv_unit(data: SurvivalDataset, method: str, cfg: Config, seed: int, device: str) -> dict[str, Any]:
    """One (dataset, method, seed): stratified k-fold CV; returns fold metrics and out-of-fold risk groups."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(cfg.folds, shuffle=True, random_state=seed)
    folds: list[dict[str, float]] = []
    groups = np.full(len(data), -1)
    for k, (tr, te) in enumerate(skf.split(np.zeros(len(data)), data.event)):
        train, test = data.subset(tr), data.subset(te)
        model = make_model(method, cfg, seed * 100 + k, device).fit(train)
        folds.append(fold_metrics(model, train, test))
        cuts = np.quantile(model.predict(train), np.linspace(0, 1, cfg.risk_groups + 1)[1:-1])
        groups[te] = np.searchsorted(cuts, model.predict(test), side="right")
    metrics = {key: float(np.nanmean([f.get(key, math.nan) for f in folds]))
               for key in ("c_index", "uno_c_index", "td_auc", "ibs")}
    metrics["c_index_fold_std"] = float(np.std([f["c_index"] for f in folds]))
    return {"metrics": metrics, "folds": folds, "groups": groups.tolist()}


def km_plot(ctx: RunContext, rec: RunRecord, data: SurvivalDataset, groups: np.ndarray, method: str) -> dict[str, float]:
    """Kaplan-Meier curves of predicted risk groups (out-of-fold) + log-rank test; returns the test."""
    res = logrank_test(data.time, data.event, groups)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.6))
        names = ["low", "middle", "high"] if groups.max() == 2 else [f"group {g}" for g in range(groups.max() + 1)]
        for g in np.unique(groups):
            t, s = kaplan_meier(data.time[groups == g], data.event[groups == g])
            ax.step(np.r_[0, t], np.r_[1, s], where="post", label=f"{names[g]} risk (n={int((groups == g).sum())})")
        ax.set_xlabel("time")
        ax.set_ylabel("survival")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{data.name}: {method} risk groups, log-rank p={res.p_value:.2g}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = ctx.out / "plots" / f"km_{data.name}_{method}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        rec.plots.append(str(path.relative_to(ctx.out)))
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        log.warning("matplotlib missing: no KM plot")
    return {"logrank_chi2": res.statistic, "logrank_p": res.p_value, "dof": res.dof}


def _paired(rec: RunRecord, setting: str, a: str, b: str, metric: str = "c_index") -> tuple[float, float]:
    """Mean and std of the per-seed paired difference a - b."""
    rows = {(r["method"], r["seed"]): r[metric] for r in rec.rows if r["setting"] == setting}
    diffs = [rows[(a, s)] - rows[(b, s)] for (m, s) in rows if m == a and (b, s) in rows]
    if not diffs:
        return math.nan, math.nan
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0


def run(cfg: Config, ctx: RunContext) -> RunRecord:
    """Run the ICFNet comparison and record rows, KM/log-rank results and claims."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    rec = ctx.record(cfg)
    device = str(ctx.device)
    rec.notes.append("protocol: stratified k-fold CV per seed, fixed epochs, last-epoch model evaluated "
                     "(no test-fold epoch selection); rows are fold means; bins fitted on training folds")
    km: dict[str, Any] = {}
    for ds in cfg.datasets:
        data = experiment_dataset(ds, cfg.n_synthetic, cfg.synthetic_censoring)
        methods = [m for m in methods_for(data, cfg.ablate_fusion, cfg.lite) if cfg.methods is None or m in cfg.methods]
        for seed in cfg.seeds:
            for method in progress(methods, desc=f"{ds} seed {seed}"):
                res = ctx.unit(f"{ds}/{method}/seed={seed}",
                               lambda d=data, m=method, s=seed: cv_unit(d, m, cfg, s, device), seed=seed)
                rec.add_row(ds, method, seed, **res["metrics"])
                if method == "icfnet" and seed == cfg.seeds[0]:
                    km[ds] = km_plot(ctx, rec, data, np.asarray(res["groups"]), method)
    rec.extra["logrank"] = km
    intervals = cindex_intervals(rec.rows, cfg.folds)
    rec.extra["cindex_intervals"] = intervals
    if plot_cindex_per_cohort(intervals, ctx.out / "plots" / KEY_FIGURE) is not None:
        rec.plots.append(f"plots/{KEY_FIGURE}")
    _claims(cfg, rec, km)
    return rec


def _claims(cfg: Config, rec: RunRecord, km: dict[str, Any]) -> None:
    settings = {s["setting"] for s in rec.summary}
    means = {(s["setting"], s["method"]): s["c_index_mean"] for s in rec.summary}
    if "synthetic" in settings and ("synthetic", "icfnet") in means:
        others = {m: v for (s, m), v in means.items() if s == "synthetic" and (m.startswith("only_") or m == "late_fusion")}
        if others:
            icf = means[("synthetic", "icfnet")]
            rec.add_claim("C1", "synthetic: ICFNet C-index > every single-modality model and late fusion",
                          all(icf > v for v in others.values()), icfnet=icf,
                          best_other=max(others, key=others.get), best_other_c=max(others.values()),
                          margin=icf - max(others.values()))
        abl = {m: v for (s, m), v in means.items() if s == "synthetic" and m.startswith("icfnet_no_")}
        if abl:
            rec.add_claim("C3", "synthetic ablations: removing ROD, balanced NLL or the unification module does not "
                          "improve the C-index", all(v <= means[("synthetic", "icfnet")] for v in abl.values()),
                          icfnet=means[("synthetic", "icfnet")], **abl)
    if "breast_cancer" in settings and ("breast_cancer", "icfnet") in means:
        tol = 0.01
        figs: dict[str, float] = {"icfnet": means[("breast_cancer", "icfnet")], "tolerance": tol}
        holds = True
        for b in ("coxph", "deepsurv"):
            if ("breast_cancer", b) in means:
                mean_d, sd_d = _paired(rec, "breast_cancer", "icfnet", b)
                figs[b] = means[("breast_cancer", b)]
                figs[f"paired_diff_vs_{b}"] = mean_d
                figs[f"paired_diff_sd_vs_{b}"] = sd_d
                holds = holds and mean_d >= -tol
        rec.add_claim("C2", f"breast_cancer: ICFNet at least level with CoxPH and the DeepSurv MLP "
                      f"(mean paired C-index difference >= -{tol})", holds, **figs)
    for ds, res in km.items():
        rec.add_claim(f"C4_{ds}", f"{ds}: ICFNet's predicted risk groups separate survival (log-rank p < 0.05)",
                      res["logrank_p"] < 0.05, logrank_chi2=res["logrank_chi2"], logrank_p=res["logrank_p"])
