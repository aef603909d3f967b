"""Federated SAR clients: benign (plain or NAAT) and malicious (poisoning, optional model replacement)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.attacks.triggers import Trigger, model_replacement, poison_dataset
from trustlab.federated.simulation import get_parameters, set_parameters
from trustlab.federated.strategy import FitReply, NDArrays
from trustlab.systems.nadafd.method import decode_bank, naat_adversarial
from trustlab.utils.seed import derive_seed

__all__ = ["SARClient", "local_train"]


def local_train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
                momentum: float, generator: torch.Generator,
                adversarial: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                adv_fraction: float = 0.5, adv_beta: float = 1.0) -> float:
    """Local SGD (fresh momentum every call); optional extra loss on adversarial copies of part of each batch.

    Returns:
        The mean training loss of the last epoch.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    n = x.shape[0]
    last = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        tot, cnt = 0.0, 0
        for i in range(0, n, batch_size):
            b = perm[i : i + batch_size]
            xb, yb = x[b], y[b]
            loss = F.cross_entropy(model(xb), yb)
            if adversarial is not None and adv_fraction > 0:
                h = max(1, int(round(adv_fraction * len(b))))
                xa = adversarial(model, xb[:h], yb[:h])
                loss = loss + adv_beta * F.cross_entropy(model(xa), yb[:h])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
            cnt += len(b)
        last = tot / max(cnt, 1)
    return last


class SARClient:
    """One federated client holding a shard of SAR chips.

    Args:
        cid: Client id.
        x: Local chips ``(n, 1, H, W)``.
        y: Local labels.
        model_fn: Builds the (empty) global architecture.
        epochs: Local epochs.
        batch_size: Local batch size.
        lr: SGD learning rate.
        momentum: SGD momentum.
        seed: Run seed (the client's generator is derived from (seed, cid, round)).
        trigger: When given, the client is malicious and poisons ``poison_fraction`` of its data.
        target: Backdoor target class.
        poison_fraction: Fraction of local samples stamped and relabelled.
        dba_part: Local trigger part for DBA (``None``: full trigger).
        scale_gamma: Model-replacement factor of the malicious update.
        naat: NAAT hyper-parameters (``eps``, ``steps``, ``beta``, ``fraction``, ``looks``); used when a
            benign client's round config has ``naat=1``.
        lr_decay: Learning rate of round ``t`` is ``lr · lr_decay^(t−1)``.
    """

    def __init__(self, cid: int, x: torch.Tensor, y: torch.Tensor, model_fn: Callable[[], torch.nn.Module],
                 epochs: int, batch_size: int, lr: float, momentum: float, seed: int,
                 trigger: Trigger | None = None, target: int = 0, poison_fraction: float = 0.5,
                 dba_part: int | None = None, scale_gamma: float = 1.0,
                 naat: dict[str, Any] | None = None, lr_decay: float = 1.0) -> None:
        self.cid = cid
        self.x, self.y = x, y
        self.model_fn = model_fn
        self.epochs, self.batch_size, self.lr, self.momentum = epochs, batch_size, lr, momentum
        self.seed = seed
        self.trigger, self.target, self.poison_fraction = trigger, target, poison_fraction
        self.dba_part, self.scale_gamma = dba_part, scale_gamma
        self.lr_decay = lr_decay
        self.naat = naat or {"eps": 0.3, "steps": 1, "beta": 1.0, "fraction": 0.5, "looks": [1.0, 2.0, 4.0]}
        self.state: dict[str, Any] = {}

    @property
    def malicious(self) -> bool:
        """Whether this client poisons."""
        return self.trigger is not None

    def fit(self, parameters: NDArrays, config: dict[str, Any]) -> FitReply:
        """Local training from the global ``parameters`` (poisoned if malicious, NAAT if asked)."""
        rnd = int(config.get("server_round", 0))
        g = torch.Generator().manual_seed(derive_seed(self.seed, "client", self.cid, rnd))
        x, y = self.x, self.y
        if self.trigger is not None:
            x, y = poison_dataset(x, y, self.trigger, self.target, self.poison_fraction, g, self.dba_part)
        model = self.model_fn()
        set_parameters(model, parameters)
        adv = None
        if self.trigger is None and int(config.get("naat", 0)):
            bank = decode_bank(config.get("naat_bank"))
            p = self.naat

            def adv(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
                return naat_adversarial(m, xb, yb, bank, p["eps"], p["steps"], p["looks"], g, p.get("offset", 0.0))

        lr = self.lr * self.lr_decay ** max(rnd - 1, 0)
        loss = local_train(model, x, y, self.epochs, self.batch_size, lr, self.momentum, g, adv,
                           self.naat["fraction"], self.naat["beta"])
        params = get_parameters(model)
        if self.trigger is not None and self.scale_gamma != 1.0:
            params = model_replacement(params, parameters, self.scale_gamma)
        self.state["rounds"] = self.state.get("rounds", 0) + 1
        return FitReply(self.cid, params, int(x.shape[0]), {"loss": loss})


def make_clients(x: torch.Tensor, y: torch.Tensor, parts: Sequence[np.ndarray], malicious: Sequence[int],
                 trigger: Trigger | Sequence[Trigger] | None, dba: bool, model_fn: Callable[[], torch.nn.Module],
                 seed: int, **kw: Any) -> list[SARClient]:
    """One :class:`SARClient` per partition; ids in ``malicious`` poison.

    ``trigger``: one trigger shared by every attacker, or one per attacker (the ``k``-th entry for the
    ``k``-th id of ``sorted(malicious)``, see ``data.attacker_triggers``); ``None``: nobody poisons.
    With ``dba`` attacker ``k`` stamps local part ``k`` of its trigger.
    """
    mal = sorted(malicious) if trigger is not None else []
    per = list(trigger) if isinstance(trigger, Sequence) else [trigger] * len(mal)
    if len(per) != len(mal):
        raise ValueError(f"{len(per)} triggers for {len(mal)} attackers")
    out = []
    for cid, idx in enumerate(parts):
        t = torch.as_tensor(idx, dtype=torch.long)
        k = mal.index(cid) if cid in mal else None
        out.append(SARClient(cid, x[t], y[t], model_fn, seed=seed, trigger=per[k] if k is not None else None,
                             dba_part=(k if (dba and k is not None) else None), **kw))
    return out
