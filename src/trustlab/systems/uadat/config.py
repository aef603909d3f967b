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
ALL_METHODS: tuple[str, ...] = (*BASELINES, "uadat", *ABLATIONS)


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
        arch: ``small_cnn`` or ``resnet`` (a narrow pre-activation ResNet).
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
        uadat_adv_ce: Weight of the expected cross-entropy over the adversary distribution (0 = TRADES-shaped).
        uadat_ref_mode: Reference of misclassified clean examples: ``mask`` (not aligned: left out of the KL
            and W2 terms; default since the fifth session), ``blend`` (half own prediction, half the class
            mean of correct same-class clean predictions), ``class_mean``, ``nearest`` (hard nearest correct
            same-class neighbour), ``proximity`` (soft), ``swap`` (own prediction with the predicted/true
            class probabilities exchanged) or ``inverse`` (UIAT-style inverse adversary); see README.md.
        uadat_attack: Inner maximisation: ``kl`` (TRADES), ``kl_uniform`` (KL from a uniform start) or ``ce``.
        aa_iters: APGD-CE/APGD-DLR iterations.
        aa_square_queries: Square attack iterations.
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
    uadat_adv_ce: float = 1.0
    uadat_ref_mode: str = "mask"
    uadat_attack: str = "kl"
    aa_iters: int = 20
    aa_square_queries: int = 100
    art_pgd_check: bool = True
    n_art_pgd: int = 200
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))

    SCALES: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"n_train": 320, "n_test": 100, "n_aa": 20, "epochs": 3, "batch_size": 32, "train_steps": 3, "eval_steps": 10,
                  "aa_iters": 5, "aa_square_queries": 10, "seeds": [0],
                  "methods": ["standard", "pgd_at", "trades", "uadat"]},
        "paper": {"n_train": 0, "n_test": 10000, "n_aa": 1000, "epochs": 30, "batch_size": 128, "width": 32,
                  "train_steps": 10, "aa_iters": 100, "aa_square_queries": 5000, "lr": 0.05},
    }

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
        if self.arch not in ("small_cnn", "resnet"):
            raise UserError(f"unknown arch {self.arch!r}", "use small_cnn or resnet")
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
        if min(self.uadat_beta, self.uadat_gamma, self.uadat_lambda, self.uadat_adv_ce) < 0:
            raise UserError("uadat_beta, uadat_gamma, uadat_lambda and uadat_adv_ce must be >= 0", "fix the config")
        if self.uadat_ref_mode not in REF_MODES:
            raise UserError(f"unknown uadat_ref_mode {self.uadat_ref_mode!r}", f"use one of {', '.join(REF_MODES)}")
        if self.uadat_attack not in ("kl", "kl_uniform", "ce"):
            raise UserError(f"unknown uadat_attack {self.uadat_attack!r}", "use kl, kl_uniform or ce")
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad or not self.methods:
            raise UserError(f"unknown method(s) {bad}", f"use some of: {', '.join(ALL_METHODS)}")
