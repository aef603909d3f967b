"""Development-only selection of the neural models' training settings (never the reported cohorts).

The reported settings are the seed-0 synthetic draw and ``breast_cancer``. Training settings of
ICFNet (and, where generic, of every neural model) are chosen here on *other* data only:

* ``veterans`` (137 patients), ``whas500`` and ``gbsg2`` (random 250-patient subsets, fixed seed):
  scikit-survival's other shipped cohorts, clinical modality only;
* ``synth_gc``: a 200-patient synthetic draw with generator seed 1, genomics + clinical only
  (the modality layout of ``breast_cancer``);
* ``synth_full``: a 300-patient synthetic draw with generator seed 1, all three modalities
  (the layout of the reported synthetic setting, a different draw);
* ``semi_bc`` (fifth pass, only with ``--semi``): breast_cancer's *covariates* (same genomic
  correlation clusters and clinical groups) with *simulated* outcomes
  (:func:`semi_synthetic_breast_cancer`); breast_cancer's real times and events are never used;
* ``semi_bc_bio`` (sixth pass, only with ``--bio``): the same covariates, outcomes simulated from
  prior biology (a proliferation-like module x ER, grade, size; :func:`semi_bio_breast_cancer`);
* ``nki70``, ``gse1992``, ``gse4335`` (seventh pass, only with ``--external``): external breast-cancer
  cohorts with expression and real outcomes from the SurvSet wheel (:func:`external_breast_cohort`).

Each variant is scored by 5-fold CV (CV seed 0) on every development cohort; the selection rule
is the highest *mean* C-index over the cohorts (fifth / sixth / seventh pass: ``semi_bc`` /
``semi_bc_bio`` / the external cohorts decide, README). Run with
``python -m trustlab.systems.icfnet.devsearch [variant ...] [--semi] [--bio] [--semi-only] [--external[-only]]``.

Eighth pass: the baselines get tuning grids of ICFNet's grid size on the same development cohorts
(:data:`BASELINE_GRIDS`, :func:`baseline_search`;
``python -m trustlab.systems.icfnet.devsearch --baseline=coxph --out=results/icfnet/devsearch/baselines_grid.jsonl``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

import numpy as np

from trustlab.data.survival import (
    SURVSET,
    SurvivalDataset,
    _censor_to_rate,
    load_survival_dataset,
    make_synthetic_multimodal,
)
from trustlab.errors import UserError
from trustlab.systems.icfnet.config import Config
from trustlab.systems.icfnet.experiment import cv_unit

#: The third-pass (committed) settings, as overrides of the pre-search base below.
P3: dict[str, Any] = {"balanced_sampler": False, "lr": 5e-3, "weight_decay": 1e-3, "deepsurv_lr": 1e-3,
                      "early_fusion_lr": 3e-3}

#: Candidate training settings (Config overrides), applied to every neural model alike.
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "lr1e-3": {"lr": 1e-3},
    "wd1e-3": {"weight_decay": 1e-3},
    "wd1e-2": {"weight_decay": 1e-2},
    "drop0.25": {"dropout": 0.25},
    "swa0.5": {"swa": 0.5},
    "no_sampler": {"balanced_sampler": False},
    "ep40_lr1e-3": {"epochs": 40, "lr": 1e-3},
    # second round, around the best of the first (no sampler)
    "ns_lr5e-3": {"balanced_sampler": False, "lr": 5e-3},
    "ns_lr1e-2": {"balanced_sampler": False, "lr": 1e-2},
    "ns_swa0.5": {"balanced_sampler": False, "swa": 0.5},
    "ns_wd1e-3": {"balanced_sampler": False, "weight_decay": 1e-3},
    "hi": {"head_init": True},
    "ns_hi": {"balanced_sampler": False, "head_init": True},
    "ns_hi_swa0.5": {"balanced_sampler": False, "head_init": True, "swa": 0.5},
    # third round: time resolution of the hazard head, width
    "ns_k8": {"balanced_sampler": False, "n_bins": 8},
    "ns_hi_k8": {"balanced_sampler": False, "head_init": True, "n_bins": 8},
    "ns_d32": {"balanced_sampler": False, "d": 32},
    # fourth round, around the best of the second (no sampler, lr 5e-3)
    "lr5e-3": {"lr": 5e-3},
    "ns_lr5e-3_hi": {"balanced_sampler": False, "lr": 5e-3, "head_init": True},
    "ns_lr5e-3_k8": {"balanced_sampler": False, "lr": 5e-3, "n_bins": 8},
    "ns_lr5e-3_swa0.5": {"balanced_sampler": False, "lr": 5e-3, "swa": 0.5},
    "ns_lr5e-3_wd1e-3": {"balanced_sampler": False, "lr": 5e-3, "weight_decay": 1e-3},
    # the MLP baselines' own learning rates, each chosen by its own dev mean
    # (``--methods=deepsurv,early_fusion --seeds=0,1,2``)
    **{f"ns_wd1e-3_mlp_lr{x}": {"balanced_sampler": False, "weight_decay": 1e-3, "deepsurv_lr": float(x),
                                "early_fusion_lr": float(x)} for x in ("1e-3", "3e-3", "5e-3", "1e-2")},
    # fifth round (fourth pass): ICFNet's capacity / token structure for small cohorts, relative to
    # the third-pass settings (P3); only the ICFNet-family models change (``--methods=icfnet``)
    "p3": P3,
    "p3_tokmod": {**P3, "tokens": "modality"},
    "p3_d8": {**P3, "icf_d": 8},
    "p3_tokdrop0.2": {**P3, "token_dropout": 0.2},
    "p3_tokmod_d8": {**P3, "tokens": "modality", "icf_d": 8},
    "p3_d32": {**P3, "icf_d": 32},
    "p3_d24": {**P3, "icf_d": 24},
    "p3_tokdrop0.1": {**P3, "token_dropout": 0.1},
    "p3_heads1": {**P3, "heads": 1},
    "p3_fl0": {**P3, "fusion_layers": 0},
    # sixth pass (only scored if ``semi_bc_bio`` reproduces the breast_cancer gap): the paper's
    # per-stream transformer, one layer (the default scale cut it to 0 for CPU time)
    "p3_layers1": {**P3, "layers": 1},
    # seventh pass (external breast-cancer cohorts): the official loader's (bin x censored) sampler on
    # top of P3 (a candidate because a second-pass diagnostic on breast_cancer pointed at it; README)
    "p3_sampler": {**P3, "balanced_sampler": True},
}


#: ICFNet's tuning grid: every variant ICFNet was scored under (all but the MLP baselines' own lrs).
ICFNET_GRID = [k for k in VARIANTS if "mlp_lr" not in k]

#: The baselines' tuning grids (eighth pass), each of the size of ICFNet's grid (35 points), scored
#: on the same five development cohorts by the third pass's rule (:func:`baseline_search`).
BASELINE_GRIDS: dict[str, list[dict[str, Any]]] = {
    "coxph": [{"cox_alpha": round(10 ** (e / 6), 6)} for e in range(-18, 17)],  # 1e-3 .. 464, includes 10
    "rsf": [{"rsf_min_leaf": leaf, "rsf_max_features": f}
            for leaf in (1, 3, 5, 10, 15, 20, 30) for f in ("sqrt", 0.1, 0.2, 0.33, 0.5)],
    **{m: [{f"{m}_lr": lr, f"{m}_weight_decay": wd}
           for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2) for wd in (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1)]
       for m in ("deepsurv", "early_fusion")},
}
assert all(len(g) == len(ICFNET_GRID) for g in BASELINE_GRIDS.values()), "the grids must match ICFNet's size"


def baseline_search(method: str, out_path: str | None = None, top: int = 3) -> dict[str, Any]:
    """Tune baseline ``method`` over :data:`BASELINE_GRIDS` the way ICFNet's settings were chosen.

    Third-pass rule on the same five development cohorts (veterans, whas500 and gbsg2 subsets,
    synth_gc, synth_full): every grid point scored by 5-fold CV with CV seed 0 (mean C-index over
    the cohorts); the ``top`` points re-scored on CV seeds 1-2; the best 3-seed mean is chosen.
    Points are relative to the committed settings (:class:`Config` defaults). With ``out_path``, one
    JSON line per scored point is appended there and points already in the file are not re-run
    (the search resumes).

    Returns:
        ``{"method", "chosen", "seed0": [...], "rescored": [...]}``.
    """
    if method not in BASELINE_GRIDS:
        raise UserError(f"no tuning grid for {method!r}", f"use one of: {', '.join(BASELINE_GRIDS)}")
    done: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
    if out_path is not None:
        try:
            with open(out_path) as fh:
                for line in fh:
                    rec = json.loads(line)
                    if rec.get("method") == method:
                        done[(json.dumps(rec["point"], sort_keys=True), tuple(rec["seeds"]))] = rec
        except FileNotFoundError:
            pass
    cohorts = dev_cohorts()

    def score(point: dict[str, Any], seeds: tuple[int, ...]) -> dict[str, Any]:
        key = (json.dumps(point, sort_keys=True), seeds)
        if key in done:
            return done[key]
        t0 = time.time()
        cfg = dataclasses.replace(Config(), **point)
        per = {name: round(float(np.mean([cv_unit(d, method, cfg, s, "cpu")["metrics"]["c_index"] for s in seeds])), 4)
               for name, d in cohorts.items()}
        rec = {"method": method, "point": point, "seeds": list(seeds), **per,
               "mean": round(float(np.mean(list(per.values()))), 4), "s": round(time.time() - t0)}
        if out_path is not None:
            with open(out_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        done[key] = rec
        print(json.dumps(rec), flush=True)
        return rec

    seed0 = [score(p, (0,)) for p in BASELINE_GRIDS[method]]
    best = sorted(seed0, key=lambda r: -r["mean"])[:top]
    rescored = []
    for r in best:
        r12 = score(r["point"], (1, 2))
        rescored.append({"point": r["point"], "seed0": r["mean"], "seeds12": r12["mean"],
                         "mean3": round((r["mean"] + 2 * r12["mean"]) / 3, 4)})
    chosen = max(rescored, key=lambda r: r["mean3"])
    return {"method": method, "chosen": chosen, "seed0": seed0, "rescored": rescored}


#: Clinical columns of breast_cancer the semi-synthetic generator may pick (not the rare grade=unknown).
SEMI_CLINICAL = ("age", "er=positive", "size", "grade=poorly differentiated")


def semi_synthetic_breast_cancer(seed: int = 0, n_genes: int = 4, n_clinical: int = 2, coef: float = 0.5,
                                 interaction: float = 0.5, sd: float = 1.0, shape: float = 1.5,
                                 censoring: float = 0.74) -> SurvivalDataset:
    """breast_cancer's covariates with simulated survival outcomes (fixed before any score; README).

    Only the modalities of ``load_survival_dataset("breast_cancer")`` are kept; its times and events
    are discarded unread. On cohort-z-scored columns, ``n_genes`` random genes and ``n_clinical``
    random clinical variables (from :data:`SEMI_CLINICAL`) get coefficients ``+-coef`` (random
    signs); the first chosen gene x the first chosen clinical variable adds ``interaction``; the
    log-hazard is centred and scaled to standard deviation ``sd``. Times are Weibull (``shape``,
    hazard ``0.1 exp(eta)``), censoring uniform with a ``censoring`` fraction censored.

    Args:
        seed: Generator seed (variables, signs, times, censoring).
        n_genes: Prognostic genes.
        n_clinical: Prognostic clinical variables.
        coef: Magnitude of the linear coefficients.
        interaction: Coefficient of the gene x clinical interaction.
        sd: Standard deviation of the log-hazard.
        shape: Weibull shape.
        censoring: Target censored fraction.
    """
    bc = load_survival_dataset("breast_cancer")
    rng = np.random.default_rng(seed)
    g, c = bc.modalities["genomics"], bc.modalities["clinical"]
    z = {k: (m.x - m.x.mean(0)) / m.x.std(0) for k, m in (("g", g), ("c", c))}
    genes = rng.choice(g.dim, n_genes, replace=False)
    clin = [c.names.index(SEMI_CLINICAL[j]) for j in rng.choice(len(SEMI_CLINICAL), n_clinical, replace=False)]
    x = np.concatenate([z["g"][:, genes], z["c"][:, clin]], axis=1)
    eta = x @ (coef * rng.choice([-1.0, 1.0], size=x.shape[1])) + interaction * x[:, 0] * x[:, n_genes]
    card = {"genes": [g.names[j] for j in genes], "clinical": [c.names[j] for j in clin]}
    return _simulate_outcomes("semi_bc", bc, eta, rng, card, seed=seed, sd=sd, shape=shape, censoring=censoring)


def _simulate_outcomes(name: str, bc: SurvivalDataset, eta: np.ndarray, rng: np.random.Generator,
                       card: dict[str, Any], *, seed: int, sd: float, shape: float,
                       censoring: float) -> SurvivalDataset:
    """Replace ``bc``'s time/event by Weibull times under log-hazard ``eta`` (centred, scaled to ``sd``).

    Hazard ``0.1 exp(eta)`` with Weibull ``shape``; uniform censoring tuned to a ``censoring`` fraction.
    The covariates (modalities, ids) are kept unchanged.
    """
    eta = sd * (eta - eta.mean()) / eta.std()
    t = (-np.log(rng.uniform(size=len(bc))) / (0.1 * np.exp(eta))) ** (1 / shape)
    time, event = _censor_to_rate(t, censoring, rng)
    card = {"source": f"semi-synthetic ({name}): breast_cancer covariates, simulated outcomes (icfnet devsearch)",
            **card, "seed": seed, "n": len(bc), "events": int(event.sum())}
    return SurvivalDataset(name, bc.ids, time + 1e-3, event, bc.modalities, card, true_risk=eta)


def _z(v: np.ndarray) -> np.ndarray:
    """Cohort z-score of a vector (or of every column of a matrix)."""
    return (v - v.mean(0)) / v.std(0)


def module_score(bc: SurvivalDataset) -> np.ndarray:
    """Proliferation-like expression module of breast_cancer, from its covariates only (sixth pass).

    The largest genomic correlation cluster (the 54-probe ``genes0`` group) holds up- and
    down-regulated probes, so its score is the *sign-aligned* mean z-score (each probe's sign = the
    sign of its loading on the cluster's first principal component, as in up/down signature
    scores). The global sign is fixed so that the score rises with ``grade=poorly differentiated``
    (proliferation is what histological grade mostly reads). Returned standardised (mean 0, SD 1).
    """
    g, c = bc.modalities["genomics"], bc.modalities["clinical"]
    x = _z(g.x.astype(float))[:, max(g.groups, key=len)]
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    m = x @ np.sign(vt[0]) / x.shape[1]
    if np.corrcoef(m, c.x[:, c.names.index("grade=poorly differentiated")])[0, 1] < 0:
        m = -m
    return _z(m)


def semi_bio_breast_cancer(seed: int = 0, module_er_pos: float = 0.8, module_er_neg: float = 0.2,
                           er: float = -0.4, grade: float = 0.4, size: float = 0.4, sd: float = 1.0,
                           shape: float = 1.5, censoring: float = 0.74) -> SurvivalDataset:
    """breast_cancer's covariates with outcomes simulated from prior biology (sixth pass; README).

    Log-hazard (fixed before any score) ``m * (module_er_pos * ER+ + module_er_neg * ER-)
    + er * z(ER+) + grade * z(grade) + size * z(size)``, with ``m`` the proliferation-like module
    (:func:`module_score`), ER+ the 0/1 indicator, grade ordinal (well 0, intermediate 1, poor 2;
    the two "unknown" at the mean of the known), then centred and scaled to SD ``sd``. Times and
    censoring as :func:`semi_synthetic_breast_cancer` (``seed`` drives only those draws).
    breast_cancer's real times and events are never read.

    Args:
        seed: Seed of the time and censoring draws.
        module_er_pos: Module coefficient in ER-positive tumours.
        module_er_neg: Module coefficient in ER-negative tumours.
        er: Coefficient of z(ER-positive).
        grade: Coefficient of z(grade).
        size: Coefficient of z(tumour size).
        sd: Standard deviation of the log-hazard.
        shape: Weibull shape.
        censoring: Target censored fraction.
    """
    bc = load_survival_dataset("breast_cancer")
    c = bc.modalities["clinical"]
    col = {k: c.x[:, c.names.index(k)].astype(float) for k in c.names}
    known = col["grade=unkown"] == 0
    gr = col["grade=intermediate"] + 2 * col["grade=poorly differentiated"]  # well differentiated = 0
    gr[~known] = gr[known].mean()
    m, erp = module_score(bc), col["er=positive"]
    eta = (m * (module_er_pos * erp + module_er_neg * (1 - erp)) + er * _z(erp) + grade * _z(gr)
           + size * _z(col["size"]))
    card = {"generator": "prior biology: proliferation-like module x ER, grade, size, ER (sixth pass)"}
    return _simulate_outcomes("semi_bc_bio", bc, eta, np.random.default_rng(seed), card, seed=seed, sd=sd,
                              shape=shape, censoring=censoring)


#: External breast-cancer cohorts with expression and real outcomes (seventh pass; SurvSet wheel).
EXTERNAL = SURVSET


def external_breast_cohort(name: str) -> SurvivalDataset:
    """An external breast-cancer cohort in breast_cancer's layout (``load_survival_dataset`` of a SurvSet name)."""
    if name not in EXTERNAL:
        raise UserError(f"unknown external cohort {name!r}", f"use one of: {', '.join(EXTERNAL)}")
    return load_survival_dataset(name)


