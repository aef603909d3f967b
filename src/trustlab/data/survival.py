"""Multimodal survival data: embedded scikit-survival sets, a synthetic generator with known signal,
and loaders for users' CSVs and per-patient patch-feature files.

A :class:`SurvivalDataset` holds, per patient, an id, a time, an event flag and any subset of
modalities. A modality is either *tabular* (``x`` of shape (n, d), with column ``groups`` that
become tokens, e.g. gene families) or a *bag* (``x`` of shape (n, N, d) padded, ``mask`` (n, N)
marking real patches; e.g. whole-slide-image patch features). ``present`` (n,) marks patients that
have the modality at all (missing modalities are the norm in TCGA-style cohorts).

Embedded data cards:
    * ``breast_cancer`` (scikit-survival, GPL-3.0-or-later; Desmedt et al. 2007, n=198, 51 events):
      ``genomics`` = 76 gene-expression probes cut into 6 groups by correlation clustering
      (there are no gene families for these probes), ``clinical`` = age | er, grade, tumour size.
    * ``gbsg2``, ``whas500``, ``veterans``, ``aids`` (scikit-survival): ``clinical`` only, with
      demographics / treatment / other status columns as separate tokens.
    * ``synthetic``: genomics (6 groups) + pathology patch bags + clinical, with a known hazard
      (see :func:`make_synthetic_multimodal`).
    * ``nki70``, ``gse1992``, ``gse4335`` (SurvSet wheel, GPL-3.0, ``trustlab[survival]``): external
      breast cancer cohorts with expression + clinical data in breast_cancer's layout (ICFNet's
      development data; see :data:`SURVSET`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.errors import UserError, require
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

__all__ = [
    "EMBEDDED",
    "SURVSET",
    "Modality",
    "SurvivalDataset",
    "load_patch_bags",
    "load_survival_csv",
    "load_survival_dataset",
    "make_synthetic_multimodal",
    "dataset_to_frame",
    "frame_layout",
    "frame_to_dataset",
    "load_survival_frame",
]

EMBEDDED = ("synthetic", "breast_cancer", "gbsg2", "whas500", "veterans", "aids")
PATCH_EXTS = (".safetensors", ".npy", ".h5")


@dataclass
class Modality:
    """One modality of a survival dataset.

    Attributes:
        kind: ``"tabular"`` or ``"bag"``.
        x: (n, d) for tabular, (n, N, d) for bags (zero-padded).
        present: (n,) True where the patient has this modality.
        groups: Tabular only: column index groups, one token per group.
        group_names: Names of the groups.
        mask: Bags only: (n, N) True for real patches.
        names: Column names (tabular) or None.
        info: Free-form facts about how the modality was read (e.g. the patch cap and how many
            bags it truncated), carried into reports.
    """

    kind: str
    x: np.ndarray
    present: np.ndarray
    groups: list[list[int]] = field(default_factory=list)
    group_names: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None
    names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("tabular", "bag"):
            raise ValueError(f"unknown modality kind {self.kind!r}")
        self.x = np.asarray(self.x, dtype=np.float32)
        self.present = np.asarray(self.present, dtype=bool)
        if self.kind == "tabular":
            if self.x.ndim != 2:
                raise ValueError("tabular modality needs x of shape (n, d)")
            if not self.groups:
                self.groups = [list(range(self.x.shape[1]))]
            if not self.group_names:
                self.group_names = [f"group{i}" for i in range(len(self.groups))]
        else:
            if self.x.ndim != 3:
                raise ValueError("bag modality needs x of shape (n, N, d)")
            if self.mask is None:
                self.mask = np.ones(self.x.shape[:2], dtype=bool)
            self.mask = np.asarray(self.mask, dtype=bool)

    @property
    def dim(self) -> int:
        """Feature dimension (per patch for bags)."""
        return int(self.x.shape[-1])

    def subset(self, idx: np.ndarray) -> Modality:
        """Rows ``idx``."""
        return Modality(self.kind, self.x[idx], self.present[idx], self.groups, self.group_names,
                        None if self.mask is None else self.mask[idx], self.names, self.info)


@dataclass
class SurvivalDataset:
    """Patients with times, events and modalities.

    Attributes:
        name: Dataset name.
        ids: Patient ids.
        time: Observed times (n,).
        event: True where the event was observed (n,).
        modalities: Modality name -> :class:`Modality`.
        card: Provenance (source, licence, n, events, notes).
        true_risk: Known log-hazard (synthetic data only).
    """

    name: str
    ids: np.ndarray
    time: np.ndarray
    event: np.ndarray
    modalities: dict[str, Modality]
    card: dict[str, Any] = field(default_factory=dict)
    true_risk: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids).astype(str)
        self.time = np.asarray(self.time, dtype=float)
        self.event = np.asarray(self.event, dtype=bool)
        n = self.ids.size
        if self.time.shape != (n,) or self.event.shape != (n,):
            raise ValueError("ids, time and event must have the same length")
        if (self.time <= 0).any() or not np.isfinite(self.time).all():
            raise UserError(f"dataset {self.name!r} has non-positive or non-finite times", "times must be > 0")
        for m, mod in self.modalities.items():
            if mod.x.shape[0] != n:
                raise ValueError(f"modality {m!r} has {mod.x.shape[0]} rows for {n} patients")
        if not self.modalities:
            raise UserError(f"dataset {self.name!r} has no modality", "give at least one of clinical/genomics/patches")

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def shape(self) -> tuple[int]:
        """``(n_patients,)``: lets scikit-learn count and split a dataset (``cross_val_score``, ``GridSearchCV``)."""
        return (int(self.ids.size),)

    def __getitem__(self, idx: Any) -> SurvivalDataset:
        """Patients ``idx`` (integer or boolean index array, or a slice): the indexing scikit-learn uses."""
        if isinstance(idx, tuple) and len(idx) == 2 and idx[1] is Ellipsis:  # array[key, ...]
            idx = idx[0]
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim != 1:
            raise IndexError("index a SurvivalDataset with a 1-d array of patient positions")
        return self.subset(idx)

    def subset(self, idx: np.ndarray) -> SurvivalDataset:
        """Patients ``idx`` (a new dataset)."""
        idx = np.asarray(idx)
        return SurvivalDataset(self.name, self.ids[idx], self.time[idx], self.event[idx],
                               {k: v.subset(idx) for k, v in self.modalities.items()}, self.card,
                               None if self.true_risk is None else self.true_risk[idx])

    def only(self, names: Sequence[str]) -> SurvivalDataset:
        """The same patients restricted to the modalities ``names``."""
        unknown = [m for m in names if m not in self.modalities]
        if unknown:
            raise UserError(f"dataset {self.name!r} has no modality {unknown[0]!r}",
                            f"use one of: {', '.join(self.modalities)}")
        return SurvivalDataset(self.name, self.ids, self.time, self.event,
                               {k: self.modalities[k] for k in names}, self.card, self.true_risk)

    def flat_features(self) -> tuple[np.ndarray, list[str]]:
        """All modalities as one (n, D) matrix: tabular columns plus mean-pooled bags, 0 where missing.

        Used by the tabular baselines (CoxPH, RSF, DeepSurv, early fusion).
        """
        cols, names = [], []
        for m, mod in self.modalities.items():
            if mod.kind == "tabular":
                x = np.where(mod.present[:, None], mod.x, 0.0)
                names += mod.names or [f"{m}_{j}" for j in range(mod.dim)]
            else:
                w = mod.mask.astype(np.float32)
                x = (mod.x * w[..., None]).sum(1) / np.maximum(w.sum(1, keepdims=True), 1.0)
                x = np.where(mod.present[:, None], x, 0.0)
                names += [f"{m}_mean_{j}" for j in range(mod.dim)]
            cols.append(x)
        return np.concatenate(cols, axis=1).astype(np.float32), names


# ---------------------------------------------------------------------------------------------
# synthetic


def _censor_to_rate(t: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform censoring C ~ U(0, c) with c found by bisection so that P(C < T) ~= ``rate``."""
    u = rng.uniform(size=t.size)
    lo, hi = 1e-6 * t.max(), 1e3 * t.max()
    for _ in range(80):
        c = np.sqrt(lo * hi)
        frac = np.mean(u * c < t)
        lo, hi = (c, hi) if frac > rate else (lo, c)
    c_time = u * np.sqrt(lo * hi)
    return np.minimum(t, c_time), t <= c_time


