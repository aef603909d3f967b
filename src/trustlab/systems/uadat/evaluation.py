"""Robustness evaluation: our PGD-20, and AutoAttack compositions built from ART's attacks (the peer).

Two named compositions (each result records its name and the exact attack list):

* ``aa_standard_nofab`` (``composition="standard"``, the paper scale and ``robust-eval``'s default): the
  attacks of Croce & Hein's *standard* AutoAttack (ICML 2020) as far as ART 1.20 has them, run in
  sequence, each only on the points still robust, a success counted only within ε:
  APGD-CE (100 iterations, 1 restart, ``eps_step = 2ε``), APGD-T (ART's targeted APGD with the DLR loss,
  100 iterations, 1 restart per target, over the 9 classes with the highest clean logits after the
  true one, i.e. every other class for 10-class data), Square (5,000 queries, ``p_init = 0.8``,
  1 restart). **FAB-T is not in ART and is left out**, hence the name. ART's targeted DLR is its
  untargeted DLR evaluated at the target label and descended (``-(z_t - z_i)/(z_1 - z_3)``), not
  Croce & Hein's targeted DLR ``-(z_y - z_t)/(z_1 - (z_3 + z_4)/2)``; both push the target logit up.
* ``aa_reduced`` (``composition="reduced"``, the default and smoke scales): ART's ``AutoAttack`` class with
  an explicit list APGD-CE, APGD-DLR (both untargeted) and Square, with reduced iteration budgets
  (recorded). It is *not* standard AutoAttack and is never reported under that name.

Both run on the device given (ART's ``PyTorchClassifier`` with ``device_type="gpu"`` on CUDA).

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
                             nb_classes=nb_classes, clip_values=clip,
                             device_type="gpu" if str(device).startswith("cuda") else "cpu")


COMPOSITIONS: dict[str, str] = {"standard": "aa_standard_nofab", "reduced": "aa_reduced"}


@dataclass(frozen=True)
class AAConfig:
    """An AutoAttack composition and its budgets.

    Attributes:
        eps: L∞ budget.
        apgd_iters: Iterations of each APGD run (standard: 100).
        apgd_restarts: Random restarts of each APGD run (standard: 1).
        square_queries: Square attack iterations (standard: 5000).
        batch_size: Attack batch size.
        composition: ``"standard"`` (APGD-CE, APGD-T over 9 targets, Square; no FAB-T) or ``"reduced"``
            (ART AutoAttack with APGD-CE, APGD-DLR, Square at the budgets given).
        n_targets: Target classes of APGD-T (standard: 9).
    """

    eps: float
    apgd_iters: int = 100
    apgd_restarts: int = 1
    square_queries: int = 5000
    batch_size: int = 128
    composition: str = "reduced"
    n_targets: int = 9

    def __post_init__(self) -> None:
        if self.composition not in COMPOSITIONS:
            raise ValueError(f"composition must be one of {tuple(COMPOSITIONS)}, got {self.composition!r}")

    @classmethod
    def standard(cls, eps: float, batch_size: int = 128) -> AAConfig:
        """The standard composition at its fixed budgets (100 iterations, 9 targets, 5,000 queries)."""
        return cls(eps, 100, 1, 5000, batch_size, "standard", 9)

    @property
    def name(self) -> str:
        """``aa_standard_nofab`` or ``aa_reduced``."""
        return COMPOSITIONS[self.composition]

    @property
    def metric(self) -> str:
        """The result key of its robust accuracy: ``aa_acc`` (standard) or ``aa_reduced_acc``."""
        return "aa_acc" if self.composition == "standard" else "aa_reduced_acc"

    def describe(self) -> str:
        if self.composition == "standard":
            return (f"{self.name}: ART APGD-CE ({self.apgd_iters} it, {self.apgd_restarts} restart), APGD-T "
                    f"(ART targeted DLR, {self.apgd_iters} it, {self.n_targets} targets), Square "
                    f"({self.square_queries} q, p_init 0.8); no FAB-T (not in ART); Linf eps={self.eps:g}, "
                    f"eps_step=2eps; attacks run in sequence on the points still robust")
        return (f"{self.name}: ART AutoAttack[APGD-CE x{self.apgd_restarts} ({self.apgd_iters} it), APGD-DLR "
                f"x{self.apgd_restarts} ({self.apgd_iters} it), Square ({self.square_queries} q)], Linf "
                f"eps={self.eps:g}, eps_step=2eps (reduced budgets; not standard AutoAttack)")


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def standard_composition(clf: Any, xs: np.ndarray, ys: np.ndarray, cfg: AAConfig,
                         nb_classes: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Run APGD-CE, APGD-T (per target rank) and Square in sequence on the points still robust.

    Returns:
        ``(x_adv, best, labels)``: adversarial inputs, ART-style per-point codes (-2 misclassified clean,
        -1 robust, else the index into ``labels`` of the run that broke the point) and the run labels.
    """
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    common = dict(norm=np.inf, eps=cfg.eps, eps_step=2 * cfg.eps, max_iter=cfg.apgd_iters,
                  nb_random_init=cfg.apgd_restarts, batch_size=cfg.batch_size, verbose=False)
    logits = clf.predict(xs, batch_size=cfg.batch_size)
    order = np.argsort(-logits, axis=1)  # classes by clean logit, largest first
    n_t = min(cfg.n_targets, nb_classes - 1)
    plan: list[tuple[str, Any, int | None]] = [
        ("APGD-CE", AutoProjectedGradientDescent(clf, loss_type="cross_entropy", targeted=False, **common), None)]
    apgd_t = AutoProjectedGradientDescent(clf, loss_type="difference_logits_ratio", targeted=True, **common)
    plan += [(f"APGD-T(target rank {r + 2})", apgd_t, r + 1) for r in range(n_t)]
    plan.append(("Square", SquareAttack(clf, norm=np.inf, eps=cfg.eps, max_iter=cfg.square_queries, p_init=0.8,
                                        nb_restarts=1, batch_size=cfg.batch_size, verbose=False), None))
    x_adv = xs.copy()
    robust = logits.argmax(1) == ys
    best = np.where(robust, -1, -2)
    for i, (_label, atk, rank) in enumerate(plan):
        sel = np.flatnonzero(robust)
        if sel.size == 0:
            break
        target = ys[sel] if rank is None else order[sel, rank]
        out = atk.generate(xs[sel], y=_onehot(target, nb_classes)).astype(np.float32)
        linf = np.abs(out - xs[sel]).reshape(sel.size, -1).max(1)
        fooled = (clf.predict(out, batch_size=cfg.batch_size).argmax(1) != ys[sel]) & (linf <= cfg.eps + 1e-5)
        x_adv[sel[fooled]] = out[fooled]
        robust[sel[fooled]] = False
        best[sel[fooled]] = i
    return x_adv, best, [p[0] for p in plan]


