"""ICFNet (Zhang et al., arXiv:2501.02778, 2025): integrated cross-modal fusion for survival.

Architecture (reconstructed from the abstract and the public code's structure, see README):

* encoders: patch features -> ``Linear+ReLU+Dropout`` tokens P (attention-MIL bag); every tabular
  modality (genomics groups, clinical groups such as demographics / treatment) -> one SNN token
  per column group (G, T).
* OT co-attention: unbalanced-Sinkhorn plan between the patches and each tabular modality's tokens
  (cost detached, as in MOTCat/ICFNet) gives modality-guided pathology tokens ``P_m = M pi^T P``.
* four (or more) token streams: a transformer encoder + gated attention pooling + rho per stream
  (G, P_g, P_t, T) -> vectors f'.
* residual orthogonal decomposition (ROD): ``r = rho(W_p mean(P))``, ``o = r - sum_m f'_{p,m}``,
  ``f'_p = rho(W_f (r + o))`` with the penalty ``sum_m |cos(f'_{p,m}, o)|``.
* unification fusion module (UFM): a transformer over the stream vectors, flattened, MLP -> h.
* discrete-time hazard head (K bins), plus "dense" per-stream heads (weight 0.1).
* loss: balanced NLL (default), plain NLL, or Cox partial likelihood.

Missing modalities: a patient without a modality gets a learned "missing" vector in place of each
stream that needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import Tensor, nn

from trustlab.data.survival import SurvivalDataset, frame_layout, frame_to_dataset
from trustlab.errors import UserError
from trustlab.metrics.survival import harrell_c_index
from trustlab.systems.icfnet.losses import (
    balanced_nll_loss,
    cox_ph_loss,
    discretize,
    fit_time_bins,
    hazards_to_survival,
    nll_loss,
    orthogonality_loss,
    risk_from_logits,
    sinkhorn_unbalanced,
)
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["ICFNet", "ICFNetModule", "NeuralSurvivalEstimator", "as_time_event"]

MODEL_FORMAT = "trustlab.icfnet/1"

Batch = dict[str, dict[str, Tensor]]


# ---------------------------------------------------------------------------------------------
# building blocks


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al. 2018, ``Attn_Net_Gated``): softmax(w^T (tanh(Va x) * sigm(Vb x)))."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.a = nn.Linear(d, d)
        self.b = nn.Linear(d, d)
        self.c = nn.Linear(d, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, N, d) tokens (mask (B, N) True = real) -> (B, d)."""
        s = self.c(torch.tanh(self.a(x)) * torch.sigmoid(self.b(x))).squeeze(-1)
        if mask is not None:
            s = s.masked_fill(~mask, -1e9)
        w = torch.softmax(s, dim=1)
        return (w.unsqueeze(-1) * x).sum(1)


class Stream(nn.Module):
    """Transformer encoder over tokens -> gated attention pooling -> rho (Linear+ReLU+Dropout)."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.enc = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True),
                num_layers=layers, enable_nested_tensor=False,
            )
            if layers > 0
            else None
        )
        self.pool = GatedAttentionPool(d)
        self.rho = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, N, d) -> (B, d)."""
        if self.enc is not None:
            x = self.enc(x, src_key_padding_mask=None if mask is None else ~mask)
        return self.rho(self.pool(x, mask))


def snn_block(d_in: int, d: int, dropout: float) -> nn.Sequential:
    """Self-normalising 2-layer MLP (the SNN genomic encoder of MCAT/ICFNet)."""
    return nn.Sequential(nn.Linear(d_in, d), nn.ELU(), nn.AlphaDropout(dropout),
                         nn.Linear(d, d), nn.ELU(), nn.AlphaDropout(dropout))


