"""Robustness evaluation: our PGD-20, and AutoAttack-style attacks from ART as the independent peer.

ART (adversarial-robustness-toolbox) is the peer implementation. Its ``AutoAttack`` runs the attacks
we pass in sequence, each only on the points still robust, and counts a success only within ε.
We pass APGD-CE, APGD-DLR (both untargeted, ``eps_step = 2ε`` as Croce & Hein) and Square
(black-box, a gradient-masking check) with reduced iteration budgets ("AA-lite"); this is not the
RobustBench "standard" AutoAttack, and the attack list and budgets are recorded with every result.

ART's ``AutoAttack.generate`` imports the ``multiprocess`` package unconditionally although it only
uses it when ``parallel_pool_size > 0``. When that package is missing we register the standard
library's ``multiprocessing`` under that name for the duration of the call (we never use the pool).
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trustlab.errors import require
from trustlab.utils.logging import get_logger

log = get_logger(__name__)


@contextlib.contextmanager
def _multiprocess_importable() -> Iterator[None]:
    inserted = False
    if "multiprocess" not in sys.modules and importlib.util.find_spec("multiprocess") is None:
        sys.modules["multiprocess"] = multiprocessing
        inserted = True
    try:
        yield
    finally:
        if inserted:
            sys.modules.pop("multiprocess", None)


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], nb_classes: int,
                   clip: tuple[float, float] = (0.0, 1.0), device: str = "cpu") -> Any:
    """Wrap a logits model as an ART ``PyTorchClassifier`` (gradients in eval mode)."""
    require("art", "adv")
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=input_shape,
                             nb_classes=nb_classes, clip_values=clip, device_type="gpu" if device != "cpu" else "cpu")


@dataclass(frozen=True)
class AAConfig:
    """The attack list and budgets of our ART AutoAttack run.

    Attributes:
        eps: L∞ budget.
        apgd_iters: Iterations of APGD-CE and APGD-DLR (Croce & Hein: 100).
        apgd_restarts: Random restarts of each APGD (standard AA: 1).
        square_queries: Square attack iterations (standard AA: 5000).
        batch_size: Attack batch size.
    """

    eps: float
    apgd_iters: int = 100
    apgd_restarts: int = 1
    square_queries: int = 5000
    batch_size: int = 128

    def describe(self) -> str:
        return (f"ART AutoAttack[APGD-CE x{self.apgd_restarts} ({self.apgd_iters} it), APGD-DLR x{self.apgd_restarts} "
                f"({self.apgd_iters} it), Square ({self.square_queries} q)], Linf eps={self.eps:g}, eps_step=2eps")


def art_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AAConfig,
                   nb_classes: int = 10, seed: int = 0) -> dict[str, Any]:
    """Run ART's ``AutoAttack`` with APGD-CE, APGD-DLR and Square on ``(x, y)``.

    Returns:
        ``acc`` (robust accuracy in [0, 1]), ``robust`` (per-point bool list), ``best_attacks`` (ART's
        per-point code: -2 misclassified clean, -1 robust, else the index of the attack that won),
        ``max_linf`` (largest perturbation found) and ``attacks`` (description).
    """
    require("art", "adv")
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack

    np.random.seed(seed)  # ART draws its random starts and Square's patches from NumPy's global RNG
    clf = art_classifier(model, tuple(x.shape[1:]), nb_classes)
    common = dict(norm=np.inf, eps=cfg.eps, eps_step=2 * cfg.eps, max_iter=cfg.apgd_iters,
                  nb_random_init=cfg.apgd_restarts, batch_size=cfg.batch_size, verbose=False)
    attacks = [
        AutoProjectedGradientDescent(clf, loss_type="cross_entropy", **common),
        AutoProjectedGradientDescent(clf, loss_type="difference_logits_ratio", **common),
        SquareAttack(clf, norm=np.inf, eps=cfg.eps, max_iter=cfg.square_queries, nb_restarts=1,
                     batch_size=cfg.batch_size, verbose=False),
    ]
    xs = x.detach().cpu().numpy().astype(np.float32)
    ys = y.detach().cpu().numpy()
    with _multiprocess_importable():
        aa = AutoAttack(clf, norm=np.inf, eps=cfg.eps, eps_step=2 * cfg.eps, attacks=attacks,
                        batch_size=cfg.batch_size)
        x_adv = aa.generate(xs, y=ys)
    pred = clf.predict(x_adv, batch_size=cfg.batch_size).argmax(1)
    clean_ok = clf.predict(xs, batch_size=cfg.batch_size).argmax(1) == ys
    robust = (pred == ys) & clean_ok
    return {"acc": float(robust.mean()) if len(ys) else 0.0, "robust": robust.tolist(),
            "best_attacks": [int(b) for b in aa.best_attacks],
            "max_linf": float(np.abs(x_adv - xs).max()) if len(ys) else 0.0, "attacks": cfg.describe()}


def art_pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                     nb_classes: int = 10, batch_size: int = 128, seed: int = 0) -> float:
    """Robust accuracy under ART's ``ProjectedGradientDescentPyTorch`` (1 uniform random start, true labels)."""
    require("art", "adv")
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    np.random.seed(seed)
    clf = art_classifier(model, tuple(x.shape[1:]), nb_classes)
    atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                          num_random_init=1, batch_size=batch_size, verbose=False)
    xs = x.detach().cpu().numpy().astype(np.float32)
    ys = y.detach().cpu().numpy()
    x_adv = atk.generate(xs, y=ys)
    pred = clf.predict(x_adv, batch_size=batch_size).argmax(1)
    clean_ok = clf.predict(xs, batch_size=batch_size).argmax(1) == ys
    return float(((pred == ys) & clean_ok).mean()) if len(ys) else 0.0