def dev_cohorts(subset: int = 250, semi: bool = False, semi_seed: int = 0,
                bio: bool = False, external: bool = False) -> dict[str, SurvivalDataset]:
    """The development cohorts (none of them is a reported setting).

    ``semi`` adds ``semi_bc`` (fifth pass), ``bio`` adds ``semi_bc_bio`` (sixth pass); ``semi_seed`` != 0
    gives other draws of those generators (diagnostics only, never used for a choice); ``external``
    adds the external breast-cancer cohorts of :data:`EXTERNAL` (seventh pass).
    """
    rng = np.random.default_rng(0)
    out: dict[str, SurvivalDataset] = {"veterans": load_survival_dataset("veterans")}
    for name in ("whas500", "gbsg2"):
        d = load_survival_dataset(name)
        out[name] = d.subset(np.sort(rng.choice(len(d), subset, replace=False)))
    out["synth_gc"] = make_synthetic_multimodal(n=200, seed=1, patches=(16, 32), patch_dim=8).only(
        ["genomics", "clinical"])
    out["synth_full"] = make_synthetic_multimodal(n=300, seed=1, patches=(16, 32), patch_dim=8)
    if semi:
        out["semi_bc"] = semi_synthetic_breast_cancer(seed=semi_seed)
    if bio:
        out["semi_bc_bio"] = semi_bio_breast_cancer(seed=semi_seed)
    if external:
        out.update({name: external_breast_cohort(name) for name in EXTERNAL})
    return out