class GroupedSNN(nn.Module):
    """One SNN per column group, computed as a single batched op (groups zero-padded to the largest).

    Args:
        sizes: Column count of each group.
        d: Output size.
        dropout: Alpha-dropout rate.
    """

    def __init__(self, sizes: list[int], d: int, dropout: float) -> None:
        super().__init__()
        g, dmax = len(sizes), max(sizes)
        self.sizes = list(sizes)
        self.w1 = nn.Parameter(torch.empty(g, dmax, d))
        self.b1 = nn.Parameter(torch.zeros(g, d))
        self.w2 = nn.Parameter(torch.empty(g, d, d))
        self.b2 = nn.Parameter(torch.zeros(g, d))
        for j, n_in in enumerate(sizes):  # per-group fan-in init (like nn.Linear on that group)
            nn.init.uniform_(self.w1.data[j, :n_in], -1 / n_in ** 0.5, 1 / n_in ** 0.5)
            self.w1.data[j, n_in:] = 0.0
            nn.init.uniform_(self.w2.data[j], -1 / d ** 0.5, 1 / d ** 0.5)
        self.act = nn.ELU()
        self.drop = nn.AlphaDropout(dropout)
        self.register_buffer("pad_mask", torch.stack(
            [torch.arange(dmax) < n for n in sizes]).float().unsqueeze(-1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, G, dmax) zero-padded group inputs -> (B, G, d) tokens."""
        h = self.drop(self.act(torch.einsum("bgi,gid->bgd", x, self.w1 * self.pad_mask) + self.b1))
        return self.drop(self.act(torch.einsum("bgi,gid->bgd", h, self.w2) + self.b2))


def ot_coattention(queries: Tensor, patches: Tensor, mask: Tensor, reg: float, reg_m: float, n_iter: int,
                   tol: float = 0.0) -> Tensor:
    """Pathology tokens guided by ``queries`` via an unbalanced OT plan (cost detached).

    Args:
        queries: (B, M, d) tokens of the guiding modality.
        patches: (B, N, d) patch tokens.
        mask: (B, N) real patches.
        reg: Entropic regularisation.
        reg_m: Marginal relaxation.
        n_iter: Sinkhorn iterations (the maximum when ``tol > 0``).
        tol: Sinkhorn stopping threshold (POT's ``stopThr``; 0 = fixed ``n_iter``).

    Returns:
        (B, M, d) = ``M * pi^T P`` (the plan's columns carry mass ~1/M; we rescale by M, see README).
    """
    with torch.no_grad():
        p = patches - patches.min(dim=-1, keepdim=True).values
        q = queries - queries.min(dim=-1, keepdim=True).values
        cost = torch.cdist(p, q) ** 2
        cost = cost / cost.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
        n_real = mask.sum(1, keepdim=True).clamp(min=1).float()
        a = mask.float() / n_real
        b = torch.full(q.shape[:2], 1.0 / q.shape[1], device=q.device)
        plan = sinkhorn_unbalanced(cost, a, b, reg=reg, reg_m=reg_m, n_iter=n_iter, tol=tol)
    return queries.shape[1] * torch.einsum("bnm,bnd->bmd", plan, patches)


# ---------------------------------------------------------------------------------------------
# the network


class ICFNetModule(nn.Module):
    """The ICFNet network for a given set of modalities.

    Args:
        tabular: Tabular modality name -> list of group sizes (one token per group).
        bag_dim: Patch feature dim of the (single) bag modality, or None.
        bag_name: Name of the bag modality.
        n_bins: K discrete time bins.
        d: Hidden size.
        heads: Attention heads.
        layers: Transformer layers per stream.
        fusion_layers: Transformer layers of the unification module.
        dropout: Dropout.
        use_rod: Residual orthogonal decomposition (else ``f'_p = rho(W_p mean(P))``).
        fusion: ``"ufm"`` (transformer over stream vectors) or ``"concat"`` (MLP on the concatenation).
        coattention: ``"ot"`` (OT-guided pathology tokens) or ``"none"`` (no guided streams).
        ot_reg: Sinkhorn entropic regularisation.
        ot_reg_m: Sinkhorn marginal relaxation.
        ot_iters: Sinkhorn iterations (the maximum when ``ot_tol > 0``).
        token_dropout: Training-time probability of zeroing a whole tabular token (per patient).
        ot_tol: Sinkhorn stopping threshold (POT's ``stopThr``; 0 = exactly ``ot_iters`` iterations).
    """

    def __init__(
        self, tabular: dict[str, list[int]], bag_dim: int | None, bag_name: str = "pathology", n_bins: int = 4,
        d: int = 32, heads: int = 2, layers: int = 1, fusion_layers: int = 1, dropout: float = 0.25,
        use_rod: bool = True, fusion: str = "ufm", coattention: str = "ot",
        ot_reg: float = 0.1, ot_reg_m: float = 0.5, ot_iters: int = 1000, token_dropout: float = 0.0,
        ot_tol: float = 1e-6,
    ) -> None:
        super().__init__()
        if not tabular and bag_dim is None:
            raise ValueError("ICFNetModule needs at least one modality")
        self.tab_names = list(tabular)
        self.bag_name = bag_name if bag_dim is not None else None
        self.use_rod, self.fusion, self.coattention = use_rod, fusion, coattention
        self.ot = (ot_reg, ot_reg_m, ot_iters, ot_tol)
        self.token_dropout = token_dropout
        self.tab_enc = nn.ModuleDict({m: GroupedSNN(sizes, d, dropout) for m, sizes in tabular.items()})
        self.streams = nn.ModuleDict({m: Stream(d, heads, layers, dropout) for m in self.tab_names})
        self.stream_names: list[str] = list(self.tab_names)
        if bag_dim is not None:
            self.patch_enc = nn.Sequential(nn.Linear(bag_dim, d), nn.ReLU(), nn.Dropout(dropout))
            if self.tab_names and coattention == "ot":
                for m in self.tab_names:
                    self.streams[f"p_{m}"] = Stream(d, heads, layers, dropout)
                    self.stream_names.append(f"p_{m}")
            self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout))
            self.fusor = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout))
            if not self.tab_names:  # pathology only: attention-MIL over patch tokens beside the mean-patch vector
                self.streams["p_mil"] = Stream(d, heads, layers, dropout)
                self.stream_names.append("p_mil")
            self.stream_names.append("p")
        s = len(self.stream_names)
        self.missing = nn.ParameterDict({k: nn.Parameter(torch.zeros(d)) for k in self.stream_names})
        if fusion == "ufm":
            self.uni = (nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True),
                num_layers=fusion_layers, enable_nested_tensor=False) if fusion_layers > 0 else nn.Identity())
        elif fusion != "concat":
            raise ValueError(f"unknown fusion {fusion!r}")
        self.mlp = nn.Sequential(nn.Linear(s * d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.head = nn.Linear(d, n_bins)
        self.dense = nn.ModuleDict({k: nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_bins))
                                    for k in self.stream_names})
        self.groups: dict[str, list[list[int]]] = {}

    def output_layers(self) -> list[tuple[nn.Linear, float]]:
        """The hazard-logit layers (main head and dense heads) with their share of the logit."""
        return [(self.head, 1.0)] + [(seq[-1], 1.0) for seq in self.dense.values()]

    def _fill(self, name: str, v: Tensor, present: Tensor) -> Tensor:
        return torch.where(present.unsqueeze(-1), v, self.missing[name].expand_as(v))

    def forward(self, batch: Batch) -> dict[str, Any]:
        """Returns ``logits`` (B, K), per-stream ``dense`` logits, ``orth`` penalty and stream vectors."""
        vec: dict[str, Tensor] = {}
        tokens: dict[str, Tensor] = {}
        present: dict[str, Tensor] = {}
        for m in self.tab_names:
            xm = batch[m]
            tokens[m] = self.tab_enc[m](xm["groups"])
            if self.training and self.token_dropout > 0 and tokens[m].shape[1] > 1:
                keep = torch.rand(tokens[m].shape[:2], device=tokens[m].device) >= self.token_dropout
                tokens[m] = tokens[m] * keep.unsqueeze(-1) / (1.0 - self.token_dropout)
            present[m] = xm["present"]
            vec[m] = self._fill(m, self.streams[m](tokens[m]), present[m])
        orth = tokens[self.tab_names[0]].sum() * 0.0 if self.tab_names else torch.zeros(())
        if self.bag_name is not None:
            xb = batch[self.bag_name]
            mask, pres = xb["mask"], xb["present"]
            patches = self.patch_enc(xb["x"])
            w = mask.float().unsqueeze(-1)
            p_mean = (patches * w).sum(1) / w.sum(1).clamp(min=1.0)
            guided = []
            for m in self.tab_names:
                if self.coattention != "ot":
                    break
                pg = ot_coattention(tokens[m], patches, mask, *self.ot)
                both = pres & present[m]
                v = self._fill(f"p_{m}", self.streams[f"p_{m}"](pg), both)
                vec[f"p_{m}"] = v
                guided.append(v)
            r = self.projector(p_mean)
            if self.use_rod and guided:
                o = r - sum(guided)
                f_p = self.fusor(r + o)
                orth = orthogonality_loss(o[pres], [g[pres] for g in guided]) if pres.any() else orth
            else:
                f_p = self.fusor(r)
            if not self.tab_names:
                safe_mask = mask | ~mask.any(1, keepdim=True)
                vec["p_mil"] = self._fill("p_mil", self.streams["p_mil"](patches, safe_mask), pres)
            vec["p"] = self._fill("p", f_p, pres)
        stack = torch.stack([vec[k] for k in self.stream_names], dim=1)
        if self.fusion == "ufm":
            stack = self.uni(stack)
        h = self.mlp(stack.flatten(1))
        return {"logits": self.head(h), "dense": {k: self.dense[k](vec[k]) for k in self.stream_names},
                "orth": orth, "vectors": vec}


# ---------------------------------------------------------------------------------------------
# data -> tensors


def as_time_event(y: Any, X: SurvivalDataset | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(time, event) from a sksurv structured array, a (time, event) pair, or the dataset itself."""
    if y is None:
        if X is None:
            raise UserError("no survival labels given", "pass y=(time, event) or a SurvivalDataset")
        return X.time, X.event
    if isinstance(y, np.ndarray) and y.dtype.names:
        names = y.dtype.names
        if len(names) != 2:
            raise UserError(f"y has fields {names}", "use sksurv.util.Surv.from_arrays(event, time)")
        ev = next((f for f in names if y.dtype[f] == np.bool_), names[0])  # sksurv: (event: bool, time: float)
        t = names[1] if ev == names[0] else names[0]
        return np.ascontiguousarray(y[t], dtype=float), np.ascontiguousarray(y[ev], dtype=bool)
    if isinstance(y, (tuple, list)) and len(y) == 2:
        return np.ascontiguousarray(y[0], dtype=float), np.ascontiguousarray(y[1], dtype=bool)
    raise UserError("y must be a sksurv structured array or (time, event)", "use sksurv.util.Surv.from_arrays")


class Standardizer:
    """Per-modality mean/std fitted on the training patients who have the modality."""

    def __init__(self) -> None:
        self.stats_: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def fit(self, data: SurvivalDataset) -> Standardizer:
        for m, mod in data.modalities.items():
            if mod.kind == "tabular":
                x = mod.x[mod.present] if mod.present.any() else mod.x
            else:
                x = mod.x[mod.mask] if mod.mask.any() else mod.x.reshape(-1, mod.dim)
            if np.isnan(x).any():  # partly observed columns (DataFrame input): statistics of the observed values
                with np.errstate(all="ignore"):
                    mu, sd = np.nan_to_num(np.nanmean(x, 0)), np.nan_to_num(np.nanstd(x, 0))
            else:
                mu, sd = x.mean(0), x.std(0)
            self.stats_[m] = (mu, np.where(sd > 1e-8, sd, 1.0))
        return self

    def to_batch(self, data: SurvivalDataset, device: torch.device | str = "cpu") -> Batch:
        out: Batch = {}
        for m, mod in data.modalities.items():
            if m not in self.stats_:
                continue
            mu, sd = self.stats_[m]
            x = (mod.x - mu) / sd
            if mod.kind == "tabular":
                x = np.where(mod.present[:, None], np.nan_to_num(x), 0.0)  # unobserved value -> training mean
                dmax = max(len(g) for g in mod.groups)
                grouped = np.zeros((x.shape[0], len(mod.groups), dmax), dtype=np.float32)
                for j, g in enumerate(mod.groups):
                    grouped[:, j, : len(g)] = x[:, g]
                d = {"groups": torch.as_tensor(grouped, device=device),
                     "flat": torch.as_tensor(x, dtype=torch.float32, device=device)}
            else:
                x = np.where(mod.mask[..., None], x, 0.0)
                d = {"x": torch.as_tensor(x, dtype=torch.float32, device=device),
                     "mask": torch.as_tensor(mod.mask, device=device)}
            d["present"] = torch.as_tensor(np.array(mod.present), device=device)  # a copy: pandas may hand a read-only view
            out[m] = d
        return out


def _inner_split(event: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (by event) random split of the training patients into fit / validation indices."""
    rng = np.random.default_rng(seed + 7919)
    fit, val = [], []
    for e in (False, True):
        ids = rng.permutation(np.flatnonzero(event == e))
        k = int(round(fraction * ids.size))
        val.append(ids[:k])
        fit.append(ids[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def _index_batch(batch: Batch, idx: Tensor) -> Batch:
    return {m: {k: v[idx] for k, v in d.items()} for m, d in batch.items()}


# ---------------------------------------------------------------------------------------------
# estimators


class NeuralSurvivalEstimator(BaseEstimator, ABC):
    """scikit-survival-style base of the neural survival models (discrete-time hazard or Cox head).

    Subclasses implement :meth:`_build` (the network) and may override :meth:`_loss`.

    ``X`` is a :class:`~trustlab.data.survival.SurvivalDataset` or a pandas DataFrame in the layout of
    :func:`~trustlab.data.survival.frame_to_dataset` (``"<modality>/<column>"`` columns, bag columns of
    per-patient patch arrays); ``y`` is a structured (event, time) array (``sksurv.util.Surv``) and may
    be omitted for a dataset (its own labels are used).

    Args:
        n_bins: Discrete time bins K (quartiles of training event times by default).
        loss: ``"bnll"`` (balanced NLL), ``"nll"`` or ``"cox"``.
        alpha: NLL weight on uncensored patients.
        beta: Balanced/plain mix of the balanced NLL.
        epochs: Training epochs (the model after the last epoch is evaluated: no test-fold selection).
        batch_size: Patients per step (the code's gradient accumulation of 32).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        balanced_sampler: Sample patients inversely to the size of their (bin, censored) stratum.
        random_state: Seed of initialisation, dropout and sampling.
        device: Torch device.
        val_fraction: Share of the training patients held out (stratified by event) for early
            stopping on the validation C-index; 0 = train for ``epochs`` and keep the last model.
        patience: Epochs without a validation improvement before stopping.
        refit: After early stopping, retrain on *all* training patients for the selected number of
            epochs (else keep the best-epoch weights trained on the fit split).
        val_metric: Early-stopping criterion: ``"loss"`` (the model's own survival loss on the
            validation patients, lower is better) or ``"cindex"`` (Harrell's C, higher is better).
        swa: Stochastic weight averaging (Izmailov et al. 2018): the returned weights are the mean of
            the weights after each of the last ``ceil(swa * epochs)`` epochs (0 = last epoch only).
            Applies to fixed-epoch training (and to the refit after early stopping).
        head_init: Initialise the bias of every hazard-logit layer to the logit of the training
            data's marginal discrete hazard ``d_k / n_k`` (weighted like the sampler), so training
            starts calibrated instead of at ``h_k = 0.5``; discrete-time models only.
    """

    def __init__(
        self, n_bins: int = 4, loss: str = "bnll", alpha: float = 0.0, beta: float = 1.0, epochs: int = 30,
        batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-5, balanced_sampler: bool = True,
        random_state: int = 0, device: str = "cpu", val_fraction: float = 0.0, patience: int = 10,
        refit: bool = True, val_metric: str = "loss", swa: float = 0.0, head_init: bool = False,
    ) -> None:
        self.val_fraction, self.patience, self.refit, self.val_metric = val_fraction, patience, refit, val_metric
        self.swa, self.head_init = swa, head_init
        self.n_bins, self.loss, self.alpha, self.beta = n_bins, loss, alpha, beta
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.balanced_sampler, self.random_state, self.device = balanced_sampler, random_state, device
        self._check_params()

    def _check_params(self) -> None:
        """Range checks (run at construction and again at fit, after any ``set_params``)."""
        n_bins, loss, alpha, beta = self.n_bins, self.loss, self.alpha, self.beta
        epochs, batch_size, lr, weight_decay = self.epochs, self.batch_size, self.lr, self.weight_decay
        val_fraction, patience, val_metric, swa = self.val_fraction, self.patience, self.val_metric, self.swa
        if n_bins < 2:
            raise ValueError("n_bins must be >= 2")
        if loss not in ("bnll", "nll", "cox"):
            raise ValueError(f"loss must be 'bnll', 'nll' or 'cox', got {loss!r}")
        if not 0.0 <= alpha <= 1.0 or not 0.0 <= beta <= 1.0:
            raise ValueError("alpha and beta must be in [0, 1]")
        if epochs < 1 or batch_size < 2 or lr <= 0 or weight_decay < 0:
            raise ValueError("need epochs >= 1, batch_size >= 2, lr > 0, weight_decay >= 0")
        if not 0.0 <= val_fraction < 0.5 or patience < 1:
            raise ValueError("val_fraction must be in [0, 0.5) and patience >= 1")
        if val_metric not in ("cindex", "loss"):
            raise ValueError(f"val_metric must be 'cindex' or 'loss', got {val_metric!r}")
        if not 0.0 <= swa <= 1.0:
            raise ValueError(f"swa must be in [0, 1], got {swa}")

    # -- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def _build(self, data: SurvivalDataset) -> nn.Module:
        """Build the network for ``data`` (subclasses: ICFNet, EarlyFusion, ...)."""

    def _forward(self, batch: Batch) -> dict[str, Any]:
        out = self.net_(batch)
        return out if isinstance(out, dict) else {"logits": out}

    def _loss(self, out: dict[str, Any], y: Tensor, c: Tensor, t: Tensor) -> Tensor:
        return self._surv_loss(out["logits"], y, c, t)

    def _surv_loss(self, logits: Tensor, y: Tensor, c: Tensor, t: Tensor) -> Tensor:
        if self.loss == "cox":
            return cox_ph_loss(logits.squeeze(-1), t, 1 - c)
        if self.loss == "nll":
            return nll_loss(logits, y, c, self.alpha)
        return balanced_nll_loss(logits, y, c, self.alpha, self.beta)

    # -- sklearn API ----------------------------------------------------------------------------
    def _select(self, X: SurvivalDataset) -> SurvivalDataset:
        return X

    def _dataset(self, X: Any, y: Any = None, fit: bool = False) -> SurvivalDataset:
        """``X`` as a :class:`SurvivalDataset` (a DataFrame goes through the layout fitted at ``fit``)."""
        if isinstance(X, SurvivalDataset):
            if fit:
                self.layout_ = None
            elif getattr(self, "layout_", None) is not None:
                raise UserError(f"{type(self).__name__} was fitted on a DataFrame, got a SurvivalDataset",
                                "pass a DataFrame with the columns used at fit")
            if y is None:
                return X
            time, event = as_time_event(y)
            if time.shape != (len(X),):
                raise UserError(f"y has {time.size} labels for {len(X)} patients", "pass one label per patient")
            return SurvivalDataset(X.name, X.ids, time, event, X.modalities, X.card, X.true_risk)
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            raise UserError(f"X must be a pandas DataFrame or a SurvivalDataset, got {type(X).__name__}",
                            "see trustlab.data.survival.frame_to_dataset for the DataFrame layout")
        if fit:
            if y is None:
                raise UserError("fit(X, y) on a DataFrame needs y", "pass y = sksurv.util.Surv.from_arrays(event, time)")
            self.layout_ = frame_layout(X, getattr(self, "gene_groups", 6))
        elif getattr(self, "layout_", None) is None:
            raise UserError(f"{type(self).__name__} was fitted on a SurvivalDataset, got a DataFrame",
                            "pass a SurvivalDataset with the modalities used at fit")
        time, event = (None, None) if y is None else as_time_event(y)
        if time is not None and time.shape != (len(X),):
            raise UserError(f"y has {time.size} labels for {len(X)} patients", "pass one label per patient")
        return frame_to_dataset(X, self.layout_, time, event, max_patches=getattr(self, "max_patches", None),
                                seed=self.random_state)

    def _check_structure(self, X: SurvivalDataset) -> None:
        """The modalities of ``X`` must be those the network was built for (same kinds, dims, groups)."""
        for m, (kind, dim, sizes) in self.structure_.items():
            mod = X.modalities.get(m)
            if mod is None:
                raise UserError(f"X has no modality {m!r} (the model was fitted with it)",
                                "pass every modality used at fit (mark patients without it as missing)")
            got = (mod.kind, mod.dim, [len(g) for g in mod.groups] if mod.kind == "tabular" else [])
            if got != (kind, dim, list(sizes)):
                raise UserError(f"modality {m!r} has kind/dim/groups {got}, the model was fitted on {(kind, dim, sizes)}",
                                "pass the same features (and token groups) as at fit")

    def fit(self, X: Any, y: Any = None) -> NeuralSurvivalEstimator:
        """Train on ``X`` (DataFrame or SurvivalDataset) with labels ``y`` (sksurv structured array;
        for a dataset the default is its own ``time``/``event``)."""
        self._check_params()
        X = self._dataset(X, y, fit=True)
        time, event = X.time, X.event
        if not event.any():
            raise UserError("all training patients are censored", "a survival model needs some events")
        X = self._select(X)
        self.structure_ = {m: (mod.kind, mod.dim, [len(g) for g in mod.groups] if mod.kind == "tabular" else [])
                           for m, mod in X.modalities.items()}
        self.cuts_ = fit_time_bins(time, event, self.n_bins)
        self.unique_times_ = np.asarray(self.cuts_, float).copy()
        self.time_range_ = (float(time.min()), float(time.max()))
        ybin = discretize(time, self.cuts_)
        self.scaler_ = Standardizer().fit(X)
        dev = torch.device(self.device)
        fork = torch.random.fork_rng(devices=[]) if dev.type == "cpu" else contextlib.nullcontext()
        with fork:
            torch.manual_seed(self.random_state)
            gen = torch.Generator().manual_seed(self.random_state)
            self.net_ = self._build(X).to(dev)
            batch = self.scaler_.to_batch(X, dev)
            yt = torch.as_tensor(ybin, device=dev)
            ct = torch.as_tensor(~event, dtype=torch.float32, device=dev)
            tt = torch.as_tensor(time, dtype=torch.float32, device=dev)
            n = len(X)
            if self.balanced_sampler and self.loss != "cox":
                strata = ybin * 2 + (~event).astype(int)
                counts = np.bincount(strata, minlength=2 * self.n_bins).astype(float)
                weights = torch.as_tensor(1.0 / counts[strata], dtype=torch.float64)
            else:
                weights = None
            self._init_head(ybin, event, weights)
            self.best_epoch_, self.val_curve_ = self.epochs, []
            if self.val_fraction > 0:
                fit_idx, val_idx = _inner_split(event, self.val_fraction, self.random_state)
                self._train(batch, yt, ct, tt, fit_idx, weights, gen, self.epochs, val_idx)
                if self.refit:  # retrain on the whole training set for the selected number of epochs
                    torch.manual_seed(self.random_state)
                    self.net_ = self._build(X).to(dev)
                    self._init_head(ybin, event, weights)
                    self._train(batch, yt, ct, tt, np.arange(n), weights, gen, self.best_epoch_, None)
            else:
                self._train(batch, yt, ct, tt, np.arange(n), weights, gen, self.epochs, None)
        self.net_.eval()
        return self

    def _init_head(self, ybin: np.ndarray, event: np.ndarray, weights: Tensor | None) -> None:
        """Set the hazard-logit biases to the training data's marginal discrete hazards (``head_init``)."""
        layers = getattr(self.net_, "output_layers", None)
        if not self.head_init or self.loss == "cox" or layers is None:
            return
        w = np.ones(len(ybin)) if weights is None else weights.numpy()
        at_risk = np.array([w[ybin >= k].sum() for k in range(self.n_bins)])
        events = np.array([w[(ybin == k) & event].sum() for k in range(self.n_bins)])
        h = np.clip(events / np.maximum(at_risk, 1e-12), 1e-3, 1 - 1e-3)
        logit = torch.as_tensor(np.log(h / (1 - h)), dtype=torch.float32)
        with torch.no_grad():
            for layer, share in layers():
                layer.bias.copy_(share * logit.to(layer.bias.device))

    def _train(self, batch: Batch, yt: Tensor, ct: Tensor, tt: Tensor, idx: np.ndarray, weights: Tensor | None,
               gen: torch.Generator, epochs: int, val_idx: np.ndarray | None) -> None:
        """Adam on patients ``idx`` for ``epochs`` epochs; with ``val_idx``: early stopping on the
        validation C-index (patience ``self.patience``), the best epoch's weights are kept."""
        dev = yt.device
        n = len(idx)
        idx_t = torch.as_tensor(idx, device=dev)
        w = None if weights is None else weights[torch.as_tensor(idx)]
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay, foreach=True)
        bs = n if self.loss == "cox" and self.batch_size >= n else min(self.batch_size, n)
        if val_idx is not None:
            vbatch = _index_batch(batch, torch.as_tensor(val_idx, device=dev))
            vt, ve = tt[val_idx].cpu().numpy(), (1 - ct[val_idx]).cpu().numpy().astype(bool)
            best, best_state, since = -np.inf, None, 0
        self.loss_curve_: list[float] = []
        self.val_loss_curve_: list[float] = []
        swa_from = epochs - max(1, int(np.ceil(self.swa * epochs))) if self.swa > 0 and val_idx is None else epochs
        avg: dict[str, Tensor] = {}
        for epoch in range(epochs):
            self.net_.train()
            order = torch.multinomial(w, n, replacement=True, generator=gen) if w is not None else \
                torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(0, n - 1, bs):
                sel = idx_t[order[s:s + bs].to(dev)]
                if sel.numel() < 2:
                    continue
                out = self._forward(_index_batch(batch, sel))
                loss = self._loss(out, yt[sel], ct[sel], tt[sel])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * sel.numel()
            self.loss_curve_.append(total / n)
            if epoch >= swa_from:  # running mean of the weights of the last epochs
                k = epoch - swa_from
                with torch.no_grad():
                    for name, p in self.net_.state_dict().items():
                        if p.is_floating_point():
                            avg[name] = p.detach().clone() if k == 0 else avg[name].mul_(k / (k + 1)).add_(p, alpha=1 / (k + 1))
            if val_idx is None:
                continue
            self.net_.eval()
            with torch.no_grad():
                vlog = self._forward(vbatch)["logits"]
                c = harrell_c_index(vt, ve, self._risk(vlog.cpu()))
                vloss = float(self._surv_loss(vlog, yt[val_idx], ct[val_idx], tt[val_idx]))
            self.val_curve_.append(c)
            self.val_loss_curve_.append(vloss)
            if self.val_metric == "loss":
                c = -vloss
            if c > best + 1e-4:
                best, since, self.best_epoch_ = c, 0, epoch + 1
                best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
            else:
                since += 1
                if since >= self.patience:
                    break
        if val_idx is not None and best_state is not None:
            self.net_.load_state_dict(best_state)
        if avg:
            self.net_.load_state_dict(avg, strict=False)

    def _risk(self, logits: Tensor) -> np.ndarray:
        if self.loss == "cox":
            return logits.squeeze(-1).numpy().astype(float)
        return risk_from_logits(logits).numpy().astype(float)

    def _check(self) -> None:
        if not hasattr(self, "net_"):
            raise UserError(f"{type(self).__name__} is not fitted", "call fit(X, y) first")

    @torch.no_grad()
    def _logits(self, X: Any) -> Tensor:
        self._check()
        X = self._select(self._dataset(X))
        if hasattr(self, "structure_"):
            self._check_structure(X)
        return self._forward(self.scaler_.to_batch(X, torch.device(self.device)))["logits"].cpu()

    def predict(self, X: Any) -> np.ndarray:
        """Risk scores (higher = earlier event): ``-sum_k S_k`` (or the Cox log-risk)."""
        return self._risk(self._logits(X))

    def predict_survival_function(
        self, X: Any, return_array: bool = False, times: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Survival functions ``S(t | x)`` (scikit-survival's contract plus ``times``).

        Discrete-time models: a step function, ``S(t) = prod_{j: edge_j <= t} (1 - h_j)`` where
        ``edge_j`` is the upper edge of bin j (the last bin never closes). Cox models: the risk is
        converted with a Breslow baseline fitted on the training data (see :class:`DeepSurv`).

        Args:
            X: Patients.
            return_array: Return an (n, len(unique_times_)) array at the training bin edges
                ``unique_times_`` instead of ``sksurv.functions.StepFunction`` objects.
            times: Evaluate at these times instead: an (n, len(times)) array.
        """
        if times is None and not return_array:
            from sksurv.functions import StepFunction

            s = self.predict_survival_function(X, times=self.unique_times_)
            return np.array([StepFunction(self.unique_times_, row) for row in s], dtype=object)
        logits = self._logits(X)
        if self.loss == "cox":
            raise UserError("Cox-head models need a baseline hazard", "use DeepSurv.predict_survival_function")
        _, s = hazards_to_survival(logits)
        s = s.numpy().astype(float)
        ts = np.asarray(self.cuts_ if times is None else times, float)
        n_closed = np.searchsorted(self.cuts_, ts, side="right")  # bins whose upper edge <= t
        full = np.concatenate([np.ones((s.shape[0], 1)), s], axis=1)
        return full[:, n_closed]

    def score(self, X: Any, y: Any = None) -> float:
        """Harrell's C-index of :meth:`predict` on ``X`` (``sksurv.metrics.concordance_index_censored``)."""
        from sksurv.metrics import concordance_index_censored

        if y is None and not isinstance(X, SurvivalDataset):
            raise UserError("score(X, y) on a DataFrame needs y", "pass y = sksurv.util.Surv.from_arrays(event, time)")
        time, event = as_time_event(y, X)
        return float(concordance_index_censored(event, time, self.predict(X))[0])


class ICFNet(NeuralSurvivalEstimator):
    """ICFNet estimator with scikit-survival's contract: ``ICFNet(...).fit(X, y).predict(X)``.

    ``X``: a pandas DataFrame, one row per patient, columns ``"<modality>/<column>"`` (or
    ``"<modality>/<group>/<column>"`` to name token groups; plain names are ``clinical``) and an object
    column ``"pathology"`` of (n_patches, dim) arrays (None = no slide); or a
    :class:`~trustlab.data.survival.SurvivalDataset`. ``y``: ``sksurv.util.Surv.from_arrays(event, time)``.
    Works in ``cross_val_score`` / ``GridSearchCV``; ``score`` is Harrell's C; ``save``/``load`` use
    safetensors + JSON.

    Args:
        modalities: Modalities to use (None = all of the data's).
        d: Hidden size (256 in the paper).
        heads: Attention heads.
        layers: Transformer layers per stream (2 in the paper and the official code).
        fusion_layers: Transformer layers in the unification module (2 in the paper).
        dropout: Dropout (0.25).
        use_rod: Residual orthogonal decomposition.
        fusion: ``"ufm"`` or ``"concat"``.
        coattention: ``"ot"`` or ``"none"``.
        dense_weight: Weight of each per-stream ("dense") head's loss (0.1 in the code).
        orth_weight: Weight of the orthogonality penalty (0.1 in the code).
        ot_reg: Sinkhorn entropic regularisation (0.1 for BRCA in the code).
        ot_reg_m: Sinkhorn marginal relaxation (0.5).
        ot_iters: Maximum Sinkhorn iterations (POT's ``numItermax=1000``, the official call).
        ot_tol: Sinkhorn stopping threshold (POT's ``stopThr=1e-6``; 0 = exactly ``ot_iters``).
        tokens: Tabular tokenisation: ``"groups"`` (one SNN token per column group: gene cluster /
            pathway, clinical group) or ``"modality"`` (one SNN token per tabular modality over all
            its columns; the small-cohort setting, see docs/dev/icfnet.md "Fourth pass").
        token_dropout: Training-time probability of zeroing a whole tabular token.
        max_patches: Cap on patches per bag for DataFrame input (larger bags are subsampled, seeded
            per patient; None = no cap).
        gene_groups: Correlation clusters (tokens) of a DataFrame ``genomics`` modality given without
            group names (1 = one token).
        n_bins, loss, alpha, beta, epochs, batch_size, lr, weight_decay, balanced_sampler,
            random_state, device, val_fraction, patience, refit, val_metric, swa, head_init:
            :class:`NeuralSurvivalEstimator` arguments.

    Example:
        >>> from trustlab.data.survival import make_synthetic_multimodal
        >>> data = make_synthetic_multimodal(n=60, seed=0)
        >>> model = ICFNet(epochs=1, d=8).fit(data)
        >>> model.predict(data).shape
        (60,)
    """

    def __init__(
        self, modalities: Sequence[str] | None = None, d: int = 32, heads: int = 2, layers: int = 2,
        fusion_layers: int = 2, dropout: float = 0.25, use_rod: bool = True, fusion: str = "ufm",
        coattention: str = "ot", dense_weight: float = 0.1, orth_weight: float = 0.1, ot_reg: float = 0.1,
        ot_reg_m: float = 0.5, ot_iters: int = 1000, ot_tol: float = 1e-6, tokens: str = "groups",
        token_dropout: float = 0.0, max_patches: int | None = 256, gene_groups: int = 6,
        n_bins: int = 4, loss: str = "bnll", alpha: float = 0.0, beta: float = 1.0, epochs: int = 30,
        batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-5, balanced_sampler: bool = True,
        random_state: int = 0, device: str = "cpu", val_fraction: float = 0.0, patience: int = 10,
        refit: bool = True, val_metric: str = "loss", swa: float = 0.0, head_init: bool = False,
    ) -> None:
        self.tokens, self.token_dropout = tokens, token_dropout
        self.modalities = modalities  # stored as given (scikit-learn's clone contract)
        self.d, self.heads, self.layers, self.fusion_layers, self.dropout = d, heads, layers, fusion_layers, dropout
        self.use_rod, self.fusion, self.coattention = use_rod, fusion, coattention
        self.dense_weight, self.orth_weight = dense_weight, orth_weight
        self.ot_reg, self.ot_reg_m, self.ot_iters, self.ot_tol = ot_reg, ot_reg_m, ot_iters, ot_tol
        self.max_patches, self.gene_groups = max_patches, gene_groups
        super().__init__(
            n_bins=n_bins, loss=loss, alpha=alpha, beta=beta, epochs=epochs, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, balanced_sampler=balanced_sampler, random_state=random_state, device=device,
            val_fraction=val_fraction, patience=patience, refit=refit, val_metric=val_metric, swa=swa,
            head_init=head_init,
        )

    def _check_params(self) -> None:
        super()._check_params()
        d, heads = self.d, self.heads
        if d < 2 or heads < 1 or d % heads:
            raise ValueError("d must be >= 2 and divisible by heads")
        if self.layers < 0 or self.fusion_layers < 0:
            raise ValueError("layers must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.fusion not in ("ufm", "concat"):
            raise ValueError(f"fusion must be 'ufm' or 'concat', got {self.fusion!r}")
        if self.coattention not in ("ot", "none"):
            raise ValueError(f"coattention must be 'ot' or 'none', got {self.coattention!r}")
        if (self.dense_weight < 0 or self.orth_weight < 0 or self.ot_reg <= 0 or self.ot_reg_m <= 0
                or self.ot_iters < 1 or self.ot_tol < 0):
            raise ValueError("weights must be >= 0 and OT parameters > 0")
        if self.tokens not in ("groups", "modality"):
            raise ValueError(f"tokens must be 'groups' or 'modality', got {self.tokens!r}")
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError("token_dropout must be in [0, 1)")
        if self.max_patches is not None and self.max_patches < 1:
            raise ValueError("max_patches must be >= 1 (or None for no cap)")
        if self.gene_groups < 1:
            raise ValueError("gene_groups must be >= 1")

    def _select(self, X: SurvivalDataset) -> SurvivalDataset:
        X = X if self.modalities is None else X.only(self.modalities)
        if self.tokens == "groups":
            return X
        mods = {m: dataclasses.replace(mod, groups=[list(range(mod.dim))], group_names=[m]) if mod.kind == "tabular"
                else mod for m, mod in X.modalities.items()}
        return dataclasses.replace(X, modalities=mods)

    def _build(self, data: SurvivalDataset) -> nn.Module:
        return self._build_from({m: (mod.kind, mod.dim, [len(g) for g in mod.groups] if mod.kind == "tabular" else [])
                                 for m, mod in data.modalities.items()})

    def _build_from(self, structure: dict[str, Any]) -> nn.Module:
        """The network for modality ``structure`` (name -> (kind, dim, group sizes)), as stored by :meth:`save`."""
        tab = {m: list(sizes) for m, (kind, _, sizes) in structure.items() if kind == "tabular"}
        bags = [m for m, (kind, _, _) in structure.items() if kind == "bag"]
        if len(bags) > 1:
            raise UserError(f"ICFNet takes one bag modality, got {', '.join(bags)}", "merge the patch features")
        k = 1 if self.loss == "cox" else self.n_bins
        return ICFNetModule(
            tab, structure[bags[0]][1] if bags else None, bags[0] if bags else "pathology", k, self.d,
            self.heads, self.layers, self.fusion_layers, self.dropout, self.use_rod, self.fusion, self.coattention,
            self.ot_reg, self.ot_reg_m, self.ot_iters, self.token_dropout, self.ot_tol,
        )

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to folder ``path``: ``model.safetensors`` (network weights and the
        standardisation statistics) + ``model.json`` (parameters, time bins, modality structure and the
        DataFrame layout). No pickle. Reload with :meth:`ICFNet.load`."""
        from trustlab.utils.io import atomic_write_json, save_tensors

        self._check()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().cpu().clone() for k, v in self.net_.state_dict().items()}
        for m, (mu, sd) in self.scaler_.stats_.items():
            tensors[f"scaler.{m}.mean"] = torch.as_tensor(np.array(mu))  # dtype kept: identical predictions
            tensors[f"scaler.{m}.std"] = torch.as_tensor(np.array(sd))
        save_tensors(out / "model.safetensors", tensors)
        params = self.get_params()
        if params.get("modalities") is not None:
            params["modalities"] = list(params["modalities"])
        atomic_write_json(out / "model.json", {
            "format": MODEL_FORMAT, "class": type(self).__name__, "params": params,
            "cuts": [float(c) for c in self.cuts_], "time_range": list(self.time_range_),
            "structure": {m: [k, int(d), [int(x) for x in sizes]] for m, (k, d, sizes) in self.structure_.items()},
            "scaler": list(self.scaler_.stats_), "layout": self.layout_, "best_epoch": int(self.best_epoch_),
        })
        return out

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> ICFNet:
        """A model written by :meth:`save` (predictions identical to the saved model's)."""
        from trustlab.utils.io import load_tensors, read_json

        root = Path(path)
        if not (root / "model.json").is_file():
            raise UserError(f"{str(root)!r} holds no model.json", "pass the folder written by ICFNet.save / trustlab survival fit")
        meta = read_json(root / "model.json")
        if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT or meta.get("class") != cls.__name__:
            raise UserError(f"{str(root / 'model.json')!r} is not an {cls.__name__} model ({MODEL_FORMAT})",
                            "pass the folder written by ICFNet.save / trustlab survival fit")
        params = dict(meta["params"])
        if device is not None:
            params["device"] = device
        model = cls(**params)
        tensors, _ = load_tensors(root / "model.safetensors")
        model.cuts_ = np.asarray(meta["cuts"], float)
        model.unique_times_ = model.cuts_.copy()
        model.time_range_ = tuple(meta["time_range"])
        model.structure_ = {m: (k, d, list(sizes)) for m, (k, d, sizes) in meta["structure"].items()}
        model.layout_ = meta["layout"]
        model.best_epoch_ = meta["best_epoch"]
        model.scaler_ = Standardizer()
        model.scaler_.stats_ = {m: (tensors[f"scaler.{m}.mean"].numpy(), tensors[f"scaler.{m}.std"].numpy())
                                for m in meta["scaler"]}
        model.net_ = model._build_from(model.structure_)
        state = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
        try:
            model.net_.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise UserError(f"weights in {str(root)!r} do not fit the stored architecture ({str(exc)[:120]})",
                            "re-save the model with this version of trustlab") from exc
        model.net_.to(torch.device(model.device)).eval()
        return model

    def _loss(self, out: dict[str, Any], y: Tensor, c: Tensor, t: Tensor) -> Tensor:
        loss = self._surv_loss(out["logits"], y, c, t)
        if self.dense_weight > 0 and out["dense"]:
            dense = torch.cat(list(out["dense"].values()), dim=0)  # all per-stream heads in one loss call
            s = len(out["dense"])
            loss = loss + self.dense_weight * s * self._surv_loss(dense, y.repeat(s), c.repeat(s), t.repeat(s))
        if self.orth_weight > 0:
            loss = loss + self.orth_weight * out["orth"]
        return loss
