"""UAD-AT experiment configuration (defaults = the ``default`` scale; see ``SCALES`` for the others).

All UAD-AT hyper-parameters are ours (tag ``reconstructed``): the paper body was not available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.config import SystemConfig
from trustlab.errors import UserError

BASELINES: tuple[str, ...] = ("standard", "pgd_at", "trades", "mart")
ABLATIONS: tuple[str, ...] = ("uadat_no_uncertainty", "uadat_no_reference", "uadat_no_d2d", "uadat_no_iga")
REF_MODES: tuple[str, ...] = ("nearest", "proximity", "mask", "inverse", "class_mean", "swap", "blend")  # as method.REF_MODES
#: ``uadat`` is the method as the abstract describes it (κ = 0); ``uadat_ce`` is our variant with the adversarial
#: cross-entropy term (κ = ``ce_kappa``), ``trades_ce`` is TRADES plus that same term (every UAD-AT component off).
CE_ROWS: tuple[str, ...] = ("trades_ce", "uadat_ce")
ALL_METHODS: tuple[str, ...] = (*BASELINES, "uadat", *CE_ROWS, *ABLATIONS)
ARCHS: tuple[str, ...] = ("small_cnn", "preact_resnet8", "preact_resnet18")
AA_COMPOSITIONS: tuple[str, ...] = ("reduced", "standard")


@dataclass
class Config(SystemConfig):
    """UAD-AT vs PGD-AT/TRADES/MART on Fashion-MNIST (L∞ ε = 0.1).

    Attributes:
        dataset: ``fashion-mnist`` (Debian package), ``digits`` (sklearn) or ``cifar10`` (needs ``data_root``).
        data_root: Folder of the data files (Fashion-MNIST IDX files or ``cifar-10-batches-py``).
        fallback_to_digits: Use sklearn digits when Fashion-MNIST is not installed (recorded in notes).
        n_train: Stratified training subset size (0 = all).
        n_test: Test points for natural and PGD-20 accuracy.
        n_aa: First ``n_aa`` of those for ART AutoAttack (and the ART PGD cross-check).
        data_seed: Seed of the subsets (fixed across training seeds so all methods see the same points).
        arch: ``small_cnn``, ``preact_resnet8`` (narrow PreAct ResNet, one block per stage, widths
            ``width``/``2·width``/``4·width``; called ``resnet`` before) or ``preact_resnet18`` (PreAct
            ResNet-18, 2 blocks per stage, widths 64/128/256/512; ``width`` is ignored).
        width: Base channel width of the model.
        epochs: Training epochs, equal for every method.
        batch_size: Mini-batch size.
        lr: Peak SGD learning rate (cosine schedule, momentum 0.9).
        weight_decay: SGD weight decay.
        eps: L∞ budget for training and evaluation (0.1 is the usual Fashion-MNIST budget).
        train_steps: PGD steps when crafting training adversaries.
        train_alpha: Their step size (``null`` = 2.5·eps/train_steps, Madry's rule).
        eval_steps: PGD steps of the evaluation attack (PGD-20).
        eval_alpha: Its step size (``null`` = eps/4).
        trades_beta: TRADES β.
        mart_beta: MART β.
        uadat_beta: UAD-AT output-level matching weight.
        uadat_gamma: UAD-AT feature W2 weight (component d2d).
        uadat_lambda: UAD-AT gradient-alignment weight (component iga).
        uadat_p: Probability of uncertainty resampling per batch.
        uadat_draws: Uncertainty draws per batch.
        uadat_adv_ce: κ of the ``uadat`` row and its ablations: weight of the expected cross-entropy over the
            adversary distribution. 0 = the method as the abstract describes it (no such term).
        ce_kappa: κ of the ``uadat_ce`` and ``trades_ce`` rows (the adversarial-CE variant; 1 = the value
            earlier sessions shipped as ``uadat``).
        uadat_ref_mode: Reference of misclassified clean examples: ``mask`` (not aligned: left out of the KL
            and W2 terms; default since the fifth session), ``blend`` (half own prediction, half the class
            mean of correct same-class clean predictions), ``class_mean``, ``nearest`` (hard nearest correct
            same-class neighbour), ``proximity`` (soft), ``swap`` (own prediction with the predicted/true
            class probabilities exchanged) or ``inverse`` (UIAT-style inverse adversary); see docs/dev/uadat.md.
        uadat_attack: Inner maximisation: ``kl`` (TRADES), ``kl_uniform`` (KL from a uniform start) or ``ce``.
        autoattack: ``reduced`` (``aa_reduced``: ART AutoAttack with APGD-CE, APGD-DLR and Square at
            ``aa_iters``/``aa_square_queries``; metric ``aa_reduced_acc``) or ``standard``
            (``aa_standard_nofab``: APGD-CE 100 it, APGD-T over 9 targets, Square 5,000 queries, no FAB-T;
            metric ``aa_acc``); see ``evaluation.py``.
        aa_iters: APGD iterations of the reduced composition.
        aa_square_queries: Square iterations of the reduced composition.
        art_pgd_check: Also run ART's PGD-20 (cross-check of our PGD) on the first ``n_art_pgd`` AA points.
        n_art_pgd: Points of that cross-check (0 = all ``n_aa``); a paired check of two implementations of
            the same attack needs fewer points than the method comparison.
        methods: Methods to run (names from DESIGN.md).
    """

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    fallback_to_digits: bool = True
    n_train: int = 1500
    n_test: int = 600
    n_aa: int = 600
    data_seed: int = 0
    arch: str = "small_cnn"
    width: int = 8
    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    eps: float = 0.1
    train_steps: int = 5
    train_alpha: float | None = None
    eval_steps: int = 20
    eval_alpha: float | None = None
    trades_beta: float = 6.0
    mart_beta: float = 6.0
    uadat_beta: float = 6.0
    uadat_gamma: float = 1.0
    uadat_lambda: float = 0.1
    uadat_p: float = 0.5
    uadat_draws: int = 1
    uadat_adv_ce: float = 0.0
    ce_kappa: float = 1.0
    uadat_ref_mode: str = "mask"
    uadat_attack: str = "kl"
    autoattack: str = "reduced"
    aa_iters: int = 20
    aa_square_queries: int = 100
    art_pgd_check: bool = True
    n_art_pgd: int = 200
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"n_train": 256, "n_test": 100, "n_aa": 50, "epochs": 2, "batch_size": 32, "train_steps": 2,
                  "eval_steps": 5, "aa_iters": 5, "aa_square_queries": 10, "art_pgd_check": False, "seeds": [0],
                  "methods": ["pgd_at", "trades", "uadat", "uadat_ce"]},
        "smoke": {"n_train": 320, "n_test": 100, "n_aa": 20, "epochs": 3, "batch_size": 32, "train_steps": 3, "eval_steps": 10,
                  "aa_iters": 5, "aa_square_queries": 10, "seeds": [0],
                  "methods": ["standard", "pgd_at", "trades", "uadat"]},
        "paper": {"n_train": 0, "n_test": 10000, "n_aa": 1000, "epochs": 30, "batch_size": 128, "width": 32,
                  "train_steps": 10, "autoattack": "standard", "lr": 0.05},
    }

    @property
    def aa_metric(self) -> str:
        """Result key of the AutoAttack accuracy: ``aa_acc`` (standard composition) or ``aa_reduced_acc``."""
        return "aa_acc" if self.autoattack == "standard" else "aa_reduced_acc"

    @property
    def art_pgd_points(self) -> int:
        """Points of the ART-PGD cross-check: the first ``n_art_pgd`` AA points (0 = all of them)."""
        return min(self.n_art_pgd, self.n_aa) if self.n_art_pgd > 0 else self.n_aa

    def validate(self) -> None:
        super().validate()
        if self.dataset not in ("fashion-mnist", "digits", "cifar10"):
            raise UserError(f"unknown dataset {self.dataset!r}", "use fashion-mnist, digits or cifar10")
        if self.dataset == "cifar10" and not self.data_root:
            raise UserError("dataset cifar10 needs data_root", "--set data_root=/path/to/cifar-10-batches-py")
        if self.arch == "resnet":
            raise UserError("arch 'resnet' was renamed: it was a PreAct ResNet-8 (one block per stage)",
                            "use arch=preact_resnet8 for that network or arch=preact_resnet18 for PreAct ResNet-18")
        if self.arch not in ARCHS:
            raise UserError(f"unknown arch {self.arch!r}", f"use one of {', '.join(ARCHS)}")
        if self.autoattack not in AA_COMPOSITIONS:
            raise UserError(f"unknown autoattack {self.autoattack!r}", "use reduced or standard")
        if self.n_train < 0 or self.n_test < 1 or not 0 <= self.n_aa <= self.n_test:
            raise UserError(f"bad sizes n_train={self.n_train}, n_test={self.n_test}, n_aa={self.n_aa}",
                            "need n_train >= 0 (0 = all), n_test >= 1 and 0 <= n_aa <= n_test")
        if self.epochs < 1 or self.batch_size < 2 or self.width < 1:
            raise UserError("epochs, batch_size and width must be positive (batch_size >= 2)", "fix the config")
        if not 0 < self.eps <= 1 or self.lr <= 0:
            raise UserError(f"eps must be in (0, 1] and lr > 0, got eps={self.eps}, lr={self.lr}", "fix the config")
        if self.n_art_pgd < 0:
            raise UserError(f"n_art_pgd must be >= 0, got {self.n_art_pgd}", "use 0 (all AA points) or a count")
        if self.train_steps < 1 or self.eval_steps < 1 or self.aa_iters < 1 or self.aa_square_queries < 1:
            raise UserError("attack step counts must be >= 1", "fix the config")
        if not 0 <= self.uadat_p <= 1 or self.uadat_draws < 1:
            raise UserError("uadat_p must be in [0, 1] and uadat_draws >= 1", "fix the config")
        if min(self.uadat_beta, self.uadat_gamma, self.uadat_lambda, self.uadat_adv_ce, self.ce_kappa) < 0:
            raise UserError("uadat_beta, uadat_gamma, uadat_lambda, uadat_adv_ce and ce_kappa must be >= 0",
                            "fix the config")
        if self.uadat_ref_mode not in REF_MODES:
            raise UserError(f"unknown uadat_ref_mode {self.uadat_ref_mode!r}", f"use one of {', '.join(REF_MODES)}")
        if self.uadat_attack not in ("kl", "kl_uniform", "ce"):
            raise UserError(f"unknown uadat_attack {self.uadat_attack!r}", "use kl, kl_uniform or ce")
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad or not self.methods:
            raise UserError(f"unknown method(s) {bad}", f"use some of: {', '.join(ALL_METHODS)}")