def make_synthetic_multimodal(
    n: int = 400,
    seed: int = 0,
    gene_groups: int = 6,
    genes_per_group: int = 8,
    patch_dim: int = 16,
    patches: tuple[int, int] = (24, 48),
    censoring: float = 0.4,
    missing_pathology: float = 0.0,
    effect: float = 1.0,
    path_effect: float = 0.7,
    interaction: float = 0.7,
) -> SurvivalDataset:
    """Synthetic genomics + pathology (patch bags) + clinical cohort with a known hazard.

    Ground truth (per patient i), with Weibull times (shape 1.5) and hazard ``exp(eta_i)``:

    * genomics: 6 groups of 8 features, N(0, 1) with within-group correlation 0.5. A *subtype*
      ``s_i = 1[mean(g_group0) > 0]`` and a linear signal ``g_lin = mean(g_group1) - mean(g_group2)``
      (standardised), i.e. pathway activities.
    * pathology: a bag of 24-48 patch vectors; a fraction ``b_i ~ U(0, 0.3)`` of them ("tumour
      patches") is drawn around a fixed prototype, the rest is background noise. Tumour burden
      ``z_i`` (standardised ``b_i``) is what matters, and only a few patches carry it.
    * clinical: age (standardised), sex, treatment (0/1, protective).
    * ``eta = effect * (0.7 g_lin + a z + b z (2 s - 1) + 0.5 age - 0.5 treatment)`` with
      ``a = path_effect = 0.7`` and ``b = interaction = 0.7`` by default, i.e. ``1.4 s z``: tumour
      burden is prognostic only in genomic subtype 1. The pathology effect is *modulated by the
      genomic subtype*, an interaction that no single modality and no additive (late) fusion can
      represent, while burden keeps a monotone marginal effect (learnable from the slides alone).
      ``a = 0.5, b = 1.0`` gives the earlier sign-flip design, whose marginal pathology effect is
      nearly flat (single-slide oracle C ~0.53).

    Args:
        n: Patients.
        seed: Seed of the generator.
        gene_groups: Genomic groups (tokens).
        genes_per_group: Features per group.
        patch_dim: Patch feature dimension.
        patches: (min, max) patches per patient.
        censoring: Target censoring fraction in [0, 0.9].
        missing_pathology: Fraction of patients without a slide.
        effect: Scale of the log-hazard (signal strength).
        path_effect: Main effect ``a`` of the standardised tumour burden.
        interaction: Burden x subtype interaction ``b``.
    """
    if n < 20:
        raise ValueError("n must be >= 20")
    if not 0.0 <= censoring <= 0.9:
        raise ValueError("censoring must be in [0, 0.9]")
    if not 0.0 <= missing_pathology < 1.0:
        raise ValueError("missing_pathology must be in [0, 1)")
    if gene_groups < 3:
        raise ValueError("gene_groups must be >= 3")
    if patches[0] < 4 or patches[1] < patches[0]:
        raise ValueError("patches must be (min, max) with 4 <= min <= max")
    rng = np.random.default_rng(seed)
    # genomics: correlated groups
    d = genes_per_group
    g_blocks = []
    for _ in range(gene_groups):
        shared = rng.normal(size=(n, 1))
        g_blocks.append(np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=(n, d)))
    genomics = np.concatenate(g_blocks, axis=1)
    subtype = (g_blocks[0].mean(1) > 0).astype(float)
    g_lin = g_blocks[1].mean(1) - g_blocks[2].mean(1)  # pathway activities
    g_lin = (g_lin - g_lin.mean()) / g_lin.std()
    # pathology bags
    n_max = patches[1]
    proto = rng.normal(size=patch_dim)
    proto *= 2.5 / np.linalg.norm(proto) * np.sqrt(patch_dim) / 2
    burden = rng.uniform(0.0, 0.3, size=n)
    bags = np.zeros((n, n_max, patch_dim), dtype=np.float32)
    mask = np.zeros((n, n_max), dtype=bool)
    for i in range(n):
        k = int(rng.integers(patches[0], patches[1] + 1))
        n_tum = int(round(burden[i] * k))
        x = rng.normal(size=(k, patch_dim))
        x[:n_tum] += proto
        bags[i, :k] = x[rng.permutation(k)]
        mask[i, :k] = True
    z = (burden - burden.mean()) / burden.std()
    # clinical
    age = rng.normal(size=n)
    sex = rng.integers(0, 2, size=n).astype(float)
    treat = rng.integers(0, 2, size=n).astype(float)
    clinical = np.stack([age, sex, treat], axis=1)
    eta = effect * (0.7 * g_lin + path_effect * z + interaction * z * (2 * subtype - 1) + 0.5 * age - 0.5 * treat)
    u = rng.uniform(size=n)
    t = (-np.log(u) / (0.1 * np.exp(eta))) ** (1 / 1.5)
    time, event = _censor_to_rate(t, censoring, rng)
    present_p = rng.uniform(size=n) >= missing_pathology
    groups = [list(range(j * d, (j + 1) * d)) for j in range(gene_groups)]
    mods = {
        "genomics": Modality("tabular", genomics, np.ones(n, bool), groups, [f"genes{j}" for j in range(gene_groups)],
                             names=[f"g{j}_{k}" for j in range(gene_groups) for k in range(d)]),
        "pathology": Modality("bag", bags * present_p[:, None, None], present_p, mask=mask & present_p[:, None]),
        "clinical": Modality("tabular", clinical, np.ones(n, bool), [[0, 1], [2]], ["demographics", "treatment"],
                             names=["age", "sex", "treatment"]),
    }
    card = {"source": "synthetic (trustlab.data.survival.make_synthetic_multimodal)", "licence": "n/a",
            "n": n, "events": int(event.sum()), "seed": seed,
            "signal": f"eta = {effect} * (0.7 g_lin + {path_effect} z + {interaction} z*(2s-1) + 0.5 age "
                      "- 0.5 treatment); s from genomic group 0, z = tumour-patch burden"}
    return SurvivalDataset("synthetic", np.array([f"P{i:04d}" for i in range(n)]), time + 1e-3, event, mods, card,
                           true_risk=eta)