def evaluate(variant: dict[str, Any], methods: list[str], cohorts: dict[str, SurvivalDataset],
             seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Mean 5-fold C-index per (method, cohort), averaged over CV seeds, under a variant's Config overrides."""
    base = {"balanced_sampler": True, "lr": 3e-3, "weight_decay": 1e-5, "deepsurv_lr": None, "early_fusion_lr": None,
            "icf_d": None, "tokens": "groups", "token_dropout": 0.0,
            # passes 3-7 ran on the CPU cut of the architecture (now the icfnet_lite row)
            "layers": 0, "fusion_layers": 1, "ot_iters": 5, "ot_tol": 0.0}
    cfg = dataclasses.replace(Config(), **{**base, **variant})  # variants are relative to the pre-search settings
    res: dict[str, Any] = {}
    for m in methods:
        res[m] = {name: round(float(np.mean([cv_unit(d, m, cfg, s, "cpu")["metrics"]["c_index"] for s in seeds])), 4)
                  for name, d in cohorts.items()}
        res[m]["mean"] = round(float(np.mean(list(res[m].values()))), 4)
    return res


def main(argv: list[str]) -> None:
    """Evaluate the named variants (default: all) and print one JSON line per variant.

    ``--seeds=1,2`` picks the CV seeds (default 0); ``--methods=icfnet,deepsurv`` the models;
    ``--semi`` adds the ``semi_bc`` cohort, ``--bio`` the ``semi_bc_bio`` cohort (sixth pass),
    ``--semi-only`` scores only the semi-synthetic cohort(s) (``semi_bc`` unless ``--bio``),
    ``--semi-seed=1`` draws them with another generator seed (diagnostic); ``--external`` adds the
    external breast-cancer cohorts (seventh pass), ``--external-only`` scores only those.
    """
    opts = dict((a[2:] + "=").split("=")[:2] for a in argv if a.startswith("--"))
    if "baseline" in opts:  # eighth pass: python -m trustlab.systems.icfnet.devsearch --baseline=coxph [--out=FILE]
        res = baseline_search(opts["baseline"], opts.get("out") or None)
        print(json.dumps({"method": res["method"], "chosen": res["chosen"], "rescored": res["rescored"]}), flush=True)
        return
    names = [a for a in argv if not a.startswith("--")] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(VARIANTS)}", file=sys.stderr)
        raise SystemExit(2)
    methods = opts.get("methods", "icfnet,deepsurv").split(",")
    seeds = tuple(int(s) for s in opts.get("seeds", "0").split(","))
    bio = "bio" in opts
    external = "external" in opts or "external-only" in opts
    cohorts = dev_cohorts(semi="semi" in opts or ("semi-only" in opts and not bio),
                          semi_seed=int(opts.get("semi-seed") or 0), bio=bio, external=external)
    if "semi-only" in opts:
        cohorts = {k: v for k, v in cohorts.items() if k.startswith("semi")}
    if "external-only" in opts:
        cohorts = {k: v for k, v in cohorts.items() if k in EXTERNAL}
    for name in names:
        t0 = time.time()
        out = evaluate(VARIANTS[name], methods, cohorts, seeds)
        print(json.dumps({"variant": name, "seeds": seeds, **out, "s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
