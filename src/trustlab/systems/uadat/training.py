"""The shared training loop: every method gets the same model, data order, optimiser and epochs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from trustlab.systems.uadat.baselines import TrainingMethod
from trustlab.utils.logging import get_logger
from trustlab.utils.progress import progress

log = get_logger(__name__)


@dataclass
class FitResult:
    """Per-epoch training loss and wall time of one fit."""

    losses: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)

    @property
    def epoch_time_s(self) -> float:
        """Median epoch time (robust to a loaded, shared host)."""
        return float(statistics.median(self.epoch_times)) if self.epoch_times else float("nan")


def fit(model: nn.Module, method: TrainingMethod, x: torch.Tensor, y: torch.Tensor, epochs: int,
        batch_size: int, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
        generator: torch.Generator | None = None, device: torch.device | str = "cpu",
        desc: str = "") -> FitResult:
    """Train ``model`` with ``method.loss`` by SGD (momentum, weight decay, cosine learning rate).

    Args:
        model: The classifier (trained in place).
        method: The objective.
        x: Training images in ``[0, 1]``.
        y: Labels.
        epochs: Passes over the data (equal for every method).
        batch_size: Mini-batch size.
        lr: Peak learning rate (cosine-annealed to 0 over all steps).
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        generator: Shuffling and attack randomness.
        device: Where to train.
        desc: Progress-bar label.
    """
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {epochs}, {batch_size}")
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = x.shape[0]
    steps_per_epoch = max(1, n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    res = FitResult()
    for epoch in progress(range(epochs), desc=desc or method.name, total=epochs):
        model.train()
        perm = torch.randperm(n, generator=generator)
        t0 = time.perf_counter()
        total = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = method.loss(model, xb, yb, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{method.name}: non-finite loss at epoch {epoch}, batch {b}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        res.epoch_times.append(time.perf_counter() - t0)
        res.losses.append(total / steps_per_epoch)
        log.debug("%s epoch %d loss %.4f (%.1fs)", method.name, epoch, res.losses[-1], res.epoch_times[-1])
    model.eval()
    return res