# ---------------------------------------------------------------------------------------------
# scikit-survival embedded sets


def _is_text(dtype: Any) -> bool:
    """Object or string dtype: pandas < 3 reads text columns as ``object``, pandas >= 3 as ``str``."""
    import pandas as pd

    return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def _time_event(clin: Any, time_col: str, event_col: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times (float) and events (0./1.; text 'yes'/'no'/'true'/'false' accepted) of a clinical table, checked."""
    import pandas as pd

    time = pd.to_numeric(clin[time_col], errors="coerce").to_numpy(float)
    ev_raw = clin[event_col]
    if _is_text(ev_raw.dtype):
        ev_raw = ev_raw.astype(str).str.lower().map({"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0})
    event = pd.to_numeric(ev_raw, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(time) | (time <= 0) | ~np.isin(event, (0, 1))
    if bad.any():
        raise UserError(f"{bad.sum()} clinical row(s) have invalid time/event, e.g. patient {ids[bad][0]!r}",
                        "times must be positive numbers and events 0/1")
    return time, event


def _one_hot(frame: Any, cols: list[str]) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    parts, names = [], []
    for c in cols:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or _is_text(s.dtype):
            cats = list(s.astype("category").cat.categories)
            if len(cats) == 2:
                parts.append((s.astype(str) == str(cats[1])).to_numpy(float)[:, None])
                names.append(f"{c}={cats[1]}")
            else:
                for cat in cats[1:]:
                    parts.append((s.astype(str) == str(cat)).to_numpy(float)[:, None])
                    names.append(f"{c}={cat}")
        else:
            v = s.to_numpy(float)
            v = np.where(np.isnan(v), np.nanmean(v), v)
            parts.append(v[:, None])
            names.append(c)
    return np.concatenate(parts, axis=1), names


def _clinical_modality(frame: Any, groups: dict[str, list[str]]) -> Modality:
    xs, names, idx = [], [], []
    start = 0
    for cols in groups.values():
        x, nm = _one_hot(frame, cols)
        xs.append(x)
        names += nm
        idx.append(list(range(start, start + x.shape[1])))
        start += x.shape[1]
    x = np.concatenate(xs, axis=1)
    return Modality("tabular", x, np.ones(x.shape[0], bool), idx, list(groups), names=names)


def gene_groups_by_correlation(x: np.ndarray, k: int = 6) -> list[list[int]]:
    """Deterministic correlation clustering of columns into ``k`` groups (average linkage on 1-|r|)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    r = np.corrcoef(x, rowvar=False)
    dist = 1.0 - np.abs(np.nan_to_num(r))
    np.fill_diagonal(dist, 0.0)
    lab = fcluster(linkage(squareform(dist, checks=False), "average"), t=k, criterion="maxclust")
    groups = [sorted(np.flatnonzero(lab == c).tolist()) for c in np.unique(lab)]
    return sorted(groups, key=lambda g: g[0])


_SKSURV = {
    "gbsg2": ("load_gbsg2", {"demographics": ["age", "menostat"], "treatment": ["horTh"],
                             "tumour": ["tsize", "tgrade", "pnodes", "progrec", "estrec"]}),
    "whas500": ("load_whas500", {"demographics": ["age", "gender", "bmi"],
                                 "status": ["av3", "chf", "cvd", "afb", "sho", "miord", "mitype"],
                                 "vitals": ["diasbp", "hr", "los", "sysbp"]}),
    "veterans": ("load_veterans_lung_cancer", {"demographics": ["Age_in_years"], "treatment": ["Treatment", "Prior_therapy"],
                                               "status": ["Celltype", "Karnofsky_score", "Months_from_Diagnosis"]}),
    "aids": ("load_aids", {"demographics": ["age", "sex", "raceth"], "treatment": ["tx", "txgrp", "strat2", "priorzdv"],
                           "status": ["cd4", "karnof", "hemophil", "ivdrug"]}),
}


def _load_sksurv(name: str) -> SurvivalDataset:
    datasets = require("sksurv.datasets", "survival")
    if name == "breast_cancer":
        frame, y = datasets.load_breast_cancer()
        genes = [c for c in frame.columns if c not in ("age", "er", "grade", "size")]
        gx = frame[genes].to_numpy(float)
        groups = gene_groups_by_correlation(gx, 6)
        genomics = Modality("tabular", gx, np.ones(len(frame), bool), groups, [f"genes{j}" for j in range(len(groups))],
                            names=genes)
        clinical = _clinical_modality(frame, {"demographics": ["age"], "tumour": ["er", "grade", "size"]})
        mods = {"genomics": genomics, "clinical": clinical}
        card = {"source": "scikit-survival load_breast_cancer (Desmedt et al., Clin Cancer Res 2007)",
                "licence": "GPL-3.0-or-later", "notes": "76 probes cut into 6 correlation clusters"}
    elif name in _SKSURV:
        fn, groups = _SKSURV[name]
        frame, y = getattr(datasets, fn)()
        mods = {"clinical": _clinical_modality(frame, {k: [c for c in v if c in frame.columns] for k, v in groups.items()})}
        card = {"source": f"scikit-survival {fn}", "licence": "GPL-3.0-or-later"}
    else:  # pragma: no cover - guarded by load_survival_dataset
        raise KeyError(name)
    ev_field, t_field = y.dtype.names
    event = y[ev_field].astype(bool)
    time = y[t_field].astype(float)
    time = np.where(time <= 0, 0.5 * time[time > 0].min(), time)
    card.update(n=len(frame), events=int(event.sum()))
    return SurvivalDataset(name, np.array([f"{name}-{i}" for i in range(len(frame))]), time, event, mods, card)


#: External breast-cancer cohorts with expression and real outcomes, shipped in the ``survset`` wheel
#: SurvSet name -> (clinical columns as {group: [columns]}, genes: "all" or the number kept by variance).
#: The clinical columns mirror breast_cancer's (age; ER, grade, size); genes are chosen without outcomes.
_SURVSET: dict[str, tuple[dict[str, list[str]], str | int]] = {
    "nki70": ({"demographics": ["num_Age"], "tumour": ["fac_ER", "fac_Grade", "fac_Diam"]}, "all"),
    "gse1992": ({"demographics": ["num_age"], "tumour": ["fac_er_positive", "fac_grade", "num_size"]}, 76),
    "gse4335": ({"demographics": ["num_age"], "tumour": ["fac_er_status", "fac_grade", "fac_tumor_size"]}, 76),
}
SURVSET = tuple(_SURVSET)


def _load_survset(name: str) -> SurvivalDataset:
    """An external breast-cancer cohort with expression and outcomes, in breast_cancer's layout (seventh pass).

    From the SurvSet wheel (``pip install 'trustlab[survival]'``; GPL-3.0, bundled pickles, no download):
    ``nki70`` (NKI, 144 patients, the 70 genes of the MammaPrint signature), ``gse1992`` (124) and
    ``gse4335`` (115) (UNC cDNA arrays, ~13-16k genes: the 76 genes of highest variance over the
    cohort are kept, 76 = breast_cancer's probe count; outcome-free). Genes are cut into 6
    correlation clusters exactly as breast_cancer's probes; the clinical modality holds breast_cancer's
    clinical variables (age; ER, grade, size), nki70's node status is left out (breast_cancer is
    node-negative and has none).

    Raises:
        MissingExtraError: SurvSet not installed.
    """
    entry = require("SurvSet.data", "survival").SurvLoader().load_dataset(name)
    frame = entry["df"]
    clinical_groups, keep = _SURVSET[name]
    clinical_cols = {c for cols in clinical_groups.values() for c in cols}
    genes = [c for c in frame.columns if c.startswith("num_") and c not in clinical_cols]
    gx = frame[genes].to_numpy(float)
    if keep != "all":
        top = np.sort(np.argsort(-gx.var(0), kind="stable")[: int(keep)])  # highest variance, column order
        genes, gx = [genes[j] for j in top], gx[:, top]
    groups = gene_groups_by_correlation(gx, 6)
    genomics = Modality("tabular", gx, np.ones(len(frame), bool), groups, [f"genes{j}" for j in range(len(groups))],
                        names=genes)
    clinical = _clinical_modality(frame, clinical_groups)
    time = frame["time"].to_numpy(float)
    card = {"source": f"SurvSet {name} ({entry['ref']})", "licence": "GPL-3.0",
            "n": len(frame), "events": int(frame["event"].sum()), "genes": len(genes),
            "notes": "external breast cancer cohort (ICFNet development data, seventh pass)"}
    return SurvivalDataset(name, frame["pid"].astype(str).to_numpy(), time, frame["event"].to_numpy(bool),
                           {"genomics": genomics, "clinical": clinical}, card)


def load_survival_dataset(name: str, **kwargs: Any) -> SurvivalDataset:
    """An embedded dataset by name (``synthetic`` takes :func:`make_synthetic_multimodal` kwargs).

    Names: :data:`EMBEDDED` (scikit-survival and the synthetic generator) and :data:`SURVSET` (external
    breast cancer cohorts from the SurvSet wheel, ``trustlab[survival]``).

    Raises:
        UserError: unknown name (with did-you-mean); MissingExtraError: the package holding it is missing.
    """
    if name == "synthetic":
        return make_synthetic_multimodal(**kwargs)
    if name not in EMBEDDED + SURVSET:
        close = difflib.get_close_matches(name, EMBEDDED + SURVSET, n=1)
        fix = (f"did you mean {close[0]!r}?" if close
               else f"use one of: {', '.join(EMBEDDED + SURVSET)} or load_survival_csv")
        raise UserError(f"unknown survival dataset {name!r}", fix)
    if kwargs:
        raise UserError(f"dataset {name!r} takes no options ({', '.join(kwargs)})", "remove them")
    return _load_survset(name) if name in SURVSET else _load_sksurv(name)


# ---------------------------------------------------------------------------------------------
# user files


def _read_patch_file(path: Path) -> np.ndarray:
    """(N, d) features from .safetensors (key ``features`` or the only tensor), .npy or .h5 (``features``)."""
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"cannot read patch features {str(path)!r} ({exc})", "save a plain float array with np.save") from exc
    elif path.suffix == ".safetensors":
        from trustlab.utils.io import load_tensors

        tensors, _ = load_tensors(path)
        if "features" in tensors:
            arr = tensors["features"].float().numpy()
        elif len(tensors) == 1:
            arr = next(iter(tensors.values())).float().numpy()
        else:
            raise UserError(f"{str(path)!r} holds several tensors ({', '.join(tensors)}) and none is 'features'",
                            "store the patch features under the key 'features'")
    elif path.suffix == ".h5":
        h5py = require("h5py", "survival")
        with h5py.File(path, "r") as fh:
            if "features" not in fh:
                raise UserError(f"{str(path)!r} has no 'features' dataset (keys: {', '.join(fh.keys())})",
                                "write the (N, d) patch features as dataset 'features' (the CLAM layout)")
            arr = np.asarray(fh["features"])
    else:
        raise UserError(f"unsupported patch feature file {str(path)!r}", f"use one of {', '.join(PATCH_EXTS)}")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UserError(f"patch features in {str(path)!r} have shape {arr.shape}", "expected (n_patches, dim) with n_patches >= 1")
    return arr