def art_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AAConfig,
                   nb_classes: int = 10, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Run the AutoAttack composition ``cfg`` on ``(x, y)`` on ``device``.

    Returns:
        ``acc`` (robust accuracy in [0, 1]), ``robust`` (per-point bool list), ``best_attacks`` (per-point
        code: -2 misclassified clean, -1 robust, else the index of the attack run that won),
        ``attack_runs`` (the run labels those indices refer to), ``max_linf`` (largest perturbation
        kept), ``name`` (``aa_standard_nofab``/``aa_reduced``), ``metric`` and ``attacks`` (description).
    """
    require("art", "adv")
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack

    np.random.seed(seed)  # ART draws its random starts and Square's patches from NumPy's global RNG
    clf = art_classifier(model, tuple(x.shape[1:]), nb_classes, device=str(device))
    xs = x.detach().cpu().numpy().astype(np.float32)
    ys = y.detach().cpu().numpy()
    if cfg.composition == "standard":
        x_adv, best, labels = standard_composition(clf, xs, ys, cfg, nb_classes)
    else:
        common = dict(norm=np.inf, eps=cfg.eps, eps_step=2 * cfg.eps, max_iter=cfg.apgd_iters,
                      nb_random_init=cfg.apgd_restarts, batch_size=cfg.batch_size, verbose=False)
        attacks = [
            AutoProjectedGradientDescent(clf, loss_type="cross_entropy", **common),
            AutoProjectedGradientDescent(clf, loss_type="difference_logits_ratio", **common),
            SquareAttack(clf, norm=np.inf, eps=cfg.eps, max_iter=cfg.square_queries, nb_restarts=1,
                         batch_size=cfg.batch_size, verbose=False),
        ]
        labels = ["APGD-CE", "APGD-DLR", "Square"]
        with _multiprocess_importable():
            aa = AutoAttack(clf, norm=np.inf, eps=cfg.eps, eps_step=2 * cfg.eps, attacks=attacks,
                            batch_size=cfg.batch_size)
            x_adv = aa.generate(xs, y=ys)
        best = np.asarray(aa.best_attacks)
    pred = clf.predict(x_adv, batch_size=cfg.batch_size).argmax(1)
    clean_ok = clf.predict(xs, batch_size=cfg.batch_size).argmax(1) == ys
    robust = (pred == ys) & clean_ok
    return {"acc": float(robust.mean()) if len(ys) else 0.0, "robust": robust.tolist(),
            "best_attacks": [int(b) for b in best], "attack_runs": labels,
            "max_linf": float(np.abs(x_adv - xs).max()) if len(ys) else 0.0, "attacks": cfg.describe(),
            "name": cfg.name, "metric": cfg.metric}


def art_pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                     nb_classes: int = 10, batch_size: int = 128, seed: int = 0,
                     device: str | torch.device = "cpu") -> float:
    """Robust accuracy under ART's ``ProjectedGradientDescentPyTorch`` (1 uniform random start, true labels)."""
    require("art", "adv")
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    np.random.seed(seed)
    clf = art_classifier(model, tuple(x.shape[1:]), nb_classes, device=str(device))
    atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                          num_random_init=1, batch_size=batch_size, verbose=False)
    xs = x.detach().cpu().numpy().astype(np.float32)
    ys = y.detach().cpu().numpy()
    x_adv = atk.generate(xs, y=ys)
    pred = clf.predict(x_adv, batch_size=batch_size).argmax(1)
    clean_ok = clf.predict(xs, batch_size=batch_size).argmax(1) == ys
    return float(((pred == ys) & clean_ok).mean()) if len(ys) else 0.0
