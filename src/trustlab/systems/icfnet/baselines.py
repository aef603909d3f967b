"""Baselines of the ICFNet comparison, all with the same sklearn-style API
(``fit(X, y)``, ``predict`` (risk), ``predict_survival_function``, ``score`` (Harrell's C)):

* :class:`CoxPH` -- ridge-penalised Cox proportional hazards (scikit-survival) on all features.
* :class:`RSF` -- random survival forest (Ishwaran et al. 2008; scikit-survival).
* :class:`DeepSurv` -- MLP trained with the Cox partial likelihood (Katzman et al., BMC MRM 2018).
* :class:`EarlyFusion` -- MLP on the concatenated features (mean-pooled patch bags) with the
  discrete-time NLL (pycox LogisticHazard-style).
* :class:`LateFusion` -- one encoder + hazard head per modality, hazard logits summed (decision-level
  fusion, as PORPOISE's late-fusion baseline); cannot represent cross-modal interactions.
* :func:`single_modality` -- ICFNet's own encoder on one modality (``only_<modality>``).

All tabular baselines see patch bags as their mean patch feature.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from trustlab.data.survival import Modality, SurvivalDataset
from trustlab.errors import UserError, require
from trustlab.metrics.survival import harrell_c_index
from trustlab.systems.icfnet.method import ICFNet, ICFNetModule, NeuralSurvivalEstimator, as_time_event

__all__ = ["RSF", "CoxPH", "DeepSurv", "EarlyFusion", "LateFusion", "breslow_baseline", "single_modality"]


def _flat(X: SurvivalDataset) -> SurvivalDataset:
    x, names = X.flat_features()
    mod = Modality("tabular", x, np.ones(len(X), bool), [list(range(x.shape[1]))], ["all"], names=names)
    return SurvivalDataset(X.name, X.ids, X.time, X.event, {"flat": mod}, X.card, X.true_risk)


def breslow_baseline(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow estimate of the baseline cumulative hazard at the unique event times.

    ``H0(t) = sum_{t_i <= t, event} 1 / sum_{j: t_j >= t_i} exp(risk_j)``.
    """
    ev_times = np.unique(time[event])
    er = np.exp(risk - risk.max())
    scale = np.exp(risk.max())
    inc = np.array([(event & (time == t)).sum() / (er[time >= t].sum() * scale) for t in ev_times])
    return ev_times, np.cumsum(inc)


class _SkSurvModel(ABC):
    """Wraps a scikit-survival estimator on the flattened, standardised features."""

    @abstractmethod
    def _make(self) -> Any:
        """The unfitted scikit-survival estimator."""

    def fit(self, X: SurvivalDataset, y: Any = None) -> _SkSurvModel:
        """Fit on all features of ``X``."""
        util = require("sksurv.util", "survival")
        time, event = as_time_event(y, X)
        x, _ = X.flat_features()
        self.mu_, sd = x.mean(0), x.std(0)
        self.sd_ = np.where(sd > 1e-8, sd, 1.0)
        self.model_ = self._make().fit((x - self.mu_) / self.sd_, util.Surv.from_arrays(event, time))
        return self

    def _x(self, X: SurvivalDataset) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise UserError(f"{type(self).__name__} is not fitted", "call fit(X, y) first")
        return (X.flat_features()[0] - self.mu_) / self.sd_

    def predict(self, X: SurvivalDataset) -> np.ndarray:
        """Risk scores (higher = earlier event)."""
        return np.asarray(self.model_.predict(self._x(X)), float)

    def predict_survival_function(self, X: SurvivalDataset, times: Sequence[float]) -> np.ndarray:
        """``S(t | x)`` at ``times``, shape (n, len(times))."""
        fns = self.model_.predict_survival_function(self._x(X))
        lo, hi = fns[0].domain
        ts = np.clip(np.asarray(times, float), lo, hi)
        return np.stack([fn(ts) for fn in fns])

    def score(self, X: SurvivalDataset, y: Any = None) -> float:
        """Harrell's C-index."""
        time, event = as_time_event(y, X)
        return harrell_c_index(time, event, self.predict(X))


class CoxPH(_SkSurvModel):
    """Ridge-penalised CoxPH (``sksurv.linear_model.CoxPHSurvivalAnalysis``).

    Args:
        alpha: L2 penalty (needed with 76 genes and 51 events).
    """

    def __init__(self, alpha: float = 10.0) -> None:
        if alpha < 0:
            raise ValueError("alpha must be >= 0")
        self.alpha = alpha

    def _make(self) -> Any:
        return require("sksurv.linear_model", "survival").CoxPHSurvivalAnalysis(alpha=self.alpha, ties="breslow")


class RSF(_SkSurvModel):
    """Random survival forest (``sksurv.ensemble.RandomSurvivalForest``).

    Args:
        n_estimators: Trees.
        min_samples_leaf: Minimum patients per leaf.
        max_features: Features per split (sklearn semantics).
        random_state: Seed.
    """

    def __init__(self, n_estimators: int = 50, min_samples_leaf: int = 10, max_features: str | float = "sqrt",
                 random_state: int = 0) -> None:
        if n_estimators < 1 or min_samples_leaf < 1:
            raise ValueError("n_estimators and min_samples_leaf must be >= 1")
        self.n_estimators, self.min_samples_leaf = n_estimators, min_samples_leaf
        self.max_features, self.random_state = max_features, random_state

    def _make(self) -> Any:
        return require("sksurv.ensemble", "survival").RandomSurvivalForest(
            n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf, max_features=self.max_features,
            random_state=self.random_state, n_jobs=1)