def load_patch_bags(
    folder: str | Path, ids: Sequence[str], max_patches: int | None = 256, seed: int = 0,
    require_all: bool = False,
) -> Modality:
    """Per-patient patch-feature files ``<folder>/<patient id>.<ext>`` as a padded bag modality.

    Patients without a file get ``present=False`` (missing modality); files whose id is not a
    known patient are reported. Bags larger than ``max_patches`` are subsampled (seeded).

    Args:
        folder: Folder of ``.safetensors``/``.npy``/``.h5`` files named by patient id.
        ids: Patient ids of the cohort.
        max_patches: Cap on patches per patient (None = keep all).
        seed: Seed for subsampling.
        require_all: Raise when any patient lacks a file.

    Raises:
        UserError: missing folder, no file matching any id, inconsistent feature dimensions.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"patch feature folder {str(root)!r} does not exist", "pass the folder holding <patient_id>.npy/.safetensors/.h5")
    files: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.suffix in PATCH_EXTS and p.is_file():
            if p.stem in files:
                raise UserError(f"patient {p.stem!r} has several patch files ({files[p.stem].name}, {p.name})", "keep one per patient")
            files[p.stem] = p
    ids = [str(i) for i in ids]
    known = set(ids)
    matched = [i for i in ids if i in files]
    unknown = sorted(set(files) - known)
    if not matched:
        ex_f = ", ".join(sorted(files)[:3]) or "none"
        raise UserError(f"no patch file in {str(root)!r} matches a patient id (files: {ex_f}; ids: {', '.join(ids[:3])})",
                        "name each file <patient_id>.<ext> using the ids of the clinical CSV")
    missing = [i for i in ids if i not in files]
    if missing and require_all:
        raise UserError(f"{len(missing)} patient(s) have no patch file, e.g. {', '.join(missing[:3])}",
                        "add the files or pass require_all=False to treat them as missing modality")
    if missing:
        log.warning("%d patient(s) have no patch features (treated as missing modality), e.g. %s", len(missing), missing[:3])
    if unknown:
        log.warning("%d patch file(s) match no patient id and are ignored, e.g. %s", len(unknown), unknown[:3])
    rng = np.random.default_rng(seed)
    feats: dict[str, np.ndarray] = {}
    dim = None
    truncated, largest = 0, 0
    for i in matched:
        a = _read_patch_file(files[i])
        if dim is None:
            dim = a.shape[1]
        elif a.shape[1] != dim:
            raise UserError(f"patch features of {i!r} have dim {a.shape[1]}, others {dim}", "use one feature extractor for all slides")
        largest = max(largest, a.shape[0])
        if max_patches is not None and a.shape[0] > max_patches:
            a = a[np.sort(rng.choice(a.shape[0], max_patches, replace=False))]
            truncated += 1
        feats[i] = a
    if truncated:
        log.warning("%d of %d patch bag(s) exceed max_patches=%s and were subsampled (largest: %d patches)",
                    truncated, len(feats), max_patches, largest)
    n_max = max(a.shape[0] for a in feats.values())
    x = np.zeros((len(ids), n_max, dim), dtype=np.float32)
    mask = np.zeros((len(ids), n_max), dtype=bool)
    for r, i in enumerate(ids):
        if i in feats:
            k = feats[i].shape[0]
            x[r, :k] = feats[i]
            mask[r, :k] = True
    info = {"max_patches": max_patches, "bags": len(feats), "truncated_bags": truncated, "largest_bag": largest}
    return Modality("bag", x, np.array([i in feats for i in ids]), mask=mask, info=info)


def _read_csv(path: str | Path, what: str) -> Any:
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} CSV {str(p)!r} does not exist", "check the path")
    try:
        return pd.read_csv(p)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} CSV {str(p)!r} is malformed ({exc})", "write a comma-separated file with a header row") from exc


def load_survival_csv(
    clinical_csv: str | Path,
    id_col: str = "patient_id",
    time_col: str = "time",
    event_col: str = "event",
    clinical_groups: dict[str, list[str]] | None = None,
    genomics_csv: str | Path | None = None,
    gene_groups: dict[str, list[str]] | None = None,
    patch_dir: str | Path | None = None,
    max_patches: int | None = 256,
    name: str = "user",
) -> SurvivalDataset:
    """A cohort from users' files, keyed by patient id.

    Args:
        clinical_csv: One row per patient with ``id_col``, ``time_col``, ``event_col`` (1 = event) and
            clinical columns (categoricals are one-hot encoded).
        id_col: Patient id column (in every CSV).
        time_col: Time column (> 0).
        event_col: Event column (1/0 or true/false).
        clinical_groups: Token groups of clinical columns, e.g. ``{"demographics": ["age", "sex"],
            "treatment": ["chemo", "radio"]}``; default: one group with all remaining columns.
        genomics_csv: Optional (patient id, gene columns...) table; patients absent from it are missing.
        gene_groups: Gene families ``{"oncogenes": [...], ...}``; default: 6 correlation clusters.
        patch_dir: Optional folder of per-patient patch-feature files (see :func:`load_patch_bags`).
        max_patches: Cap on patches per patient.
        name: Dataset name.

    Raises:
        UserError: missing files/columns, duplicate ids, ids that match nothing.
    """
    import pandas as pd

    clin = _read_csv(clinical_csv, "clinical")
    for c in (id_col, time_col, event_col):
        if c not in clin.columns:
            raise UserError(f"clinical CSV has no column {c!r} (columns: {', '.join(map(str, clin.columns[:8]))})",
                            f"rename the column or pass {c!r} via id_col/time_col/event_col")
    if clin[id_col].duplicated().any():
        dup = clin[id_col][clin[id_col].duplicated()].astype(str).tolist()[:3]
        raise UserError(f"duplicate patient ids in clinical CSV: {', '.join(dup)}", "keep one row per patient")
    ids = clin[id_col].astype(str).to_numpy()
    time, event = _time_event(clin, time_col, event_col, ids)
    mods: dict[str, Modality] = {}
    other = [c for c in clin.columns if c not in (id_col, time_col, event_col)]
    if clinical_groups is None and other:
        clinical_groups = {"clinical": other}
    if clinical_groups:
        missing_cols = [c for cols in clinical_groups.values() for c in cols if c not in clin.columns]
        if missing_cols:
            raise UserError(f"clinical CSV has no column {missing_cols[0]!r}", "fix clinical_groups")
        mods["clinical"] = _clinical_modality(clin, clinical_groups)
    if genomics_csv is not None:
        gen = _read_csv(genomics_csv, "genomics")
        if id_col not in gen.columns:
            raise UserError(f"genomics CSV has no id column {id_col!r}", "add it or pass id_col")
        gen[id_col] = gen[id_col].astype(str)
        if gen[id_col].duplicated().any():
            raise UserError("duplicate patient ids in genomics CSV", "keep one row per patient")
        unknown = sorted(set(gen[id_col]) - set(ids))
        matched = set(gen[id_col]) & set(ids)
        if not matched:
            raise UserError(f"no genomics id matches a clinical id (e.g. {gen[id_col].iloc[0]!r} vs {ids[0]!r})",
                            "use the same patient ids in both CSVs")
        if unknown:
            log.warning("%d genomics row(s) match no clinical id and are ignored, e.g. %s", len(unknown), unknown[:3])
        genes = [c for c in gen.columns if c != id_col]
        g = gen.set_index(id_col).reindex(ids)[genes]
        present = g.notna().all(axis=1).to_numpy()
        gx = g.apply(pd.to_numeric, errors="coerce").to_numpy(float)
        if np.isnan(gx[present]).any():
            raise UserError("genomics CSV has non-numeric values", "store numeric expression values only")
        gx = np.nan_to_num(gx)
        if gene_groups is None:
            groups = gene_groups_by_correlation(gx[present], min(6, len(genes)))
            group_names = [f"genes{j}" for j in range(len(groups))]
        else:
            groups, group_names = [], []
            for gname, cols in gene_groups.items():
                idx = [genes.index(c) for c in cols if c in genes]
                if idx:
                    groups.append(idx)
                    group_names.append(gname)
            if not groups:
                raise UserError("no gene of gene_groups is a column of the genomics CSV", "check the gene names")
        mods["genomics"] = Modality("tabular", gx, present, groups, group_names, names=genes)
    if patch_dir is not None:
        mods["pathology"] = load_patch_bags(patch_dir, ids, max_patches=max_patches)
    card = {"source": str(clinical_csv), "n": len(ids), "events": int(event.sum())}
    return SurvivalDataset(name, ids, time, event.astype(bool), mods, card)


# ---------------------------------------------------------------------------------------------
# pandas layout (the scikit-survival-style X of the estimators)
#
# One row per patient (the index = patient ids). A column named ``"<modality>/<column>"`` is a
# feature of tabular modality ``<modality>``; ``"<modality>/<group>/<column>"`` also names its token
# group; a plain ``"<column>"`` belongs to ``clinical``. Numeric, boolean and categorical columns are
# allowed (categoricals are one-hot encoded with the levels seen at fit). NaN in every column of a
# modality = the patient lacks that modality; NaN in some of them = that value is imputed by the
# training mean. An object column whose cells are 2-d ``(n_patches, dim)`` arrays (None = no slide)
# is a bag modality named after the column, e.g. ``"pathology"``.

FRAME_SEP = "/"


def _is_bag_column(col: Any) -> bool:
    if col.dtype != object:
        return False
    for v in col:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        return isinstance(v, np.ndarray) or hasattr(v, "shape")
    return False


def _split_name(name: Any) -> tuple[str, str | None, str]:
    parts = str(name).split(FRAME_SEP)
    if len(parts) == 1:
        return "clinical", None, parts[0]
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], FRAME_SEP.join(parts[2:])


def _encode_column(col: Any, levels: list[str] | None) -> np.ndarray:
    """(n, k) float values of one column: numeric as is (NaN kept), categorical one-hot (drop the first level)."""
    import pandas as pd

    if levels is None:
        v = pd.to_numeric(col, errors="coerce").to_numpy(float)
        bad = np.isnan(v) & col.notna().to_numpy()
        if bad.any():
            raise UserError(f"column {col.name!r} mixes numbers and text (e.g. {col[bad].iloc[0]!r})",
                            "store numbers only or make the column categorical")
        return v[:, None]
    s = col.astype(object)
    na = s.isna().to_numpy()
    text = s.astype(str).to_numpy()
    out = np.stack([(text == lv).astype(float) for lv in levels[1:]], axis=1) if len(levels) > 1 else np.zeros((len(s), 0))
    out[na] = np.nan
    return out


def frame_layout(frame: Any, gene_groups: int = 6) -> dict[str, Any]:
    """The layout of a patient x feature DataFrame (fitted on training data, applied by :func:`frame_to_dataset`).

    Args:
        frame: The DataFrame (see the module comment above for the column naming).
        gene_groups: A ``genomics`` modality given without group names is cut into this many
            correlation clusters of the training patients (1 = a single token).

    Returns:
        JSON-able dict: ``tabular`` (per modality: its columns, categorical levels, encoded feature
        names, token groups) and ``bags`` (column and feature dim per bag modality).
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"X must be a pandas DataFrame or a SurvivalDataset, got {type(frame).__name__}",
                        "see trustlab.data.survival.frame_to_dataset for the column layout")
    if frame.shape[0] == 0:
        raise UserError("X has no rows", "pass at least one patient")
    tab: dict[str, dict[str, Any]] = {}
    bags: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        col = frame[name]
        if _is_bag_column(col):
            dims = {np.asarray(v).shape[-1] for v in col if v is not None and not (isinstance(v, float) and np.isnan(v))}
            if len(dims) != 1:
                raise UserError(f"bag column {name!r} holds patch features of dims {sorted(dims)}",
                                "use one feature extractor for every slide")
            bags[str(name)] = {"column": str(name), "dim": int(dims.pop())}
            continue
        mod, group, short = _split_name(name)
        entry = tab.setdefault(mod, {"columns": [], "levels": {}, "features": [], "col_group": []})
        categorical = _is_text(col.dtype) or isinstance(col.dtype, pd.CategoricalDtype)
        if _is_text(col.dtype):  # text columns of numbers are numeric
            conv = pd.to_numeric(col, errors="coerce")
            categorical = bool((conv.isna() & col.notna()).any())
        levels = sorted(col.dropna().astype(str).unique().tolist()) if categorical else None
        if levels is not None:
            entry["levels"][str(name)] = levels
            feats = [f"{short}={lv}" for lv in levels[1:]]
        else:
            feats = [short]
        entry["columns"].append(str(name))
        entry["features"] += feats
        entry["col_group"] += [group] * len(feats)
    for mod, entry in tab.items():
        cg = entry.pop("col_group")
        if not entry["features"]:
            raise UserError(f"modality {mod!r} has no usable feature (only single-level categoricals)", "drop it")
        if any(g is not None for g in cg):
            names = list(dict.fromkeys("other" if g is None else g for g in cg))
            entry["groups"] = [[j for j, g in enumerate(cg) if ("other" if g is None else g) == gn] for gn in names]
            entry["group_names"] = names
        elif mod == "genomics" and gene_groups > 1 and len(cg) > 1:
            x = _encode_tabular(frame, entry)
            rows = ~np.isnan(x).any(1)
            if rows.sum() < 3:
                raise UserError("fewer than 3 patients have complete genomics", "add genomic profiles or drop the modality")
            entry["groups"] = gene_groups_by_correlation(x[rows], min(gene_groups, len(cg)))
            entry["group_names"] = [f"genes{j}" for j in range(len(entry["groups"]))]
        else:
            entry["groups"] = [list(range(len(cg)))]
            entry["group_names"] = [mod]
    if not tab and not bags:
        raise UserError("X has no feature column", "add clinical, genomics or patch-bag columns")
    return {"tabular": tab, "bags": bags}


