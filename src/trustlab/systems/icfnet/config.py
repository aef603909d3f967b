"""Configuration of the ICFNet experiment (5-fold CV x seeds on embedded datasets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.config import SystemConfig
from trustlab.data.survival import EMBEDDED, SURVSET
from trustlab.errors import UserError


@dataclass
class Config(SystemConfig):
    """ICFNet experiment settings (defaults = the ``default`` scale, <= 10 min on 2 idle cores).

    The neural training settings (``balanced_sampler``, ``weight_decay`` and the learning rates) were
    chosen on development cohorts only (:mod:`trustlab.systems.icfnet.devsearch`; README).

    Attributes:
        datasets: Embedded datasets (settings); ``synthetic`` has genomics + pathology bags + clinical.
        folds: Cross-validation folds (stratified by event).
        n_synthetic: Patients in the synthetic cohort.
        synthetic_censoring: Censoring fraction of the synthetic cohort.
        methods: Methods to run (None = all that apply to a dataset).
        n_bins: Discrete time bins K.
        d: Hidden size of the neural models.
        icf_d: Hidden size of ICFNet and the models built from its encoders (None = ``d``).
        tokens: ICFNet's tabular tokenisation: ``"groups"`` (one token per column group) or
            ``"modality"`` (one token per tabular modality).
        token_dropout: Training-time probability of zeroing a whole tabular token (ICFNet family).
        heads: Attention heads.
        layers: Transformer layers per stream (2 as in the paper and the official code; 0 = gated
            attention pooling only, the ``icfnet_lite`` row).
        fusion_layers: Transformer layers in the unification module (2 as in the paper).
        dropout: Dropout of the neural models.
        epochs: Training epochs (the maximum when early stopping is on).
        val_fraction: Share of each training fold held out for early stopping on the validation
            C-index, the same rule for every neural model (0 = fixed epochs, last epoch kept).
        patience: Early-stopping patience in epochs.
        refit: Retrain on the whole training fold for the selected number of epochs.
        balanced_sampler: Draw training patients inversely to the size of their (time bin, censored)
            stratum (the official data loader's sampler), for every discrete-time neural model.
        val_metric: Early-stopping criterion: ``"loss"`` (the model's own survival loss on the
            validation patients) or ``"cindex"``.
        swa: Weight averaging over the last ``swa`` share of the epochs, for every neural model
            (0 = keep the last epoch's weights).
        head_init: Start every discrete-time hazard head at the training fold's marginal hazards.
        batch_size: Patients per step.
        lr: Adam learning rate of ICFNet and the models built from its encoders (ablations, late
            fusion, single-modality models).
        deepsurv_lr: Adam learning rate of DeepSurv (None = ``lr``; chosen with
            ``deepsurv_weight_decay`` on the development cohorts, eighth pass; was 1e-3).
        early_fusion_lr: Adam learning rate of the early-fusion MLP (None = ``lr``; 3e-3, chosen with
            ``early_fusion_weight_decay`` on the development cohorts, eighth pass).
        weight_decay: Adam weight decay.
        deepsurv_weight_decay: Adam weight decay of DeepSurv (None = ``weight_decay``; eighth pass:
            0.1, was the shared 1e-3).
        early_fusion_weight_decay: Adam weight decay of the early-fusion MLP (None = ``weight_decay``;
            eighth pass: 0.1, was the shared 1e-3).
        ot_iters: Maximum Sinkhorn iterations (1000 = POT's ``numItermax``, the official call).
        ot_tol: Sinkhorn stopping threshold (1e-6 = POT's ``stopThr``; 0 = exactly ``ot_iters``).
        cox_alpha: Ridge penalty of CoxPH (chosen on the development cohorts, eighth pass; was 10).
        rsf_trees: Trees of the random survival forest.
        rsf_min_leaf: Minimum patients per leaf of the random survival forest (chosen on the
            development cohorts, eighth pass; was 10).
        rsf_max_features: Features per split of the random survival forest (sklearn semantics;
            chosen on the development cohorts, eighth pass; was "sqrt").
        lite: Also run ``icfnet_lite``, the earlier CPU cut of the architecture (no per-stream
            transformers, one unification layer, 5 Sinkhorn iterations), as a named row.
        risk_groups: Risk groups of the Kaplan-Meier plot (tertiles by default).
        ablate_fusion: Also run ``icfnet_no_ufm`` (concat instead of the unification module).
    """

    datasets: list[str] = field(default_factory=lambda: ["synthetic", "breast_cancer"])
    folds: int = 5
    n_synthetic: int = 300
    synthetic_censoring: float = 0.4
    methods: list[str] | None = None
    n_bins: int = 4
    d: int = 16
    icf_d: int | None = None
    tokens: str = "groups"
    token_dropout: float = 0.0
    heads: int = 2
    layers: int = 2
    fusion_layers: int = 2
    dropout: float = 0.1
    epochs: int = 20
    val_fraction: float = 0.0
    patience: int = 10
    refit: bool = True
    val_metric: str = "loss"
    balanced_sampler: bool = False
    swa: float = 0.0
    head_init: bool = False
    batch_size: int = 32
    lr: float = 5e-3
    deepsurv_lr: float | None = 1e-2
    early_fusion_lr: float | None = 3e-3
    weight_decay: float = 1e-3
    deepsurv_weight_decay: float | None = 0.1
    early_fusion_weight_decay: float | None = 0.1
    ot_iters: int = 1000
    ot_tol: float = 1e-6
    cox_alpha: float = 316.227766
    rsf_trees: int = 50
    rsf_min_leaf: int = 5
    rsf_max_features: float | str = 0.5
    lite: bool = True
    risk_groups: int = 3
    ablate_fusion: bool = False

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"seeds": [0], "folds": 5, "datasets": ["synthetic"],
                  "methods": ["icfnet", "only_genomics", "only_pathology", "only_clinical", "late_fusion", "coxph"],
                  "rsf_trees": 10},
        "quick": {"seeds": [0], "folds": 3, "n_synthetic": 100, "epochs": 10, "lite": False,
                  "datasets": ["synthetic", "breast_cancer"], "methods": ["icfnet", "late_fusion", "coxph"]},
        "paper": {"d": 64, "heads": 4, "layers": 2, "fusion_layers": 2, "dropout": 0.25, "epochs": 60,
                  "n_synthetic": 600, "datasets": ["synthetic", "breast_cancer", "gbsg2", "whas500"],
                  "rsf_trees": 100, "seeds": [0, 1, 2, 3, 4], "ablate_fusion": True},
    }

    def validate(self) -> None:
        """Check ranges and names."""
        super().validate()
        for name in self.datasets:
            if name not in EMBEDDED + SURVSET:
                raise UserError(f"unknown dataset {name!r}", f"use one of: {', '.join(EMBEDDED + SURVSET)}")
        if self.folds < 2:
            raise UserError(f"folds={self.folds} is too small", "use folds >= 2")
        if self.n_synthetic < 50:
            raise UserError(f"n_synthetic={self.n_synthetic} is too small", "use n_synthetic >= 50")
        if self.epochs < 1 or self.batch_size < 2 or min(self.lr, self.deepsurv_lr or 1, self.early_fusion_lr or 1) <= 0:
            raise UserError("epochs, batch_size and lr must be positive", "e.g. epochs=30 batch_size=64 lr=0.003")
        if not 0.0 <= self.val_fraction < 0.5 or self.patience < 1:
            raise UserError(f"val_fraction={self.val_fraction}, patience={self.patience} out of range",
                            "use 0 <= val_fraction < 0.5 (e.g. 0.2) and patience >= 1")
        if not 0.0 <= self.swa <= 1.0:
            raise UserError(f"swa={self.swa} is out of range", "use 0 <= swa <= 1 (e.g. 0.5)")
        if self.val_metric not in ("loss", "cindex"):
            raise UserError(f"val_metric={self.val_metric!r} is unknown", "use 'loss' or 'cindex'")
        for name, dim in (("d", self.d), ("icf_d", self.icf_d or self.d)):
            if dim % self.heads:
                raise UserError(f"{name}={dim} is not divisible by heads={self.heads}", "pick a multiple of heads")
        if self.tokens not in ("groups", "modality"):
            raise UserError(f"tokens={self.tokens!r} is unknown", "use 'groups' or 'modality'")
        if not 0.0 <= self.token_dropout < 1.0:
            raise UserError(f"token_dropout={self.token_dropout} is out of range", "use 0 <= token_dropout < 1")
        if self.rsf_min_leaf < 1 or (isinstance(self.rsf_max_features, str) and self.rsf_max_features not in ("sqrt", "log2")):
            raise UserError(f"rsf_min_leaf={self.rsf_min_leaf}, rsf_max_features={self.rsf_max_features!r} out of range",
                            "use rsf_min_leaf >= 1 and rsf_max_features 'sqrt', 'log2' or a fraction in (0, 1]")
        if self.ot_iters < 1 or self.ot_tol < 0:
            raise UserError(f"ot_iters={self.ot_iters}, ot_tol={self.ot_tol} out of range", "use ot_iters >= 1, ot_tol >= 0")
        if self.risk_groups < 2:
            raise UserError("risk_groups must be >= 2", "use 2 (median split) or 3 (tertiles)")