class _MLP(nn.Module):
    def __init__(self, d_in: int, hidden: Sequence[int], d_out: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, d_out))
        self.net = nn.Sequential(*layers)

    def output_layers(self) -> list[tuple[nn.Linear, float]]:
        return [(self.net[-1], 1.0)]

    def forward(self, batch: dict[str, dict[str, Tensor]]) -> Tensor:
        return self.net(batch["flat"]["flat"])


class EarlyFusion(NeuralSurvivalEstimator):
    """MLP on the concatenation of all modalities (bags mean-pooled), discrete-time hazard head.

    Args:
        hidden: Hidden layer sizes.
        dropout: Dropout.
        **kwargs: :class:`NeuralSurvivalEstimator` arguments (default loss: plain NLL).
    """

    def __init__(self, hidden: Sequence[int] = (32, 32), dropout: float = 0.1, **kwargs: Any) -> None:
        kwargs.setdefault("loss", "nll")
        super().__init__(**kwargs)
        if not hidden or min(hidden) < 1 or not 0 <= dropout < 1:
            raise ValueError("hidden must be positive sizes and dropout in [0, 1)")
        self.hidden, self.dropout = tuple(hidden), dropout

    def _select(self, X: SurvivalDataset) -> SurvivalDataset:
        return _flat(X)

    def _build(self, data: SurvivalDataset) -> nn.Module:
        k = 1 if self.loss == "cox" else self.n_bins
        return _MLP(data.modalities["flat"].dim, self.hidden, k, self.dropout)


class DeepSurv(EarlyFusion):
    """DeepSurv: the same MLP with a single log-risk output and the Cox partial likelihood.

    Survival functions use a Breslow baseline hazard fitted on the training data.
    """

    def __init__(self, hidden: Sequence[int] = (32, 32), dropout: float = 0.1, **kwargs: Any) -> None:
        kwargs["loss"] = "cox"
        kwargs.setdefault("balanced_sampler", False)
        super().__init__(hidden, dropout, **kwargs)

    def fit(self, X: SurvivalDataset, y: Any = None) -> DeepSurv:
        """Train, then fit the Breslow baseline."""
        super().fit(X, y)
        time, event = as_time_event(y, X)
        self.base_times_, self.base_cumhaz_ = breslow_baseline(time, event, self.predict(X))
        return self

    def predict_survival_function(self, X: SurvivalDataset, times: Sequence[float] | None = None) -> np.ndarray:
        """``S(t | x) = exp(-H0(t) exp(risk))`` at ``times`` (default: the training event times)."""
        risk = self.predict(X)
        ts = self.base_times_ if times is None else np.asarray(times, float)
        idx = np.searchsorted(self.base_times_, ts, side="right") - 1
        h0 = np.where(idx >= 0, self.base_cumhaz_[np.clip(idx, 0, None)], 0.0)
        return np.exp(-np.outer(np.exp(risk), h0))


class _LateFusionNet(nn.Module):
    def __init__(self, nets: dict[str, ICFNetModule]) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(nets)

    def output_layers(self) -> list[tuple[nn.Linear, float]]:
        """Every modality's hazard layers; the summed main logits share the marginal logit equally."""
        out = []
        for net in self.nets.values():
            head, *dense = net.output_layers()
            out += [(head[0], 1.0 / len(self.nets))] + dense
        return out

    def forward(self, batch: dict[str, dict[str, Tensor]]) -> dict[str, Any]:
        logits = 0.0
        for m, net in self.nets.items():
            lg = net({m: batch[m]})["logits"]
            logits = logits + lg * batch[m]["present"].unsqueeze(-1).float()
        return {"logits": logits}


class LateFusion(ICFNet):
    """Decision-level fusion: a unimodal ICFNet encoder + head per modality, hazard logits summed."""

    def __init__(self, modalities: Sequence[str] | None = None, **kwargs: Any) -> None:
        kwargs.update(fusion="concat", dense_weight=0.0, orth_weight=0.0)
        super().__init__(modalities, **kwargs)

    def _build(self, data: SurvivalDataset) -> nn.Module:
        k = 1 if self.loss == "cox" else self.n_bins
        nets = {}
        for m, mod in data.modalities.items():
            tab = {m: [len(g) for g in mod.groups]} if mod.kind == "tabular" else {}
            nets[m] = ICFNetModule(tab, mod.dim if mod.kind == "bag" else None, m, k, self.d, self.heads, self.layers,
                                   0, self.dropout, False, "concat", "none", token_dropout=self.token_dropout)
        return _LateFusionNet(nets)


def single_modality(modality: str, **kwargs: Any) -> ICFNet:
    """ICFNet's encoder for one modality + pooling + MLP + hazard head (``only_<modality>``)."""
    kwargs.update(fusion="concat", dense_weight=0.0, orth_weight=0.0)
    return ICFNet(modalities=[modality], **kwargs)