def _encode_tabular(frame: Any, entry: dict[str, Any]) -> np.ndarray:
    missing = [c for c in entry["columns"] if c not in frame.columns]
    if missing:
        raise UserError(f"X has no column {missing[0]!r} (the model was fitted with it)",
                        "pass the same columns as at fit (NaN where a value is unknown)")
    parts = [_encode_column(frame[c], entry["levels"].get(c)) for c in entry["columns"]]
    return np.concatenate(parts, axis=1)


def frame_to_dataset(
    frame: Any, layout: dict[str, Any], time: Any = None, event: Any = None, max_patches: int | None = None,
    seed: int = 0, name: str = "frame",
) -> SurvivalDataset:
    """A :class:`SurvivalDataset` from a DataFrame in the layout ``layout`` (see :func:`frame_layout`).

    Args:
        frame: One row per patient (index = ids).
        layout: From :func:`frame_layout` on the training data.
        time, event: Labels (None = placeholders for prediction: time 1, censored).
        max_patches: Cap on patches per bag; larger bags are subsampled without replacement
            (seeded per patient id, so the same patient keeps the same patches in every split).
        seed: Seed of that subsampling.
        name: Dataset name.
    """
    import zlib

    n = frame.shape[0]
    ids = np.asarray(frame.index).astype(str)
    mods: dict[str, Modality] = {}
    for mod, entry in layout["tabular"].items():
        x = _encode_tabular(frame, entry)
        present = ~np.isnan(x).all(1)
        mods[mod] = Modality("tabular", np.where(present[:, None], x, 0.0), present, entry["groups"],
                             entry["group_names"], names=list(entry["features"]))
    for mod, entry in layout["bags"].items():
        if entry["column"] not in frame.columns:
            raise UserError(f"X has no bag column {entry['column']!r} (the model was fitted with it)",
                            "pass it (None for patients without a slide)")
        cells = []
        truncated = 0
        for pid, v in zip(ids, frame[entry["column"]], strict=True):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                cells.append(None)
                continue
            a = np.asarray(v, dtype=np.float32)
            if a.ndim != 2 or a.shape[1] != entry["dim"] or a.shape[0] == 0:
                raise UserError(f"patch features of patient {pid!r} have shape {a.shape}",
                                f"expected (n_patches, {entry['dim']}) with n_patches >= 1")
            if max_patches is not None and a.shape[0] > max_patches:
                rng = np.random.default_rng([seed, zlib.crc32(pid.encode())])
                a = a[np.sort(rng.choice(a.shape[0], max_patches, replace=False))]
                truncated += 1
            cells.append(a)
        n_max = max([c.shape[0] for c in cells if c is not None], default=1)
        xb = np.zeros((n, n_max, entry["dim"]), np.float32)
        mask = np.zeros((n, n_max), bool)
        for r, c in enumerate(cells):
            if c is not None:
                xb[r, : c.shape[0]] = c
                mask[r, : c.shape[0]] = True
        present = np.array([c is not None for c in cells])
        mods[mod] = Modality("bag", xb, present, mask=mask,
                             info={"max_patches": max_patches, "bags": int(present.sum()), "truncated_bags": truncated})
    t = np.ones(n) if time is None else np.asarray(time, float)
    e = np.zeros(n, bool) if event is None else np.asarray(event, bool)
    return SurvivalDataset(name, ids, t, e, mods, {"source": "DataFrame", "n": n})


