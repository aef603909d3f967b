"""Configuration of the FVL-FP experiment (defaults = ``default`` scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.config import SystemConfig
from trustlab.errors import UserError

#: Every method the experiment knows (DESIGN.md names).
ALL_METHODS: tuple[str, ...] = (
    "zero_shot", "promptfl", "fairfed", "qffl", "fvlfp", "fvlfp_no_cdfp", "fvlfp_no_dsop", "fvlfp_no_fpf",
)


@dataclass
class Config(SystemConfig):
    """FVL-FP experiment.

    Attributes:
        backbone: ``"tiny"`` (the embedded TinyCLIP, pretrained by our code and cached) or the local
            folder of a transformers ``CLIPModel`` + tokenizer (then ``data_path`` must be given).
        data_path: Optional ``.npz`` with your own data (see ``data.py``); empty = synthetic FairVL.
        features_path: Optional ``manifest.json`` of precomputed per-client image features (one
            ``.npy`` per client; see ``data.load_feature_manifest``); replaces images and ``data_path``.
        text_alignment: Synthetic world only: share ``α`` of the demographic image signal in the
            pattern the captions name (1 = the aligned world; 0.5 = the "partial" world, see
            ``trustlab.data.fair_vl``).
        class_signal / group_signal / noise / image_size: FairVL world (see trustlab.data.fair_vl).
        pretrain_pairs / pretrain_epochs / pretrain_corr: TinyCLIP pretraining recipe
            (``pretrain_corr`` = label-attribute co-occurrence in the captioned corpus: the planted bias).
        client_corrs: Per-client ``P(attribute = label)`` (non-IID correlation; 0.5 = independent).
        n_train / n_val / n_test_client / n_test: Split sizes (per client; global balanced test).
        label_alpha: Dirichlet label skew across clients (``None``: balanced labels).
        rounds / fraction_fit: Federated rounds and client fraction per round.
        n_ctx / local_steps / batch_size / lr / momentum: CoOp prompt and local SGD.
        lambda_cf / lambda_layer: CDFP weights (image counterfactual KL, cross-layer text term).
        fpf_eta / fpf_gamma: FPF temperature and fairness weight.
        fairfed_beta / qffl_q: Baseline hyper-parameters.
        methods: Methods to run.
    """

    backbone: str = "tiny"
    data_path: str = ""
    features_path: str = ""
    text_alignment: float = 1.0
    class_signal: float = 0.2
    group_signal: float = 1.0
    noise: float = 1.0
    image_size: int = 12
    pretrain_pairs: int = 4000
    pretrain_epochs: int = 10
    pretrain_corr: float = 0.9
    client_corrs: list[float] = field(default_factory=lambda: [0.95, 0.95, 0.95, 0.9, 0.9, 0.85, 0.5, 0.5])
    n_train: int = 200
    n_val: int = 100
    n_test_client: int = 100
    n_test: int = 2000
    label_alpha: float | None = None
    rounds: int = 10
    fraction_fit: float = 1.0
    n_ctx: int = 4
    local_steps: int = 5
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    lambda_cf: float = 5.0
    lambda_layer: float = 1.0
    fpf_eta: float = 10.0
    fpf_gamma: float = 2.0
    fairfed_beta: float = 1.0
    qffl_q: float = 1.0
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"seeds": [0], "rounds": 5, "n_test": 1000},
        "quick": {"seeds": [0], "rounds": 4, "n_test": 600, "n_train": 100, "n_val": 60, "n_test_client": 60,
                  "local_steps": 3, "methods": ["zero_shot", "promptfl", "fvlfp"]},
        "paper": {"seeds": [0, 1, 2, 3, 4], "rounds": 30, "n_train": 400, "pretrain_pairs": 8000,
                  "pretrain_epochs": 20, "n_test": 4000},
    }

    def validate(self) -> None:
        """Check ranges and names; raise :class:`UserError` with the fix."""
        super().validate()
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown or not self.methods:
            raise UserError(f"unknown or empty methods {unknown or self.methods}", f"choose from {', '.join(ALL_METHODS)}")
        if not 0.0 <= self.text_alignment <= 1.0:
            raise UserError(f"text_alignment={self.text_alignment} must be in [0, 1]", "e.g. text_alignment=0.5")
        if self.backbone != "tiny" and not (self.data_path or self.features_path):
            raise UserError(f"backbone {self.backbone!r} needs your own data",
                            "set data_path=your.npz (images preprocessed for that CLIP; see systems/fvlfp/README.md)")
        if not self.client_corrs or any(not 0.0 <= c <= 1.0 for c in self.client_corrs):
            raise UserError(f"client_corrs {self.client_corrs} must be a non-empty list of numbers in [0, 1]",
                            "e.g. client_corrs=[0.95,0.9,0.5]")
        for k in ("n_train", "n_val", "n_test_client", "n_test", "rounds", "n_ctx", "local_steps", "batch_size",
                  "pretrain_pairs", "pretrain_epochs", "image_size"):
            if getattr(self, k) < 1:
                raise UserError(f"{k}={getattr(self, k)} must be >= 1", f"set {k} to a positive integer")
        for k in ("lr", "class_signal", "group_signal", "noise", "lambda_cf", "lambda_layer", "fpf_eta", "fpf_gamma",
                  "fairfed_beta", "qffl_q"):
            if getattr(self, k) < 0 or (k == "lr" and self.lr == 0):
                raise UserError(f"{k}={getattr(self, k)} is out of range", f"set {k} >= 0 (lr > 0)")
        if not 0.0 < self.fraction_fit <= 1.0:
            raise UserError(f"fraction_fit={self.fraction_fit} must be in (0, 1]", "e.g. fraction_fit=1.0")
        if not 0.0 <= self.momentum < 1.0 or not 0.0 <= self.pretrain_corr <= 1.0:
            raise UserError("momentum must be in [0, 1) and pretrain_corr in [0, 1]", "fix the value")
        if self.label_alpha is not None and self.label_alpha <= 0:
            raise UserError(f"label_alpha={self.label_alpha} must be > 0 or null", "e.g. label_alpha=0.5")