def dataset_to_frame(data: SurvivalDataset) -> Any:
    """The DataFrame layout of a dataset: ``"<modality>/<group>/<column>"`` columns (NaN where the
    modality is missing) and one object column per bag modality (a (n_patches, dim) array or None)."""
    import pandas as pd

    cols: dict[str, Any] = {}
    for m, mod in data.modalities.items():
        if mod.kind == "tabular":
            names = mod.names or [f"x{j}" for j in range(mod.dim)]
            for g, gname in zip(mod.groups, mod.group_names, strict=True):
                for j in g:
                    cols[f"{m}{FRAME_SEP}{gname}{FRAME_SEP}{names[j]}"] = np.where(mod.present, mod.x[:, j], np.nan)
        else:
            cols[m] = pd.Series([mod.x[i, mod.mask[i]] if mod.present[i] else None for i in range(len(data))],
                                dtype=object)
    frame = pd.DataFrame({k: (v.to_numpy() if hasattr(v, "to_numpy") else v) for k, v in cols.items()})
    frame.index = pd.Index(data.ids, name="patient_id")
    return frame


def load_survival_frame(
    clinical_csv: str | Path,
    id_col: str = "patient_id",
    time_col: str | None = "time",
    event_col: str | None = "event",
    genomics_csv: str | Path | None = None,
    patch_dir: str | Path | None = None,
    drop: Sequence[str] = (),
) -> tuple[Any, np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Users' files as the estimator's DataFrame (see :func:`frame_to_dataset`), keyed by patient id.

    Clinical columns become ``clinical/<column>`` (categoricals stay text: the estimator one-hot
    encodes them with the levels seen at fit), genomics columns ``genomics/<gene>`` (patients absent
    from the genomics CSV: all NaN = missing modality), and patch files an object column
    ``pathology`` (None for patients without a file). Bags are *not* capped here: the estimator's
    ``max_patches`` does it.

    Args:
        clinical_csv: One row per patient: ``id_col``, (for fitting) ``time_col`` and ``event_col``
            (1 = event), and clinical columns.
        id_col: Patient id column (in every CSV).
        time_col, event_col: Label columns; None = no labels (prediction).
        genomics_csv: Optional (patient id, gene columns...) table.
        patch_dir: Optional folder of per-patient patch files (see :func:`load_patch_bags`).
        drop: Further clinical columns to leave out (e.g. the training labels at prediction).

    Returns:
        ``(frame, time, event, info)``; ``time``/``event`` are None without label columns; ``info``
        counts patients per modality.

    Raises:
        UserError: missing files/columns, duplicate ids, invalid labels, ids that match nothing.
    """
    import pandas as pd

    clin = _read_csv(clinical_csv, "clinical")
    need = [c for c in (id_col, time_col, event_col) if c is not None]
    for c in need:
        if c not in clin.columns:
            flag = {id_col: "--id", time_col: "--time", event_col: "--event"}[c]
            raise UserError(f"clinical CSV has no column {c!r} (columns: {', '.join(map(str, clin.columns[:8]))})",
                            f"rename the column or pass its name with {flag}")
    if clin[id_col].duplicated().any():
        dup = clin[id_col][clin[id_col].duplicated()].astype(str).tolist()[:3]
        raise UserError(f"duplicate patient ids in clinical CSV: {', '.join(dup)}", "keep one row per patient")
    ids = clin[id_col].astype(str).to_numpy()
    time = event = None
    if time_col is not None and event_col is not None:
        time, ev = _time_event(clin, time_col, event_col, ids)
        event = ev.astype(bool)
    skip = set(need) | set(drop)
    cols = {f"clinical{FRAME_SEP}{c}": clin[c].to_numpy() for c in clin.columns if c not in skip}
    info: dict[str, Any] = {"patients": len(ids), "clinical_columns": len(cols)}
    if genomics_csv is not None:
        gen = _read_csv(genomics_csv, "genomics")
        if id_col not in gen.columns:
            raise UserError(f"genomics CSV has no id column {id_col!r}", "add it or pass its name with --id")
        gen[id_col] = gen[id_col].astype(str)
        if gen[id_col].duplicated().any():
            raise UserError("duplicate patient ids in genomics CSV", "keep one row per patient")
        matched = set(gen[id_col]) & set(ids)
        if not matched:
            raise UserError(f"no genomics id matches a clinical id (e.g. {gen[id_col].iloc[0]!r} vs {ids[0]!r})",
                            "use the same patient ids in both CSVs")
        unknown = sorted(set(gen[id_col]) - set(ids))
        if unknown:
            log.warning("%d genomics row(s) match no clinical id and are ignored, e.g. %s", len(unknown), unknown[:3])
        genes = [c for c in gen.columns if c != id_col]
        g = gen.set_index(id_col).reindex(ids)[genes].apply(pd.to_numeric, errors="coerce")
        if (g.isna() & gen.set_index(id_col).reindex(ids)[genes].notna()).to_numpy().any():
            raise UserError("genomics CSV has non-numeric values", "store numeric expression values only")
        for c in genes:
            cols[f"genomics{FRAME_SEP}{c}"] = g[c].to_numpy(float)
        info["genomics_patients"] = int(g.notna().any(axis=1).sum())
    if patch_dir is not None:
        bag = load_patch_bags(patch_dir, ids, max_patches=None)
        cols["pathology"] = [bag.x[i, bag.mask[i]] if bag.present[i] else None for i in range(len(ids))]
        info["pathology_patients"] = int(bag.present.sum())
        info["largest_bag"] = int(bag.info["largest_bag"])
    if not cols:
        raise UserError("no feature column besides id/time/event", "add clinical columns, --genomics or --patches")
    frame = pd.DataFrame({k: pd.Series(v, dtype=object if k == "pathology" else None) for k, v in cols.items()})
    frame.index = pd.Index(ids, name=id_col)
    return frame, time, event, info
